import Foundation
import Postgres
import QueueModel

/// `dispatcher wait | result | cancel | retry | prune`.
enum JobCommands {
    /// libpq's words on one line: it breaks lines inside its messages, which split a sentence.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .joined(separator: " ")
    }

    static let waitUsage = """
        usage: dispatcher wait ID… | - [--timeout DURATION] [--tenant NAME] [--json]

        Waits until every job finishes (LISTEN/NOTIFY, no polling loop) and prints each outcome.
        Exit status: 0 all succeeded; 3 one failed, was cancelled or expired; 4 timed out
        (default --timeout 5m); 6 an id is unknown.
        \(tenantNote)
        """

    static let resultUsage = """
        usage: dispatcher result ID [--content] [--json] [--tenant NAME]

        Prints the job's result row as JSON (status, model, response, error, attempts, tokens,
        cost, timings), or with --content only the answer's text. A job not finished yet is said on
        stderr, or with --json printed as wait --json prints it (its status, run_at, waiting_reason).
        Exit status: 0 succeeded; 3 failed, cancelled or expired; 5 not finished yet; 6 unknown.
        \(tenantNote)
        """

    static let cancelUsage = """
        usage: dispatcher cancel ID… | - [--tenant NAME]

        A queued job ends as cancelled at once; a running one at its worker's next heartbeat.
        With -, the ids are read from stdin (thousands in a few seconds): e.g.
          psql -Atc "SELECT id FROM switchyard.jobs WHERE tenant = 'acme'" | dispatcher cancel -
        Exit status: 0 cancelled or cancelling; 3 one had already finished; 6 one is unknown;
        2 an id that is not one (or none on stdin); 1 one could not be cancelled (its error is
        printed).
        \(tenantNote)
        """

    static let retryUsage = """
        usage: dispatcher retry ID… | - [--json] [--tenant NAME]

        Submits a failed, cancelled or expired job again, as a new job linked to the old one
        (retry_of), and prints the new id (--json: {"id": NEW, "retry_of": ID}). A job is retried
        once: retrying it again prints the same new id. Several ids, or - to read them from stdin,
        print a line each ("ID  retried as NEW"), e.g. every failed job of the last hour:
          psql -Atc "SELECT job_id FROM switchyard.results WHERE status = 'failed'
                     AND finished_at > now() - interval '1 hour'" | dispatcher retry -
        Exit status: 0 submitted (now or before); 2 a job succeeded or has not finished, or an id
        is not one; 6 one is unknown; 1 other failures.
        \(tenantNote)
        """

    /// How a role acting for several tenants names one (a gateway mapped to `*` sees none without).
    static let tenantNote = """
        --tenant NAME acts as that tenant (sets switchyard.tenant): a role mapped to several
        tenants, or to * (a gateway), sees only that tenant's jobs, and a * role none without it.
        """

    /// What a "not found" may mean, for a job the caller is sure of: with `--tenant`, that the job
    /// is none of that tenant's (a walkthrough was told to name the tenant it had named).
    static func notFoundHint(tenant: String?) -> String {
        let retention = "results older than the retention (dispatcher prune) are gone"
        if let tenant {
            // A name no submission takes (white space or an invisible character at an edge) said so:
            // a walkthrough's "tenant acme  that" showed its trailing space as a double space alone.
            let trimmed = TenantsCommand.trimmed(tenant)
            if tenant != trimmed {
                let without = StatusFormat.printable(TenantLimits.shellWord(trimmed))
                return "tenant '\(TenantsCommand.codePoints(tenant))' begins or ends with white space, which no "
                    + "submission takes; name it without: --tenant \(without)"
            }
            return "check the id and the tenant: it is not a job of tenant \(tenant) that this role may see; \(retention)"
        }
        return "check the id; \(retention), and another tenant's jobs are not visible (a role mapped to * names the "
            + "tenant with --tenant NAME)"
    }

    static let pruneUsage = """
        usage: dispatcher prune --older-than DURATION

        Drops whole daily results partitions older than DURATION (e.g. 30d), and trims old
        idempotency keys, the old rows of results_default (results written before their day's
        partition existed), tenants' spending of older days (this month's stays: budgets count
        it), alerts cleared before then, and workers gone for a day. No DELETE in the daily
        partitions, so no bloat. One step at a time, each committed: a partition's drop locks
        the results table for milliseconds, not for the whole run, and waits at most 5 s behind
        a long reader (then tries again).
        """

    private static func open(_ arguments: Arguments) throws -> QueueStore {
        QueueStore(
            pool: try Database.pool(arguments, applicationName: "switchyard-dispatcher", maxConnections: 2)
        )
    }

    /// The job ids given, in order; `-` stands for those on stdin (one or more a line, as
    /// `psql -At` or `dispatcher submit --json | jq` print them).
    private static func ids(_ arguments: Arguments, usage: String) throws -> [Int64] {
        guard !arguments.positionals.isEmpty else { throw QueueError(.invalidInput, "no job id given", hint: usage) }
        var words: [String] = []
        for word in arguments.positionals {
            guard word == "-" else { words.append(word); continue }
            let read = try InputFile.read("-")
            let given = String(decoding: read, as: UTF8.self).split(whereSeparator: { $0.isWhitespace }).map(String.init)
            guard !given.isEmpty else {
                throw QueueError(.invalidInput, "no job id on stdin", hint: "Pipe the ids in, one or more a line.")
            }
            words += given
        }
        return try words.map { text in
            guard let id = Int64(text), id > 0 else {
                throw QueueError(.invalidInput, "\"\(text)\" is not a job id (job ids are positive whole numbers)")
            }
            return id
        }
    }

    static func wait(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher wait", options: ["timeout", "tenant", "database-url"], flags: ["json"])
        if arguments.flag("help") { print(waitUsage); return ExitCode.success }
        let store = try open(arguments)
        defer { Task { await store.pool.close() } }
        return try await JobWaiter(store: store, notFoundHint: notFoundHint(tenant: arguments.value("tenant"))).wait(
            for: try ids(arguments, usage: waitUsage), timeout: try arguments.duration("timeout", default: .seconds(300)),
            json: arguments.flag("json")
        )
    }

    static func result(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher result", options: ["tenant", "database-url"], flags: ["content", "json"])
        if arguments.flag("help") { print(resultUsage); return ExitCode.success }
        let jobs = try ids(arguments, usage: resultUsage)
        guard jobs.count == 1 else { throw QueueError(.invalidInput, "give one job id", hint: resultUsage) }
        let store = try open(arguments)
        defer { Task { await store.pool.close() } }
        guard let result = try await store.result(of: jobs[0]) else {
            guard let status = try await store.status(of: jobs[0]) else {
                printError("error: job \(jobs[0]) not found\nhint: \(notFoundHint(tenant: arguments.value("tenant")))")
                return ExitCode.notFound
            }
            let waiting = (try? await store.waiting(of: [jobs[0]]))?[jobs[0]] ?? nil
            // Accepted and ignored before (a routing walkthrough's): as wait --json prints it.
            if arguments.flag("json") {
                print(JobWaiter.unfinishedJSON(jobs[0], status: status, waiting: waiting).prettyText)
                return ExitCode.notFinished
            }
            printError(
                StatusFormat.printable(
                    "job \(jobs[0]) has not finished: it is \(JobWaiter.describe(status, waiting)) "
                        + "(wait for it: dispatcher wait \(jobs[0]))"))
            return ExitCode.notFinished
        }
        if arguments.flag("content") {
            guard result["status"]?.stringValue == "succeeded" else {
                // No answer to print: say why, on stderr (an empty line alone said nothing).
                let status = result["status"]?.stringValue ?? "unknown"
                let error = [result["error"]?["code"]?.stringValue, result["error"]?["message"]?.stringValue]
                    .compactMap { $0 }.joined(separator: ": ")
                // A request every model refuses fails the same way again: retry was the wrong advice.
                let code = result["error"]?["code"]?.stringValue ?? ""
                let advice =
                    ["bad_request", "unreadable_request", "context_length_exceeded", "unsupported_request"].contains(code)
                    ? "the request itself was refused, so submit a corrected one (a retry would fail the same way)"
                    : code == "unroutable"
                        ? "no rule or model could take it: change the catalog or the request first (a retry before "
                            + "that fails the same way)"
                        : "dispatcher retry \(jobs[0]) runs it again"
                // Retried already: where its answer is (the advice to retry it named the retry's id
                // only once it was run).
                let retried = try? await store.retryMade(of: jobs[0], tenant: result["tenant"]?.stringValue)
                let next = retried.map { retry in
                    "it was retried as job \(retry.id)" + (retry.status.map { " (\($0))" } ?? "")
                        + ": dispatcher result \(retry.id)"
                }
                printError(
                    "job \(jobs[0]) \(status)" + (error.isEmpty ? "" : " (\(error))") + "; it has no answer"
                        + "\nhint: dispatcher result \(jobs[0]) shows its attempts; " + (next ?? advice))
                return ExitCode.jobNotSucceeded
            }
            print(JobWaiter.answerText(result["response"]))
        } else {
            print(result.prettyText)
        }
        return result["status"]?.stringValue == "succeeded" ? ExitCode.success : ExitCode.jobNotSucceeded
    }

    static func cancel(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(words, command: "dispatcher cancel", options: ["tenant", "database-url"])
        if arguments.flag("help") { print(cancelUsage); return ExitCode.success }
        var seen = Set<Int64>()
        let jobs = try ids(arguments, usage: cancelUsage).filter { seen.insert($0).inserted }
        let store = try open(arguments)
        defer { Task { await store.pool.close() } }
        var status = ExitCode.success
        var failed = false
        var answered = false
        var counts: [String: Int] = [:]
        // A thousand a round trip, each its own transaction (a batch in one would lock its jobs
        // in its own order, against workers writing back theirs).
        for start in stride(from: 0, to: jobs.count, by: 1000) {
            let chunk = Array(jobs[start..<min(start + 1000, jobs.count)])
            let outcomes = try await store.cancel(chunk)
            for (id, outcome) in zip(chunk, outcomes) {
                switch outcome {
                case .success("cancelled"), .success("cancelling"):
                    print("\(id)  \(try outcome.get())")
                    counts[try outcome.get(), default: 0] += 1
                case .success("not_found"):
                    print("\(id)  not found")
                    counts["not found", default: 0] += 1
                    status = max(status, ExitCode.notFound)
                case .success(let final):
                    print("\(id)  \(final.hasPrefix("already") ? final : "already \(final)")")
                    counts["already ended", default: 0] += 1
                    status = max(status, ExitCode.jobNotSucceeded)
                case .failure(let error):
                    // Refused for every job (the role may not cancel): the error alone, as for one.
                    if !answered, outcomes.allSatisfy({ if case .failure = $0 { true } else { false } }) {
                        throw error
                    }
                    printError("\(id)  not cancelled: \(error)")
                    counts["not cancelled", default: 0] += 1
                    failed = true
                }
                answered = true
            }
        }
        if status == ExitCode.notFound { printError("hint: \(notFoundHint(tenant: arguments.value("tenant")))") }
        // The totals of a long list (an on-call's 8,006 ids scrolled past without them), on stderr.
        if jobs.count > 1 {
            let order = ["cancelled", "cancelling", "already ended", "not found", "not cancelled"]
            printError("total: " + order.compactMap { key in counts[key].map { "\($0) \(key)" } }.joined(separator: ", "))
        }
        // A job that could not be cancelled outweighs one that had finished or was unknown.
        return failed ? ExitCode.failure : status
    }

    static func retry(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher retry", options: ["tenant", "database-url"], flags: ["json"])
        if arguments.flag("help") { print(retryUsage); return ExitCode.success }
        var seen = Set<Int64>()
        let jobs = try ids(arguments, usage: retryUsage).filter { seen.insert($0).inserted }
        let store = try open(arguments)
        defer { Task { await store.pool.close() } }
        // Many (ids, or - for stdin, as cancel takes them): a line each, and on to the next.
        if jobs.count > 1 || arguments.positionals == ["-"] {
            return try await retryMany(jobs, store: store, arguments: arguments)
        }
        do {
            let id = try await store.retry(jobs[0])
            print(arguments.flag("json") ? JSONValue.object(["id": .number(Double(id)), "retry_of": .number(Double(jobs[0]))]).jsonText : String(id))
            return ExitCode.success
        } catch let error as QueueError where error.code == .notFound {
            // The --tenant advice too: a gateway without it finds none of its jobs.
            printError("error: \(error.message)\nhint: \(notFoundHint(tenant: arguments.value("tenant")))")
            return ExitCode.notFound
        }
    }

    /// `retry ID ID…` and `retry -`: each job retried in its own transaction, a thousand a round
    /// trip; a line per job (`OLD  retried as NEW`, or with --json `{"id": NEW, "retry_of": OLD}`),
    /// those not retried on stderr with why.
    private static func retryMany(_ jobs: [Int64], store: QueueStore, arguments: Arguments) async throws -> Int32 {
        let json = arguments.flag("json")
        var (unknown, refused, failed, answered) = (false, false, false, false)
        for start in stride(from: 0, to: jobs.count, by: 1000) {
            let chunk = Array(jobs[start..<min(start + 1000, jobs.count)])
            let outcomes = try await store.retry(chunk)
            for (id, outcome) in zip(chunk, outcomes) {
                defer { answered = true }
                switch outcome {
                case .success(let new):
                    print(
                        json
                            ? JSONValue.object(["id": .number(Double(new)), "retry_of": .number(Double(id))]).jsonText
                            : "\(id)  retried as \(new)")
                case .failure(let error):
                    // Refused for every job (the role may not retry): the error alone, as for one.
                    if !answered, outcomes.allSatisfy({ if case .failure = $0 { true } else { false } }),
                        (error as? QueueError)?.code != .notFound, (error as? QueueError)?.code != .invalidInput
                    {
                        throw error
                    }
                    let code = (error as? QueueError)?.code
                    if code == .notFound { unknown = true } else if code == .invalidInput { refused = true } else { failed = true }
                    printError("\(id)  not retried: \((error as? QueueError)?.message ?? "\(error)")")
                }
            }
        }
        if unknown { printError("hint: \(notFoundHint(tenant: arguments.value("tenant")))") }
        return failed ? ExitCode.failure : unknown ? ExitCode.notFound : refused ? ExitCode.invalidInput : ExitCode.success
    }

    static func prune(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(words, command: "dispatcher prune", options: ["older-than", "database-url"])
        if arguments.flag("help") { print(pruneUsage); return ExitCode.success }
        guard arguments.value("older-than") != nil else {
            throw QueueError(.invalidInput, "--older-than is required", hint: "e.g. dispatcher prune --older-than 30d")
        }
        let age = try arguments.duration("older-than", default: .seconds(30 * 86_400))
        let store = try open(arguments)
        defer { Task { await store.pool.close() } }
        // An operator's command: an older schema's prune is the older rules' (run migrate first).
        try await Migrator().requireCurrent(store.pool)
        var defaultRows = 0
        var keys = 0
        var spendingDays = 0
        var clearedAlerts = 0
        var partitions = 0
        var waits = 0
        while true {
            let step: (item: String, removed: Int)?
            do {
                step = try await store.pruneStep(olderThan: age, lockTimeout: .seconds(5))
            } catch let error as PostgresError where error.sqlState == .lockNotAvailable {
                // A long reader of results (a 30-day report) holds the drop back; waiting on, the drop
                // would hold every writer behind it.
                guard waits < 12 else {
                    throw QueueError(
                        .database,
                        "a reader of switchyard.results held the next partition's drop back for two minutes; "
                            + "the steps before it are done",
                        hint: "Find it in pg_stat_activity (a long report or an open transaction), let it finish or "
                            + "cancel it, and run prune again.")
                }
                waits += 1
                printError("waiting: a reader of switchyard.results holds the next drop back (\(waits) of 12 tries)")
                try await Task.sleep(for: .seconds(5))
                continue
            }
            guard let step else { break }
            switch step.item {
            case "rows in results_default": defaultRows += step.removed
            case "idempotency keys": keys += step.removed
            case "tenant spending days": spendingDays += step.removed
            case "cleared alerts": clearedAlerts += step.removed
            default:
                if step.item.hasPrefix("partition ") { partitions += 1 }
                print("\(step.item): \(step.removed) removed")
            }
        }
        // Said when none went too: the main thing prune does was never reported as nothing.
        print("daily results partitions dropped: \(partitions)")
        print("rows in results_default: \(defaultRows) removed")
        print("idempotency keys: \(keys) removed")
        print("tenant spending days: \(spendingDays) removed")
        print("cleared alerts: \(clearedAlerts) removed")
        return ExitCode.success
    }
}
