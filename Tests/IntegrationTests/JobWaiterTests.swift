import Foundation
import Postgres
import QueueModel
import Synchronization
import Testing

@testable import Dispatcher

/// `dispatcher wait` (and `submit --wait`): a lost LISTEN connection is no timeout.
@Suite("Waiting for jobs")
struct JobWaiterTests {
    @Test("a wait whose LISTEN connection is cut waits on after the reconnect, until the job finishes")
    func waitSurvivesAReconnect() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let job = try await store.submit(
                Submission(request: ["messages": [["role": "user", "content": "hello"]]]))
            let waiting = Task { try await JobWaiter(store: store).wait(for: [job], timeout: .seconds(120), json: true) }
            @Sendable func listeners() async throws -> [Int] {
                try await pool.query(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %switchyard_results%' AND pid <> pg_backend_pid()"
                ).map { try $0.decode("pid", as: Int.self) }
            }
            // The pid read where it was seen (read again, it was once gone: the crash of a run).
            let seen = Mutex<[Int]>([])
            try await waitUntil("the wait listens") {
                let now = try await listeners()
                seen.withLock { $0 = now }
                return now.count == 1
            }
            let first = seen.withLock { $0 }
            try await pool.query("SELECT pg_terminate_backend($1)", [first[0]])
            try await waitUntil("the wait listens again") {
                let now = try await listeners()
                return now.count == 1 && now != first
            }
            // Its check after the reconnect has found the job still queued; it waits on.
            try await Task.sleep(for: .milliseconds(300))
            _ = try await store.cancel(job)
            #expect(try await waiting.value == ExitCode.jobNotSucceeded)
        }
    }

    /// A review's `wait A B` printed A's outcome only when B finished too (20 s after A), though
    /// the docs say "prints each outcome as it lands".
    @Test("wait prints each outcome as it lands, not when the last job ends")
    func printsAsTheyLand() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let first = try await store.submit(Submission(request: ["messages": [["role": "user", "content": "a"]]]))
            let second = try await store.submit(Submission(request: ["messages": [["role": "user", "content": "b"]]]))
            let output = try Scratch.makeDirectory("wait-output").appendingPathComponent("out").path
            let process = try ChildProcess.spawn(
                WorkerProcess.binary("dispatcher"),
                ["wait", String(first), String(second), "--timeout", "60s", "--database-url",
                 pool.configuration.effectiveConnectionString],
                standardOutput: .file(output), standardError: .discard)
            defer { process.signal(SIGKILL); _ = process.wait() }
            try await waitUntil("the wait listens") {
                try await pool.query(
                    """
                    SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND query LIKE 'LISTEN %switchyard_results%'
                    """
                ).scalar(Int.self) == 1
            }
            #expect(try await store.cancel(first) == "cancelled")
            try await waitUntil("the first outcome is printed while the wait goes on") {
                ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains("\(first)  cancelled")
            }
            #expect(process.poll() == nil, "the wait ended before the second job did")
            #expect(try await store.cancel(second) == "cancelled")
            try await waitUntil("the wait ends") { process.poll() != nil }
            let text = try String(contentsOfFile: output, encoding: .utf8)
            #expect(text.components(separatedBy: "\(first)  cancelled").count == 2, "printed once: \(text)")
        }
    }

    /// A review's `wait --timeout 10s` through a 30 s outage exited 1 after 25 s: its last look,
    /// past the timeout, waited out the pool's connection retries, then failed.
    @Test("a wait that times out with the database down says so (exit 4) without retrying connections")
    func timeoutWithTheDatabaseDown() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let job = try await QueueStore(pool: pool).submit(
                Submission(request: ["messages": [["role": "user", "content": "hello"]]]))
            let database = try await pool.query("SELECT current_database() AS name").first!.decode("name", as: String.self)
            let admin = try await PostgresConnection.connect(pool.configuration.withDatabase("postgres"))
            let waiterPool = PostgresPool(pool.configuration, options: .init(connectRetryTimeout: .seconds(60)))
            let store = QueueStore(pool: waiterPool)
            let waiting = Task { try await JobWaiter(store: store).wait(for: [job], timeout: .seconds(3), json: true) }
            // Down only once the wait has looked at the job and listens (a first look the outage
            // caught would wait out the retries: that is not what is tested here).
            try await waitUntil("the wait has looked and listens") {
                try await pool.query(
                    """
                    SELECT count(*) FILTER (WHERE query LIKE 'LISTEN %switchyard_results%')
                         + count(*) FILTER (WHERE state = 'idle' AND query LIKE '%switchyard.job_status(id)%')
                    FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                    """
                ).scalar(Int.self) == 2
            }
            try await cutOff(database, on: admin)
            let code = Mutex<Int32?>(nil)
            Task {
                let value = try? await waiting.value
                code.withLock { $0 = value ?? -1 }
            }
            let clock = ContinuousClock()
            let limit = clock.now + .seconds(20)
            while code.withLock({ $0 }) == nil && clock.now < limit { try await Task.sleep(for: .milliseconds(100)) }
            try await admin.query("ALTER DATABASE \(database) ALLOW_CONNECTIONS true")
            await admin.close()
            #expect(code.withLock { $0 } == ExitCode.timedOut, "\(String(describing: code.withLock { $0 }))")
            if code.withLock({ $0 }) == nil { waiting.cancel() }
            await waiterPool.close()
        }
    }
}

