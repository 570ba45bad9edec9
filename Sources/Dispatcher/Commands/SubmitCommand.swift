import Foundation
import Postgres
import QueueModel

/// `dispatcher submit`: one job from flags or a request file, or many from JSONL.
enum SubmitCommand {
    static let usage = """
        usage: dispatcher submit --prompt TEXT [--system TEXT] [options]
               dispatcher submit --request FILE.json [options]      (one OpenAI chat request; - for stdin)
               dispatcher submit --file JOBS.jsonl [options]        (one job per line; - for stdin)

        Each JSONL line is a request ({"messages": [...]}) or an envelope
        ({"request": {...}, "priority": "background", "affinity_key": "conv-1", ...}); the options
        below are the defaults for what a line leaves out. One bad line never loses the others:
        the good ones are submitted and the bad ones listed with their line numbers.

          --priority interactive|background   (default interactive)
          --class NAME            routing task class (default: classify the request)
          --affinity KEY          jobs with the same key go to the same model
          --deadline TIME         ISO 8601 time, or a duration from now (10m, 2h)
          --run-at TIME           not before this time (ISO 8601 or a duration from now)
          --max-attempts N        (default 3)
          --idempotency-key KEY   a repeat returns the first job instead of a new one (one job:
                                  with --file, each line gives its own idempotency_key)
          --tenant NAME           the job's tenant; a role mapped to several (or *) then also
                                  reads as that tenant (switchyard.tenant), for --wait
          --metadata JSON         an object returned with the result
          --wait                  wait for the result and print it (single job)
          --timeout DURATION      with --wait (default 5m)
          --json                  machine-readable output

        Exit status: 0 submitted (and, with --wait, succeeded); 2 invalid input (for --file: at
        least one line rejected); 3 the job failed, was cancelled or expired; 4 --wait timed out.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher submit",
            options: [
                "prompt", "system", "request", "file", "priority", "class", "affinity", "deadline", "run-at",
                "max-attempts", "idempotency-key", "tenant", "metadata", "timeout", "database-url",
            ],
            flags: ["wait", "json"]
        )
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        if let extra = arguments.positionals.first {
            throw QueueError(
                .invalidInput, "unexpected argument \"\(extra)\"",
                hint: "Pass the prompt with --prompt \"…\" (quoted), or a file with --request or --file."
            )
        }
        let defaults = try defaultSubmission(arguments)
        let sources = ["prompt", "request", "file"].filter { arguments.value($0) != nil }
        guard sources.count <= 1 else {
            throw QueueError(.invalidInput, "give only one of --prompt, --request and --file")
        }
        if arguments.value("timeout") != nil && !arguments.flag("wait") {
            throw QueueError(.invalidInput, "--timeout applies to --wait", hint: "add --wait, or leave --timeout out")
        }
        // Read before the job goes in: a bad --timeout refused after the insert left a job behind.
        let timeout = try arguments.duration("timeout", default: .seconds(300))
        if arguments.flag("wait") && sources.first != "prompt" && sources.first != "request" {
            throw QueueError(
                .invalidInput, "--wait waits for one job, from --prompt or --request",
                hint: "for many jobs, submit with --json and pass the ids to dispatcher wait")
        }
        // One key for many lines would make every line after the first a repeat of the first.
        let bulk = sources.first == "file" || (sources.isEmpty && isatty(0) == 0)
        if bulk && arguments.value("idempotency-key") != nil {
            throw QueueError(
                .invalidInput, "--idempotency-key names one job, and --file submits many; nothing was submitted",
                hint: "give each line its own key: {\"request\": {…}, \"idempotency_key\": \"…\"}")
        }
        // The session reads as the tenant only to wait: a submit alone names it as a parameter, and
        // so still goes through a PgBouncer that refuses session settings (a review's did).
        let pool = try Database.pool(
            arguments, applicationName: "switchyard-submit", maxConnections: 2, asTenant: !bulk && arguments.flag("wait"))
        defer { Task { await pool.close() } }
        let store = QueueStore(pool: pool)

        if let taskClass = arguments.value("class") { await warnOfUnservedClass(taskClass, pool: pool) }
        if let file = arguments.value("file") ?? (sources.isEmpty && isatty(0) == 0 ? "-" : nil) {
            return try await BulkSubmission(store: store, defaults: defaults, json: arguments.flag("json"))
                .run(reading: file)
        }
        var submission = defaults
        if let prompt = arguments.value("prompt") {
            submission.request = Submission.prompt(prompt, system: arguments.value("system"))
        } else if let path = arguments.value("request") {
            submission.request = try JSONValue(parsing: try readInput(path))
            try InputScreen.checkStrings(submission.request, path: "request")
            if let system = arguments.value("system"), case .array(var messages)? = submission.request["messages"] {
                messages.insert(["role": "system", "content": .string(system)], at: 0)
                submission.request["messages"] = .array(messages)
            }
        } else {
            throw QueueError(
                .invalidInput, "nothing to submit",
                hint: "Give --prompt \"…\", --request FILE.json, or --file JOBS.jsonl (see dispatcher submit --help)."
            )
        }
        // With a key, whether it named a job from before (a walkthrough could not tell a repeat's
        // id from a new job's): asked of the job's creation against the database's clock.
        let before = submission.idempotencyKey == nil ? nil : try? await store.databaseNow()
        let id = try await store.submit(submission)
        var earlier: Bool?
        if let before, let found = try? await store.createdBefore(before, among: [id], tenant: submission.tenant),
            found.seen.contains(id)
        {
            earlier = found.earlier.contains(id)
        }
        guard arguments.flag("wait") else {
            if arguments.flag("json") {
                var object: [String: JSONValue] = ["id": .number(Double(id))]
                if let earlier { object["new"] = .bool(!earlier) }
                print(JSONValue.object(object).jsonText)
            } else {
                print(id)
                if earlier == true { printError("(job \(id) is from before: its idempotency key named it)") }
            }
            return ExitCode.success
        }
        if !arguments.flag("json") {
            printError(
                earlier == true
                    ? "job \(id) is from before (its idempotency key named it); waiting…"
                    : "submitted job \(id); waiting…")
        }
        let hint = JobCommands.notFoundHint(tenant: arguments.value("tenant"))
        return try await JobWaiter(store: store, notFoundHint: hint).wait(
            for: [id], timeout: timeout, json: arguments.flag("json")
        )
    }

    /// The submission options given as flags (the defaults for JSONL lines).
    static func defaultSubmission(_ arguments: Arguments) throws -> Submission {
        var submission = Submission(request: [:])
        if let priority = arguments.value("priority") {
            guard let parsed = Priority(rawValue: priority) else {
                throw QueueError(.invalidInput, "--priority must be interactive or background (got \"\(priority)\")")
            }
            submission.priority = parsed
        }
        submission.taskClass = arguments.value("class")
        submission.affinityKey = arguments.value("affinity")
        submission.idempotencyKey = arguments.value("idempotency-key")
        submission.tenant = arguments.value("tenant")
        submission.deadline = try time(arguments, "deadline")
        submission.runAt = try time(arguments, "run-at")
        if let deadline = submission.deadline, let runAt = submission.runAt, deadline <= runAt {
            throw QueueError(
                .invalidInput,
                "--deadline (\(deadline.postgresText)) must come after --run-at (\(runAt.postgresText)): "
                    + "the job could never start in time",
                hint: "a duration counts from now for both: e.g. --run-at 1h --deadline 3h")
        }
        if arguments.value("max-attempts") != nil {
            submission.maxAttempts = try arguments.integer("max-attempts", default: 3, range: 1...100)
        }
        if let metadata = arguments.value("metadata") {
            let value: JSONValue
            do {
                value = try JSONValue(parsing: metadata)
            } catch let error as QueueError {
                throw QueueError(.invalidInput, "--metadata: \(error.message)",
                                 hint: "give a JSON object, like '{\"team\":\"search\"}'")
            }
            guard case .object = value else {
                throw QueueError(.invalidInput, "--metadata must be a JSON object, like '{\"team\":\"search\"}'")
            }
            try InputScreen.checkStrings(value, path: "--metadata")
            submission.metadata = value
        }
        return submission
    }

    /// Warns when no rule serves `--class` by name (a typo went to the default rule unsaid, in a
    /// walkthrough): the job is still submitted, as a class is the caller's to name. Nothing is
    /// said when the catalog cannot be read (a role without it).
    static func warnOfUnservedClass(_ taskClass: String, pool: PostgresPool) async {
        guard !TaskClass.builtIn.contains(TaskClass(taskClass)),
            let catalog = try? await CatalogStore(pool: pool).load(), !catalog.rules.isEmpty
        else { return }
        let match = RuleMatcher(catalog: catalog).match(TaskClass(taskClass))
        guard match == nil || match?.byDefault == true else { return }
        printError(
            "warning: no rule serves class '\(taskClass)'"
                + (match == nil
                    ? ", and there is no default rule: no worker can route it" : ": the default rule routes it")
                + " (dispatcher models list shows the rules and their classes)")
    }

    /// An ISO 8601 time, or a duration from now.
    static func time(_ arguments: Arguments, _ name: String) throws -> Date? {
        guard let text = arguments.value(name) else { return nil }
        if let date = ISO8601Parsing.date(text) { return date }
        if let duration = Arguments.parseDuration(text.hasPrefix("+") ? String(text.dropFirst()) : text) {
            return Date().addingTimeInterval(duration.seconds)
        }
        throw QueueError(
            .invalidInput, "--\(name) must be an ISO 8601 time (2026-11-26T21:00:00Z) or a duration from now (10m), "
                + "at most \(Arguments.longestDurationDays)d (got \"\(text)\")"
        )
    }

    /// The contents of a file, or of stdin for "-", as text.
    /// - Throws: `QueueError.invalidInput` when it cannot be read, or is not UTF-8, holds a NUL
    ///   byte or nests too deeply (`InputScreen`); never a silently repaired request.
    static func readInput(_ path: String) throws -> String {
        let data = try InputFile.read(path)
        do {
            return try InputScreen.text([UInt8](data))
        } catch var error as QueueError {
            error.message = "\(path == "-" ? "stdin" : path) " + error.message
            throw error
        }
    }
}
