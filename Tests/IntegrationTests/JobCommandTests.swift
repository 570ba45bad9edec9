import Foundation
import Postgres
import QueueModel
import Testing

/// `dispatcher cancel` and `wait` with many ids, as an operator pipes them in.
@Suite("Job commands with ids on stdin")
struct JobCommandTests {
    /// Runs `dispatcher ARGUMENTS < FILE` holding `input`.
    private func dispatcher(_ arguments: [String], stdin input: String, url: String) async throws -> (status: Int32, output: String) {
        let file = try Scratch.makeDirectory("job-ids").appendingPathComponent("ids").path
        try Data(input.utf8).write(to: URL(fileURLWithPath: file))
        let words = [WorkerProcess.binary("dispatcher")] + arguments + ["--database-url", url]
        let line = words.map { "'\($0)'" }.joined(separator: " ") + " < '\(file)'"
        return try await BlockingWork.run { try ChildProcess.run("/bin/sh", ["-c", line]) }
    }

    @Test("cancel - takes 1,500 ids from stdin: each once, in order, past a round trip's thousand")
    func cancelFromStdin() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let jobs = try await store.submit(batch: (0..<1_500).map { _ in Submission(request: hello, priority: .background) })
            #expect(try await store.cancel(jobs[7]) == "cancelled")
            let url = pool.configuration.effectiveConnectionString
            // Spaces and newlines both separate; a repeated id is cancelled (and printed) once.
            let input = jobs.prefix(750).map(String.init).joined(separator: " ") + "\n"
                + jobs.dropFirst(750).map(String.init).joined(separator: "\n") + "\n\(jobs[3])\n"
            let (status, output) = try await dispatcher(["cancel", "-", "999999"], stdin: input, url: url)
            #expect(status == 6, "\(output.suffix(500))")
            // The unknown id's hint goes to stderr, once.
            let all = output.split(separator: "\n").map(String.init)
            #expect(all.filter { $0.hasPrefix("hint: check the id") }.count == 1, "\(output.suffix(500))")
            let lines = all.filter { !$0.hasPrefix("hint: ") && !$0.hasPrefix("total: ") }
            #expect(lines.count == 1_501, "\(output.suffix(500))")
            // The totals, once, on stderr.
            #expect(all.filter { $0.hasPrefix("total: ") } == ["total: 1499 cancelled, 1 already ended, 1 not found"],
                    "\(output.suffix(500))")
            #expect(lines.first == "\(jobs[0])  cancelled")
            #expect(lines[7] == "\(jobs[7])  already cancelled")
            #expect(lines[1_499] == "\(jobs[1_499])  cancelled")
            #expect(lines.last == "999999  not found")
            #expect(lines.filter { $0.hasSuffix("  cancelled") && !$0.contains("already") }.count == 1_499)
            let left = try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self)
            #expect(left == 0)
            let cancelled = try await pool.query(
                "SELECT count(*) FROM switchyard.results WHERE status = 'cancelled' AND job_id = ANY ($1)", [jobs]
            ).scalar(Int.self)
            #expect(cancelled == 1_500)

            // wait - reads its ids the same way.
            let waited = try await dispatcher(["wait", "-", "--timeout", "30s"], stdin: "\(jobs[0])\n", url: url)
            #expect(waited.status == 3 && waited.output.contains("\(jobs[0])  cancelled"), "\(waited.output)")
            // Nothing but whitespace, or a word that is no id: said, exit 2, nothing cancelled.
            let empty = try await dispatcher(["cancel", "-"], stdin: " \n", url: url)
            #expect(empty.status == 2 && empty.output.contains("no job id on stdin"), "\(empty.output)")
            let word = try await dispatcher(["cancel", "-"], stdin: "\(jobs[1]) twelve\n", url: url)
            #expect(word.status == 2 && word.output.contains("\"twelve\" is not a job id"), "\(word.output)")
        }
    }

    /// An on-call walkthrough could cancel thousands of jobs from a pipe but retry only one job
    /// at a time; a retried job's result still said to retry it.
    @Test("retry - retries each job in turn, says why of those it cannot, and a retried job's result names its retry")
    func retryFromStdin() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let jobs = try await store.submit(batch: (0..<3).map { _ in Submission(request: hello, priority: .background) })
            for job in jobs.prefix(2) { #expect(try await store.cancel(job) == "cancelled") }
            let url = pool.configuration.effectiveConnectionString
            let input = "\(jobs[0]) \(jobs[1])\n\(jobs[2])\n999999\n\(jobs[0])\n"
            let (status, output) = try await dispatcher(["retry", "-"], stdin: input, url: url)
            #expect(status == 6, "\(output)")
            let lines = output.split(separator: "\n").map(String.init)
            let retried = lines.filter { $0.contains("  retried as ") }
            #expect(retried.count == 2, "\(output)")
            #expect(retried.first?.hasPrefix("\(jobs[0])  retried as ") == true, "\(output)")
            #expect(lines.contains("\(jobs[2])  not retried: job \(jobs[2]) has not finished yet"), "\(output)")
            #expect(lines.contains("999999  not retried: job 999999 not found"), "\(output)")
            #expect(lines.filter { $0.hasPrefix("hint: check the id") }.count == 1, "\(output)")
            // Again, as ids: the same retries (a job is retried once), and --json lines.
            let again = try await dispatcher(["retry", String(jobs[0]), String(jobs[1]), "--json"], stdin: "", url: url)
            #expect(again.status == 0, "\(again.output)")
            let news = try again.output.split(separator: "\n").map { try JSONValue(parsing: String($0)) }
            #expect(news.map { $0["retry_of"] } == [.number(Double(jobs[0])), .number(Double(jobs[1]))])
            let first = try #require(news.first?["id"]?.intValue)
            #expect(retried.first == "\(jobs[0])  retried as \(first)")
            // The old job's result points to its retry rather than advising one.
            let result = try await dispatcher(["result", String(jobs[0]), "--content"], stdin: "", url: url)
            #expect(result.status == 3)
            #expect(
                result.output.contains("hint: dispatcher result \(jobs[0]) shows its attempts; it was retried as job \(first) (queued): dispatcher result \(first)"),
                "\(result.output)")
        }
    }

    /// A docs walkthrough: prune never said how many partitions it dropped when it dropped none.
    /// An SQL walkthrough's order id 9007199254740993 was stored and printed as 9007199254740992.0,
    /// exit 0, by submit --metadata and --file alike; result printed SQL's exact values rounded.
    @Test("numbers past a Double's digits go in and come out as written: --metadata, --file, result")
    func exactNumbers() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let url = pool.configuration.effectiveConnectionString
            let metadata = #"{"order_id": 9007199254740993, "price": 0.1000000000000000055511151231257827}"#
            let one = try await dispatcher(["submit", "--prompt", "hi", "--metadata", metadata], stdin: "", url: url)
            let line = #"{"request": {"messages": [{"role": "user", "content": "hi"}]}, "metadata": {"order_id": 9007199254740995}}"#
            let many = try await dispatcher(["submit", "--file", "-"], stdin: line + "\n", url: url)
            #expect(one.status == 0 && many.status == 0, "\(one.output) \(many.output)")
            let stored = try await pool.query(
                "SELECT metadata->>'order_id' AS id, metadata->>'price' AS price FROM switchyard.jobs ORDER BY id")
            #expect(try stored.map { try $0.decode("id", as: String.self) } == ["9007199254740993", "9007199254740995"])
            #expect(try stored.first?.decode("price", as: String?.self) == "0.1000000000000000055511151231257827")
            // Finished, read back by result as stored.
            let id = try await pool.query("SELECT min(id) FROM switchyard.jobs").scalar(Int64.self)
            let job = try #require(
                try await QueueStore(pool: pool).claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
                    .first)
            #expect(job.id == id)
            _ = try await QueueStore(pool: pool).complete(
                worker: "w", [Completion(jobID: id, attempt: job.attempt, kind: .result, status: "succeeded")])
            let result = try await dispatcher(["result", String(id)], stdin: "", url: url)
            #expect(result.output.contains(#""order_id": 9007199254740993"#), "\(result.output)")
            #expect(result.output.contains(#""price": 0.1000000000000000055511151231257827"#), "\(result.output)")
        }
    }

    @Test("prune says what it did, nothing included")
    func pruneSaysNothingDropped() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let (status, output) = try await dispatcher(
                ["prune", "--older-than", "30d"], stdin: "", url: pool.configuration.effectiveConnectionString)
            #expect(status == 0, "\(output)")
            #expect(output.split(separator: "\n") == [
                "daily results partitions dropped: 0", "rows in results_default: 0 removed", "idempotency keys: 0 removed",
                "tenant spending days: 0 removed", "cleared alerts: 0 removed",
            ], "\(output)")
        }
    }

    /// tenant_spend and alerts grew for ever: prune left them.
    @Test("prune removes tenants' spending of days before this month and the cutoff, and alerts cleared before it")
    func pruneSpendingAndAlerts() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                """
                INSERT INTO switchyard.tenant_spend (tenant, day, cost)
                SELECT 'acme', d::date, 1 FROM generate_series(
                    date_trunc('month', now() AT TIME ZONE 'UTC') - interval '70 days',
                    date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 day', interval '1 day') AS d
                UNION ALL SELECT 'acme', date_trunc('month', now() AT TIME ZONE 'UTC')::date, 1
                """)
            try await pool.query(
                """
                INSERT INTO switchyard.alerts (kind, subject, opened_at, cleared_at, value, threshold, message)
                VALUES ('error_rate', 'old', now() - interval '50 days', now() - interval '40 days', 1, 0.02, 'm'),
                       ('error_rate', 'recent', now() - interval '50 days', now() - interval '2 days', 1, 0.02, 'm'),
                       ('latency', 'open', now() - interval '50 days', NULL, 1, 0.02, 'm')
                """)
            // Days before the cutoff of 30 days, unless this month's: the 71 days before this month
            // less those within 30 days of now.
            let expected = try await pool.query(
                """
                SELECT count(*) FROM switchyard.tenant_spend
                WHERE day < least(((now() - interval '30 days') AT TIME ZONE 'UTC')::date,
                                  date_trunc('month', now() AT TIME ZONE 'UTC')::date)
                """).scalar(Int.self)
            #expect(expected > 30)
            let (status, output) = try await dispatcher(
                ["prune", "--older-than", "30d"], stdin: "", url: pool.configuration.effectiveConnectionString)
            #expect(status == 0, "\(output)")
            #expect(output.contains("tenant spending days: \(expected) removed"), "\(output)")
            #expect(output.contains("cleared alerts: 1 removed"), "\(output)")
            let left = try await pool.query(
                "SELECT min(day) >= ((now() - interval '30 days') AT TIME ZONE 'UTC')::date - 1 FROM switchyard.tenant_spend")
            #expect(try left.scalar(Bool.self))
            #expect(try await pool.query("SELECT string_agg(subject, ',' ORDER BY subject) FROM switchyard.alerts")
                .scalar(String.self) == "open,recent")
            // This month's spending stays, however short the cutoff.
            let sql = try await QueueSQLTests.prune(pool, olderThan: .seconds(1))
            #expect(sql.map(\.item).suffix(2) == ["tenant spending days", "cleared alerts"], "\(sql)")
            #expect(try await pool.query(
                "SELECT count(*) FROM switchyard.tenant_spend WHERE day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date"
            ).scalar(Int.self) == 1)
            #expect(try await pool.query(
                "SELECT count(*) FROM switchyard.tenant_spend WHERE day < date_trunc('month', now() AT TIME ZONE 'UTC')::date"
            ).scalar(Int.self) == 0)
            #expect(try await pool.query("SELECT string_agg(subject, ',') FROM switchyard.alerts").scalar(String.self) == "open")
        }
    }

    /// `2026-11-28 22:00:00`, as the dispatcher writes a time (UTC).
    static func clock(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d", parts.year!, parts.month!, parts.day!, parts.hour!, parts.minute!,
            parts.second!)
    }

    @Test("a job put back says why: result and wait show when it runs next and the worker's reason")
    func putBackJobSaysWhy() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let ids = try await store.submit(batch: (0..<4).map { _ in Submission(request: hello, priority: .background) })
            let claimed = try await store.claim(worker: "w", freeSlots: 4, backgroundSlots: 4, lease: .seconds(300))
            #expect(claimed.map(\.id).sorted() == ids)
            let later = Date().addingTimeInterval(7200)
            let reason = "no model is within the background ceiling of $0.001/1K until \(later.readableUTC)"
            _ = try await store.complete(worker: "w", [
                // Postponed for a price, with the worker's reason (as RoutingExecutor gives it).
                Completion(jobID: ids[0], attempt: 1, kind: .postpone, error: ["code": "postponed", "message": .string(reason)],
                           retryAt: later),
                // A failed attempt, retried in an hour.
                Completion(jobID: ids[1], attempt: 1, kind: .retry,
                           error: ["code": "model_error", "message": "HTTP 500 server_error: upstream broke"],
                           retryAt: Date().addingTimeInterval(3600)),
                // Released at shutdown: nothing to say, and it is queued.
                Completion(jobID: ids[2], attempt: 1, kind: .release),
                // Postponed by a worker from before this change: no reason.
                Completion(jobID: ids[3], attempt: 1, kind: .postpone, retryAt: later),
            ])
            let url = pool.configuration.effectiveConnectionString
            let result = try await dispatcher(["result", String(ids[0])], stdin: "", url: url)
            #expect(result.status == 5)
            #expect(
                result.output.contains(
                    "job \(ids[0]) has not finished: it is scheduled until \(Self.clock(later)) UTC: \(reason) "
                        + "(wait for it: dispatcher wait \(ids[0]))"), "\(result.output)")
            // --json, accepted and ignored before (a routing walkthrough's): as wait --json prints it.
            let resultJSON = try await dispatcher(["result", String(ids[0]), "--json"], stdin: "", url: url)
            #expect(resultJSON.status == 5)
            let item = try JSONValue(parsing: resultJSON.output.drop { $0 != "{" }.description)
            #expect(item["job_id"] == .number(Double(ids[0])) && item["status"] == "scheduled", "\(resultJSON.output)")
            #expect(item["waiting_reason"]?.stringValue == reason && item["run_at"] != nil, "\(resultJSON.output)")

            let waited = try await dispatcher(["wait", "-", "--timeout", "1s"], stdin: ids.map(String.init).joined(separator: " "), url: url)
            let lines = waited.output.split(separator: "\n").map(String.init)
            #expect(waited.status == 4, "\(waited.output)")
            #expect(lines.contains("\(ids[0])  scheduled until \(Self.clock(later)) UTC: \(reason)"), "\(lines)")
            #expect(
                lines.contains { $0.hasPrefix("\(ids[1])  scheduled until ") && $0.hasSuffix(" UTC: attempt 1 of 3 failed: HTTP 500 server_error: upstream broke") },
                "\(lines)")
            #expect(lines.contains("\(ids[2])  queued"), "\(lines)")
            #expect(lines.contains("\(ids[3])  scheduled until \(Self.clock(later)) UTC"), "\(lines)")
            // No worker alive: said, not waited out in silence (a newcomer's first job looked stuck).
            #expect(waited.output.contains("warning: no worker has sent a heartbeat in the last 30 s"), "\(waited.output)")
            // The timeout said, not only its exit status (a walkthrough's ended in silence).
            #expect(waited.output.contains("timed out after 1s: 4 of 4 jobs not finished"), "\(waited.output)")

            let identity = WorkerIdentity(id: "alive", concurrency: 1, hostname: "h", pid: 1, version: "t")
            _ = try await store.heartbeat(worker: identity, held: [], lease: .seconds(30))
            let json = try await dispatcher(["wait", "-", "--timeout", "1s", "--json"], stdin: String(ids[0]), url: url)
            #expect(!json.output.contains("warning: no worker"), "\(json.output)")
            let items = try JSONValue(parsing: json.output.drop { $0 != "[" }.description)
            #expect(items[0]?["waiting_reason"]?.stringValue == reason, "\(json.output)")
            #expect(items[0]?["status"] == "scheduled" && items[0]?["run_at"] != nil)

            // A rescue says whose lease lapsed, not why the job was put back before.
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() WHERE id = $1", [ids[1]])
            let again = try await store.claim(worker: "w2", freeSlots: 4, backgroundSlots: 4, lease: .milliseconds(1))
            #expect(again.map(\.id).contains(ids[1]))
            try await Task.sleep(for: .milliseconds(20))
            _ = try await store.rescueExpired()
            let rescued = try await store.waiting(of: [ids[1]])[ids[1]]
            #expect(rescued?.reason == "attempt 2 of 3: worker w2 stopped renewing its lease", "\(String(describing: rescued))")

            // Paused, a background job's wait says so (a review's paused job read "queued" alone).
            try await BackgroundPolicy.set("background_paused", to: "true", in: pool)
            let pausedWait = try await dispatcher(["wait", "-", "--timeout", "1s"], stdin: String(ids[2]), url: url)
            #expect(
                pausedWait.output.contains("\(ids[2])  queued; put back: attempt 1 of 3: worker w2 stopped renewing its "
                    + "lease; background work is paused (dispatcher background resume)"),
                "\(pausedWait.output)")
            try await BackgroundPolicy.set("background_paused", to: "false", in: pool)
            // Held back by the price ceiling before any worker claimed it: said too (a review's
            // job read "queued" alone).
            let fresh = try await store.submit(Submission(request: hello, priority: .background))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.0000001", in: pool)
            let heldWait = try await dispatcher(["wait", "-", "--timeout", "1s", "--json"], stdin: String(fresh), url: url)
            let heldItems = try JSONValue(parsing: heldWait.output.drop { $0 != "[" }.description)
            #expect(heldItems[0]?["background_held"]?.stringValue?.hasPrefix("no model is within") == true, "\(heldWait.output)")
            let heldText = try await dispatcher(["wait", "-", "--timeout", "1s"], stdin: String(fresh), url: url)
            #expect(heldText.output.contains("\(fresh)  queued; background work is held back: no model is within"), "\(heldText.output)")
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "", in: pool)

            // A policy change sends postponed jobs back at once: the reason goes with it.
            try await BackgroundPolicy.set("background_drain_until", to: Date().addingTimeInterval(600).postgresText, in: pool)
            let left = try await store.waiting(of: [ids[0]])[ids[0]]
            #expect(left?.reason == nil && (left?.runAt ?? .distantFuture) <= Date().addingTimeInterval(5))
        }
    }

    /// A background walkthrough's jobs, held back by the ceiling, were told the fleet's next window
    /// (another rule's, seven hours before theirs).
    @Test("a job held back by the closed gate is told its own rule's next window, not the fleet's")
    func heldJobToldItsOwnWindow() async throws {
        try await TestDatabase.withMigratedPool { pool in
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: "UTC")!
            let now = Date()
            func window(hoursAhead: Int) -> (text: String, start: Date) {
                let start = calendar.date(
                    bySettingHour: calendar.component(.hour, from: now.addingTimeInterval(Double(hoursAhead) * 3600)),
                    minute: 0, second: 0, of: now.addingTimeInterval(Double(hoursAhead) * 3600))!
                let hour = calendar.component(.hour, from: start)
                return (String(format: #"{"start": "%02d:00", "end": "%02d:30", "multiplier": 0.1}"#, hour, hour), start)
            }
            let (soon, _) = window(hoursAhead: 2)
            let (later, laterStart) = window(hoursAhead: 5)
            let catalog = """
                {"models": {
                   "a-model": {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002, "price_windows": [\(soon)]},
                   "b-model": {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002, "price_windows": [\(later)]}},
                 "routing_rules": {"a": {"primary": "a-model"}, "b": {"primary": "b-model"}, "default": {"primary": "a-model"}}}
                """
            _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.001", in: pool)
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hi"]]]
            let id = try await store.submit(Submission(request: hello, priority: .background, taskClass: "b"))
            let held = try #require(try await store.waiting(of: [id])[id]?.held)
            #expect(held == "no model is within the background ceiling of $0.001/1K until \(laterStart.readableUTC)", "\(held)")
            // With a deadline before that window, it says when it runs above the ceiling.
            let hurried = try await store.submit(
                Submission(request: hello, priority: .background, taskClass: "b", deadline: now.addingTimeInterval(3600)))
            let hurriedHeld = try #require(try await store.waiting(of: [hurried])[hurried]?.held)
            #expect(hurriedHeld.contains("; it runs above the ceiling from "), "\(hurriedHeld)")
        }
    }

    /// A review's job failed with `unreadable_request`; `result --content` advised a retry, which
    /// failed the same way.
    @Test("result --content of a job whose request was refused advises a corrected submission, not a retry")
    func refusedRequestHint() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let url = WorkerProcess.databaseURL(pool.configuration)
            var ids: [Int64] = []
            for code in ["bad_request", "server_error", "unsupported_request"] {
                let id = try await store.submit(Submission(request: ["messages": [["role": "user", "content": "hi"]]]))
                _ = try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
                try await pool.query(
                    """
                    SELECT * FROM switchyard.complete('w', jsonb_build_array(jsonb_build_object(
                        'id', $1::bigint, 'attempt', 1, 'kind', 'result', 'status', 'failed',
                        'error', jsonb_build_object('code', $2::text, 'message', 'it broke'))))
                    """, [id, code])
                ids.append(id)
            }
            let refused = try await dispatcher(["result", String(ids[0]), "--content"], stdin: "", url: url)
            #expect(refused.status == 3, "\(refused.output)")
            #expect(refused.output.contains("the request itself was refused, so submit a corrected one"), "\(refused.output)")
            #expect(!refused.output.contains("dispatcher retry"), "\(refused.output)")
            let broke = try await dispatcher(["result", String(ids[1]), "--content"], stdin: "", url: url)
            #expect(broke.output.contains("dispatcher retry \(ids[1]) runs it again"), "\(broke.output)")
            let unsupported = try await dispatcher(["result", String(ids[2]), "--content"], stdin: "", url: url)
            #expect(unsupported.output.contains("submit a corrected one"), "\(unsupported.output)")
        }
    }
}
