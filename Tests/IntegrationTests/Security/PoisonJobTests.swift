import Foundation
import Postgres
import QueueModel
import Testing

/// Poison jobs: a provider call that returns an unreadable body, hangs past its timeout, fails,
/// or has its connection reset, closed or cut short ends `failed` after the job's attempts with
/// the error recorded — and the worker (a real process, logged in as a switchyard_worker member)
/// keeps serving other jobs.
@Suite("Security: poison jobs")
struct PoisonJobTests {
    /// Each poison model, where it lives, and what its failure must be recorded as.
    static let poisons: [(model: String, fragments: [String])] = [
        ("garbled", ["not valid JSON"]), ("stalled", ["timed_out"]), ("broken", ["HTTP 500"]),
        ("reset", ["could not reach", "closed the connection without answering"]),
        // Reached, and hung up on: said so, not "could not reach" (a soak's server answered most calls).
        ("closed", ["closed the connection without answering"]),
        // libcurl may wait out the promised length rather than report the cut: either is a failure.
        ("partial", ["closed the connection before its answer ended", "closed the connection without answering", "timed_out"]),
    ]
    static let jobsPerPoison = 3
    static let goodJobs = 10

    static func catalog(fake: FakeProviderServer, broken: MisbehavingServer) -> String {
        func model(_ base: String) -> String { #"{"provider": "openai", "base_url": "\#(base)"}"# }
        let models = [
            "garbled": model(fake.openAIBaseURL), "stalled": model(fake.openAIBaseURL),
            "broken": model(fake.openAIBaseURL), "good": model(fake.openAIBaseURL),
            "reset": model(broken.baseURL("reset")), "closed": model(broken.baseURL("close")),
            "partial": model(broken.baseURL("partial")),
        ]
        // The hang (and a cut-short answer libcurl waits out) times out quickly; every other call
        // has all the time it needs on a busy machine, so it fails for its own reason.
        let timeouts = ["stalled": 500, "partial": 1_000]
        let rules = models.keys.map { name in
            #""\#(name)": {"primary": "\#(name)", "max_latency_ms": \#(timeouts[name] ?? 10_000)}"#
        }
        return #"{"models": {\#(models.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", "))}, "#
            + #""routing_rules": {\#(rules.joined(separator: ", "))}}"#
    }

    /// Polls until `count` results exist, at most `limit`, or until the worker exits.
    static func waitForResults(
        _ pool: PostgresPool, count: Int, limit: Duration, worker: WorkerProcess
    ) async throws -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        var finished = 0
        while clock.now < deadline, worker.isRunning {
            finished = try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self)
            if finished >= count { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return finished
    }

    @Test("malformed bodies, hangs, 500s, resets, closes and cut-short answers fail their jobs; the worker serves on")
    func poisonJobs() async throws {
        let fake = try await FakeProviderServer.start()
        let broken = try await MisbehavingServer.start()
        defer {
            Task {
                await fake.stop()
                await broken.stop()
            }
        }
        try await fake.script([
            "garbled": ["kind": "malformed"], "stalled": ["delay_ms": 3000], "broken": ["kind": "server_error"],
            "good": ["kind": "ok", "content": "fine"],
        ])
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 4))
            defer { Task { await pool.close() } }
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(Self.catalog(fake: fake, broken: broken).utf8))
            try await SecurityFixtures.withRoles(pool, ["runner": "switchyard_worker"], login: true) { roles in
                let store = QueueStore(pool: pool)
                var poisoned: [Int64: String] = [:]
                for (model, _) in Self.poisons {
                    for _ in 0..<Self.jobsPerPoison {
                        let id = try await store.submit(
                            Submission(request: Submission.prompt("poison \(model)"), taskClass: model, maxAttempts: 2))
                        poisoned[id] = model
                    }
                }
                let worker = try WorkerProcess.start(
                    try SecurityFixtures.configuration(configuration, as: roles["runner"]!), id: "poison-worker",
                    arguments: ["--concurrency", "4", "--retry-base", "100ms", "--lease", "10s"],
                    environment: ["SWITCHYARD_LOG_LEVEL": "info"])
                var stopped = false
                defer { if !stopped { worker.kill() } }

                let finished = try await Self.waitForResults(
                    pool, count: poisoned.count, limit: .seconds(120), worker: worker)
                #expect(finished == poisoned.count, "worker log:\n\(worker.log.suffix(3000))")
                #expect(worker.isRunning, "the worker died:\n\(worker.log.suffix(3000))")
                let rows = try await pool.query(
                    """
                    SELECT r.job_id, r.status, r.attempt_count, r.error::text AS error,
                           (SELECT string_agg(coalesce(a ->> 'error', ''), ' | ') FROM jsonb_array_elements(r.attempts) a)
                               AS trail
                    FROM switchyard.results r
                    """)
                var trails: [String: String] = [:]
                for row in rows {
                    let id: Int64 = try row.decode("job_id")
                    let model = try #require(poisoned[id])
                    #expect(try row.decode("status", as: String.self) == "failed", "job \(id) (\(model))")
                    #expect(try row.decode("attempt_count", as: Int.self) == 2, "job \(id) (\(model))")
                    #expect(try row.decode("error", as: String?.self)?.isEmpty == false, "job \(id) has no error")
                    trails[model, default: ""] += try row.decode("trail", as: String?.self) ?? ""
                }
                for (model, fragments) in Self.poisons {
                    let trail = trails[model] ?? "no trail"
                    let recorded = fragments.contains { trail.contains($0) }
                    #expect(recorded, "\(model): \(trail)")
                }

                // The same worker, still up, serves ordinary jobs.
                var good: [Int64] = []
                for index in 0..<Self.goodJobs {
                    good.append(
                        try await store.submit(
                            Submission(request: Submission.prompt("good \(index)"), taskClass: "good")))
                }
                let all = try await Self.waitForResults(
                    pool, count: poisoned.count + good.count, limit: .seconds(60), worker: worker)
                #expect(all == poisoned.count + good.count, "worker log:\n\(worker.log.suffix(3000))")
                let succeeded = try await pool.query(
                    "SELECT count(*) FROM switchyard.results WHERE job_id = ANY($1) AND status = 'succeeded'", [good]
                ).scalar(Int.self)
                if succeeded != good.count {
                    let failures = try await pool.query(
                        "SELECT job_id, status, error::text FROM switchyard.results WHERE job_id = ANY($1) AND status <> 'succeeded'",
                        [good])
                    Issue.record(
                        "good jobs did not all succeed: \(try failures.map { try $0[2].decode(String?.self) ?? "" })")
                }
                #expect(worker.isRunning)
                worker.terminate()
                let status = await worker.wait()
                stopped = true
                #expect(status == 0, "worker exited \(status):\n\(worker.log.suffix(3000))")
                #expect(!worker.log.contains("permission denied"), "\(worker.log.suffix(3000))")
            }
        }
    }
}

extension WorkerProcess {
    /// Whether the process is still running (not exited, reaped or not), read from /proc without
    /// reaping it, so a later `wait()` still gets its status.
    var isRunning: Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(child.pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
        return state != "Z" && state != "X"
    }
}
