import Foundation
import Postgres
import QueueModel
import Testing

@testable import Dispatcher

/// Generated hostile submissions through the command line — JSONL with `--file`, one request with
/// `--request` — as a real submitter login role: every one refused with a clear error (and its
/// line number), nothing of it stored, the valid ones accepted.
@Suite("Security: hostile input through the CLI")
struct HostileCLITests {
    static let hello = #"{"messages":[{"role":"user","content":"hi"}]}"#

    /// Envelope mistakes only a JSONL line can make, and what each must be told.
    static let envelopeMistakes: [(line: String, expected: String)] = [
        (#"{"request": \#(hello), "priorty": "background"}"#, #"unknown field "priorty""#),
        (#"{"request": \#(hello), "priority": 5}"#, "priority must be a string, got a number"),
        (#"{"request": \#(hello), "max_attempts": "3"}"#, "max_attempts must be a whole number, got a string"),
        (#"{"request": \#(hello), "run_at": "tomorrow"}"#, "run_at must be an ISO 8601 time"),
        (#"{"request": \#(hello), "deadline": "2001-01-01T00:00:00Z"}"#, "must be in the future, before the year 9000"),
        (#"{"request": \#(hello), "tenant": "globex"}"#, "may not submit for tenant 'globex'"),
        (#"{"request": \#(hello), "tenant": "acme\u0000"}"#, "tenant contains a NUL character"),
        (#"{"request": \#(hello), "metadata": [1]}"#, "metadata must be a JSON object"),
        (#"{"request": "hello"}"#, "request must be a JSON object, got string"),
        (
            #"{"request": \#(hello), "task_class": "\#(String(repeating: "x", count: 150))"}"#,
            "task_class is 150 characters, over the limit of 100"
        ),
    ]

    /// A submitter login role for tenant acme, and the database as that role.
    static func withSubmitter(
        _ body: (_ url: String, _ admin: PostgresPool) async throws -> Void
    ) async throws {
        try await TestDatabase.withMigrated { configuration in
            let admin = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await admin.close() } }
            try await admin.query(HostileInputs.settingsSQL)
            try await SecurityFixtures.withRoles(admin, ["cli": "switchyard_submitter"], login: true) { roles in
                try await SecurityFixtures.map(admin, [(roles["cli"]!, "acme")])
                try await body(SecurityFixtures.connectionString(configuration, as: roles["cli"]!), admin)
            }
        }
    }

    static func temporaryFile(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appending(path: "switchyard-\(UUID().uuidString)-\(name)")
    }

    @Test("one JSONL file of 1,300 hostile lines and 150 valid ones: each hostile line reported with its number")
    func jsonl() async throws {
        try await Self.withSubmitter { url, admin in
            var generator = HostileInputs(seed: 4, client: true)
            var lines: [(bytes: [UInt8], input: GeneratedInput)] = []
            for index in 0..<1_200 {
                let input = generator.hostile(index)
                lines.append((input.line, input))
                if index % 8 == 0 {
                    let valid = generator.valid()
                    lines.append((valid.line, valid))
                }
                if index % 12 == 0 {
                    let mistake = Self.envelopeMistakes[(index / 12) % Self.envelopeMistakes.count]
                    lines.append(
                        (
                            Array(mistake.line.utf8),
                            GeneratedInput(kind: "envelope", request: [], expected: [mistake.expected])
                        ))
                }
            }
            let hostile = lines.filter { !$0.input.isValid }
            let valid = lines.filter(\.input.isValid)
            #expect(hostile.count >= 1_300)
            let file = Self.temporaryFile("hostile.jsonl")
            defer { try? FileManager.default.removeItem(at: file) }
            try Data(lines.map(\.bytes).joined(separator: [0x0A])).write(to: file)

            let binary = WorkerProcess.binary("dispatcher")
            let (status, output) = try await BlockingWork.run {
                try ChildProcess.run(binary, ["submit", "--file", file.path, "--json", "--database-url", url])
            }
            #expect(status == 2, "\(output.suffix(2000))")
            let lastObject = output.split(separator: "\n").last { $0.hasPrefix("{") }
            let summaryLine = try #require(lastObject)
            let summary = try JSONValue(parsing: String(summaryLine))
            #expect(summary["submitted"]?.intValue == valid.count)
            #expect(summary["rejected"]?.intValue == hostile.count)
            var reported: [Int: String] = [:]
            for rejection in summary["rejections"]?.arrayValue ?? [] {
                let line = try #require(rejection["line"]?.intValue)
                #expect(reported[line] == nil, "line \(line) reported twice")
                reported[line] = rejection["error"]?.stringValue ?? ""
            }
            for (number, entry) in zip(1..., lines) {
                if entry.input.isValid {
                    #expect(reported[number] == nil, "valid line \(number) was refused: \(reported[number] ?? "")")
                } else if let error = reported[number] {
                    #expect(
                        entry.input.matches(error),
                        "line \(number) \(entry.input): expected \(entry.input.expected), got \(error)")
                } else {
                    Issue.record("hostile line \(number) was not reported: \(entry.input)")
                }
            }
            // The valid lines are the only jobs, stored exactly as sent, in order.
            let ids = (summary["ids"]?.arrayValue ?? []).compactMap { $0.intValue.map(Int64.init) }
            let exact = try await admin.query(
                """
                SELECT count(*) FROM unnest($1::bigint[], $2::text[]) AS v(id, request)
                JOIN switchyard.jobs j ON j.id = v.id WHERE j.request = v.request::jsonb AND j.tenant = 'acme'
                """,
                [ids, valid.map { String(decoding: $0.input.request, as: UTF8.self) }]
            ).scalar(Int.self)
            #expect(exact == valid.count)
            #expect(try await admin.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == valid.count)
        }
    }

    @Test("1,000 hostile --request files through `dispatcher submit` in process: each refused, nothing stored")
    func requestInProcess() async throws {
        try await Self.withSubmitter { url, admin in
            var generator = HostileInputs(seed: 5, client: true)
            let file = Self.temporaryFile("request.json")
            defer { try? FileManager.default.removeItem(at: file) }
            for index in 0..<1_000 {
                let input = generator.hostile(index)
                try Data(input.request).write(to: file)
                var words = ["--request", file.path, "--database-url", url]
                if input.hasOptions {
                    words += [
                        "--priority=\(input.priority)", "--max-attempts=\(input.maxAttempts)",
                        "--metadata=\(String(decoding: input.metadata, as: UTF8.self))",
                    ]
                }
                do {
                    _ = try await SubmitCommand.run(words)
                    Issue.record("accepted: \(input)")
                } catch let error as QueueError {
                    #expect(error.isSubmissionRefusal, "\(input): \(error)")
                    #expect(input.matches(error.message), "\(input): expected \(input.expected), got \(error.message)")
                }
            }
            for table in ["jobs", "results", "idempotency_keys"] {
                #expect(try await admin.query("SELECT count(*) FROM switchyard.\(table)").scalar(Int.self) == 0)
            }
        }
    }

    @Test("`dispatcher submit --request` as a process: exit 2 and a clear error for each kind of hostile input")
    func requestProcess() async throws {
        try await Self.withSubmitter { url, admin in
            var generator = HostileInputs(seed: 6, client: true)
            let binary = WorkerProcess.binary("dispatcher")
            for index in 0..<(2 * HostileInputs.kinds.count) {
                let input = generator.hostile(index)
                let file = Self.temporaryFile("request-\(index).json")
                defer { try? FileManager.default.removeItem(at: file) }
                try Data(input.request).write(to: file)
                var words = ["submit", "--request", file.path, "--database-url", url]
                if input.hasOptions {
                    words += [
                        "--priority=\(input.priority)", "--max-attempts=\(input.maxAttempts)",
                        "--metadata=\(String(decoding: input.metadata, as: UTF8.self))",
                    ]
                }
                let arguments = words
                let (status, output) = try await BlockingWork.run { try ChildProcess.run(binary, arguments) }
                #expect(status == 2, "\(input): exit \(status): \(output)")
                #expect(output.hasPrefix("error: "), "\(output)")
                #expect(input.matches(output), "\(input): expected \(input.expected), got \(output)")
            }
            #expect(try await admin.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
        }
    }

    /// A review stopped Postgres under `submit --file` of 300,000 lines: 42,000 had gone in, and the
    /// error said nothing of it (with --json, stdout was empty); rerun, the file doubled them.
    @Test("a --file run the database stops says which lines went in and where to start again")
    func interruptedFile() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            // The third batch (lines 2,001–2,600) fails as the server would going down.
            try await pool.query(
                """
                CREATE FUNCTION public.go_down() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.request -> 'messages' -> 0 ->> 'content' = 'line 2500' THEN
                        RAISE EXCEPTION USING ERRCODE = '57P01', MESSAGE = 'terminating connection due to administrator command';
                    END IF;
                    RETURN NEW;
                END $$
                """)
            try await pool.query(
                "CREATE TRIGGER go_down BEFORE INSERT ON switchyard.jobs FOR EACH ROW EXECUTE FUNCTION public.go_down()")
            let file = Self.temporaryFile("interrupted.jsonl")
            defer { try? FileManager.default.removeItem(at: file) }
            let lines = (1...2600).map { #"{"messages":[{"role":"user","content":"line \#($0)"}]}"# }
            try Data(lines.joined(separator: "\n").utf8).write(to: file)
            let url = configuration.effectiveConnectionString
            let binary = WorkerProcess.binary("dispatcher")
            let (status, output) = try await BlockingWork.run {
                try ChildProcess.run(binary, ["submit", "--file", file.path, "--json", "--database-url", url])
            }
            #expect(status == 1, "\(output)")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 2000)
            let summaryLine = try #require(output.split(separator: "\n").first { $0.hasPrefix("{") }, "\(output)")
            let summary = try JSONValue(parsing: String(summaryLine))
            #expect(summary["submitted"] == 2000 && summary["resume_from_line"] == 2001)
            #expect(summary["in_flight_lines"] == [2001, 2600])
            #expect(summary["ids"]?.arrayValue?.count == 2000)
            // The keys of a whole run's summary (a docs walkthrough's script found no new_jobs).
            #expect(summary["new_jobs"] == .null && summary.objectValue?["new_jobs"] != nil)
            // The error on one line: the server's words for a lost connection came on two, mid-sentence.
            let error = try #require(output.split(separator: "\n").first { $0.hasPrefix("error: ") }, "\(output)")
            #expect(error.contains("; lines 1–2000 of \(file.path) were done"), "\(output)")
            #expect(output.contains("lines 1–2000 of \(file.path) were done (submitted 2000, rejected 0); lines 2001–2600 "
                                    + "were on their way and may or may not have gone in"), "\(output)")
            #expect(output.contains("tail -n +2001 \(file.path) | dispatcher submit --file -"), "\(output)")
        }
    }

    /// A review stopped the server and ran `submit --file`: "lines 1–1000 were on their way and
    /// may or may not have gone in", and `in_flight_lines` [1, 1] for a one-line file, although no
    /// connection was ever opened.
    @Test("submit --file with no server to connect to says nothing was sent: no line in doubt")
    func submitFileNoServer() async throws {
        let file = Self.temporaryFile("no-server.jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8).write(to: file)
        // A port nothing listens on (a socket directory with no server).
        let empty = try Scratch.makeDirectory("no-server")
        let url = "postgresql://postgres@/switchyard?host=\(empty.path)&port=1&connect_timeout=1"
        let binary = WorkerProcess.binary("dispatcher")
        // `wait` beside it: its listening connection failed at once where every other command
        // waited out the retries, and those said nothing for 15 s.
        async let waited = BlockingWork.run { try ChildProcess.run(binary, ["wait", "1", "--timeout", "2s", "--database-url", url]) }
        let (status, output) = try await BlockingWork.run {
            try ChildProcess.run(binary, ["submit", "--file", file.path, "--json", "--database-url", url])
        }
        #expect(status == 1, "\(output)")
        let notice = "waiting for the database (retrying for about 15 s; Ctrl-C stops): could not connect"
        #expect(output.hasPrefix(notice) && output.components(separatedBy: "waiting for").count == 2, "\(output)")
        let (waitStatus, waitOutput) = try await waited
        #expect(waitStatus == 1, "\(waitOutput)")
        #expect(waitOutput.hasPrefix(notice), "\(waitOutput)")
        let summaryLine = try #require(output.split(separator: "\n").first { $0.hasPrefix("{") }, "\(output)")
        let summary = try JSONValue(parsing: String(summaryLine))
        #expect(summary["in_flight_lines"] == [], "\(output)")
        #expect(summary["resume_from_line"] == 1)
        #expect(output.contains("nothing of \(file.path) was done before it; the lines from 1 on were not sent"), "\(output)")
        #expect(!output.contains("may or may not"), "\(output)")
    }

    /// A review ran `submit` as a worker role: "permission denied for function submit", no hint,
    /// exit 2 (bad input); `status` as a submitter listed six sections denied with no hint either.
    @Test("a command its role may not run says which role may, exit 1; a file's lines are not each refused for it")
    func wrongRole() async throws {
        try await TestDatabase.withMigrated { configuration in
            let admin = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await admin.close() } }
            try await SecurityFixtures.withRoles(admin, ["w": "switchyard_worker", "s": "switchyard_submitter"], login: true) { roles in
                try await SecurityFixtures.map(admin, [(roles["s"]!, "acme")])
                let binary = WorkerProcess.binary("dispatcher")
                func run(_ role: String, _ arguments: [String]) async throws -> (Int32, String) {
                    let url = SecurityFixtures.connectionString(configuration, as: roles[role]!)
                    return try await BlockingWork.run { try ChildProcess.run(binary, arguments + ["--database-url", url]) }
                }
                let (submitted, submitOutput) = try await run("w", ["submit", "--prompt", "hi"])
                #expect(submitted == 1, "\(submitOutput)")
                #expect(submitOutput.contains("permission denied") && submitOutput.contains("of switchyard_submitter"), "\(submitOutput)")

                let file = Self.temporaryFile("role.jsonl")
                defer { try? FileManager.default.removeItem(at: file) }
                try Data((0..<3).map { _ in Self.hello }.joined(separator: "\n").utf8).write(to: file)
                let (bulk, bulkOutput) = try await run("w", ["submit", "--file", file.path])
                #expect(bulk == 1 && !bulkOutput.contains("line 1:") && !bulkOutput.contains("tail -n"), "\(bulkOutput)")
                #expect(bulkOutput.contains("of switchyard_submitter"), "\(bulkOutput)")

                let (status, statusOutput) = try await run("s", ["status"])
                #expect(status == 1)
                #expect(statusOutput.contains("sections unavailable") && statusOutput.contains("need a member of switchyard_admin"),
                        "\(statusOutput)")
            }
        }
    }

    /// An operator walkthrough's application role: `tenants` failed ("permission denied for
    /// function rate_tokens_now", its hint calling it an operator's command), and `result` of a job
    /// scheduled for later said only "scheduled" (the query saying when and why was refused); a `*`
    /// gateway's keyed repeat for a tenant it named did not say its job was from before.
    @Test("an application's role lists its own tenants, and reads when its job runs; a gateway's repeat is told")
    func applicationReadsItsTenants() async throws {
        try await TestDatabase.withMigrated { configuration in
            let admin = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await admin.close() } }
            try await SecurityFixtures.withRoles(
                admin, ["s": "switchyard_submitter", "gw": "switchyard_submitter"], login: true
            ) { roles in
                try await SecurityFixtures.map(admin, [(roles["s"]!, "acme"), (roles["gw"]!, "*")])
                try await admin.query("SELECT switchyard.set_tenant_max_per_minute('acme', 10)")
                let binary = WorkerProcess.binary("dispatcher")
                func run(_ arguments: [String], as role: String = "s") async throws -> (status: Int32, output: String) {
                    let url = SecurityFixtures.connectionString(configuration, as: roles[role]!)
                    return try await BlockingWork.run {
                        try ChildProcess.run(binary, arguments + ["--database-url", url])
                    }
                }
                let listed = try await run(["tenants"])
                #expect(listed.status == 0 && listed.output.contains("acme"), "\(listed.output)")
                let submitted = try await run(["submit", "--prompt", "later", "--run-at", "1h"])
                let id = try #require(
                    submitted.output.split(separator: "\n").first { Int64($0) != nil }, "\(submitted.output)")
                let read = try await run(["result", String(id)])
                #expect(read.status == 5 && read.output.contains("scheduled until"), "\(read.output)")
                let keyed = ["submit", "--prompt", "again", "--tenant", "acme", "--idempotency-key", "k1", "--json"]
                let first = try await run(keyed, as: "gw")
                let repeated = try await run(keyed, as: "gw")
                #expect(first.output.contains(#""new":true"#), "\(first.output)")
                #expect(repeated.output.contains(#""new":false"#), "\(repeated.output)")
                // No tenant named: told the option, not SQL's SET (as it was).
                let unnamed = try await run(["submit", "--prompt", "x"], as: "gw")
                #expect(unnamed.status == 2 && unnamed.output.contains("hint: give the job's tenant: --tenant NAME"),
                        "\(unnamed.output)")
            }
        }
    }

    /// helper-155: `result --tenant 'acme '` said "not a job of tenant acme  that this role may
    /// see", the trailing space a double space alone.
    @Test("a --tenant no submission takes is said so when a job is not found")
    func notFoundNamesTheSpace() {
        #expect(JobCommands.notFoundHint(tenant: "acme ")
            == "tenant 'acme ' begins or ends with white space, which no submission takes; name it without: --tenant acme")
        #expect(JobCommands.notFoundHint(tenant: "\u{200B}acme").hasPrefix("tenant '<U+200B>acme' begins or ends"))
        #expect(JobCommands.notFoundHint(tenant: "acme").hasPrefix("check the id and the tenant"))
    }

    @Test("a JSONL line over the client's limit is reported by number without being held in memory")
    func oversizedLine() async throws {
        let file = Self.temporaryFile("long.jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        let long = String(repeating: "x", count: 300_000)
        try Data("\(Self.hello)\n\"\(long)\"\n\(Self.hello)\n\(long)".utf8).write(to: file)
        let reader = try LineReader(path: file.path, maximumLineBytes: 1_000)
        var lines: [LineReader.Line] = []
        while let batch = try await reader.next(count: 2) { lines += batch }
        #expect(lines.map(\.number) == [1, 2, 3, 4])
        #expect(lines.map(\.oversizedBytes) == [nil, 300_002, nil, 300_000])
        #expect(throws: QueueError.self) { try lines[1].text() }
        #expect(try lines[2].text() == Self.hello)
    }

    @Test("input that cannot be read (a directory, a closed stdin) is an error naming it, not a crash", arguments: [
        "submit --file DIR", "submit --file - < DIR", "submit --file - <&-", "submit --request - < DIR",
        "models import - < DIR", "route --explain --file - < DIR", "cancel - < DIR", "wait - < DIR",
    ])
    func unreadableInput(_ command: String) async throws {
        let directory = FileManager.default.temporaryDirectory.path
        let binary = WorkerProcess.binary("dispatcher")
        let line = "'\(binary)' " + command.replacingOccurrences(of: "DIR", with: "'\(directory)'")
            + " --database-url 'host=/nonexistent dbname=none'"
        let (status, output) = try await BlockingWork.run { try ChildProcess.run("/bin/sh", ["-c", line]) }
        #expect(status == 2, "\(command): exit \(status): \(output)")
        #expect(output.hasPrefix("error: cannot read "), "\(command): \(output)")
        #expect(output.contains(command.contains("- ") ? "stdin" : directory), "\(output)")
        #expect(!output.contains("Fatal error"))
    }
}