/// Text a submitter or a provider chose reaches the operator's terminal inert.
@Suite("Terminal output: control characters shown, not obeyed")
struct PrintableOutputTests {
    @Test("a table cell with escape sequences prints them as cat -v does, and the columns stay aligned")
    func tableCells() {
        var table = TextTable(["class", "jobs"], rightAligned: [1])
        table.append(["evil\u{1B}[2J\u{1B}]0;pwned\u{07}", "1"])
        table.append(["plain", "22"])
        table.append(["c1\u{9B}31m\u{7F}", "3"])
        #expect(table.lines == [
            "class                  jobs",
            "evil^[[2J^[]0;pwned^G     1",
            "plain                    22",
            "c1M-^[31m^?               3",
        ])
        #expect(StatusFormat.printable("naïve — ok") == "naïve — ok")
        // A right-to-left override made a review's tenant `acme\u{202E}lanigiro` print as another name.
        #expect(StatusFormat.printable("acme\u{202E}lanigiro\u{2066}") == "acme<U+202E>lanigiro<U+2066>")
        #expect(StatusFormat.printable("שלום 世界") == "שלום 世界")
        // Invisible inside a name (a tenant of its own that reads as another); the joiners stay (emoji, scripts).
        #expect(StatusFormat.printable("ac\u{200B}me\u{FEFF}") == "ac<U+200B>me<U+FEFF>")
        #expect(StatusFormat.printable("👩\u{200D}💻") == "👩\u{200D}💻")
    }

    @Test("wait's one-line summary shows a provider's control characters instead of sending them")
    func waitSummary() {
        let failed: JSONValue = ["status": "failed", "error": ["message": "bad\u{1B}[31m red\r\nline"]]
        #expect(JobWaiter.summary(id: 7, result: failed) == "7  failed  bad^[[31m red^M^Jline")
    }

    /// A walkthrough's answer cut by max_tokens read as whole: the line's cut at 200 characters
    /// took its "(finish_reason: length)" with it.
    @Test("wait's line cuts a long answer with an ellipsis and keeps how it finished")
    func waitSummaryOfALongAnswer() {
        let long: JSONValue = [
            "status": "succeeded", "model": "m",
            "response": ["choices": [["finish_reason": "length", "message": ["content": .string(String(repeating: "ab\n", count: 100))]]]],
        ]
        let line = JobWaiter.summary(id: 7, result: long)
        #expect(line == "7  succeeded  m  " + String(repeating: "ab ", count: 66) + "ab…" + " (finish_reason: length)", "\(line)")
        let short: JSONValue = ["status": "succeeded", "response": ["choices": [["finish_reason": "stop", "message": ["content": "hi"]]]]]
        #expect(JobWaiter.summary(id: 8, result: short) == "8  succeeded  hi")
    }

    @Test("an answer of tool calls, a refusal or several choices is shown, not an empty line")
    func answerText() {
        let tools: JSONValue = ["choices": [["finish_reason": "tool_calls", "message": [
            "role": "assistant", "content": nil,
            "tool_calls": [["id": "c1", "type": "function", "function": ["name": "get_weather", "arguments": #"{"city":"Oslo"}"#]]],
        ]]]]
        #expect(JobWaiter.answerText(tools) == #"tool call get_weather({"city":"Oslo"})"#)
        let refused: JSONValue = ["choices": [["finish_reason": "stop", "message": ["content": nil, "refusal": "I can't help with that."]]]]
        #expect(JobWaiter.answerText(refused) == "refusal: I can't help with that.")
        let three: JSONValue = ["choices": [
            ["finish_reason": "length", "message": ["content": "Once upon"]],
            ["finish_reason": "stop", "message": ["content": "B"]], ["finish_reason": "stop", "message": ["content": "C"]],
        ]]
        #expect(JobWaiter.answerText(three) == "Once upon\n(finish_reason: length)\n(2 more choices: dispatcher result --json)")
        #expect(JobWaiter.answerText(["choices": [["finish_reason": "stop", "message": ["content": "hi"]]]]) == "hi")
    }
}
