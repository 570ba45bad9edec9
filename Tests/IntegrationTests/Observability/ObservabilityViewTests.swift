import Foundation
import Postgres
import QueueModel
import Testing

/// The SQL views and functions of migration 6 on a known data set: percentiles, rates, cost,
/// windows, the live queue and the workers.
@Suite("Observability SQL on a known data set")
struct ObservabilityViewTests {
    /// The evaluation time: results finish in the hour before it.
    static let at = Date(timeIntervalSince1970: 1_900_000_000)

    /// 100 jobs answered by alpha in 10…1000 ms; 10 that fell back from alpha (timeout) to beta; 5
    /// that failed on both (5xx); 1 that failed on a 400 (the request's fault); 1 cancelled; and two
    /// rows outside the window.
    static func dataSet() -> [ResultRow] {
        var rows: [ResultRow] = []
        let minute = 60.0
        for index in 1...100 {
            let latency = Double(index * 10)
            rows.append(
                ResultRow(
                    job: Int64(index), taskClass: "reasoning", model: "alpha", provider: "openai", tier: "primary",
                    latencyMS: latency, queueWaitMS: Double(index), cost: 0.001, tokensIn: 10, tokensOut: 20,
                    finishedAt: at.addingTimeInterval(-Double(index % 50) * minute),
                    trail: [ResultRow.call("alpha", latencyMS: latency, provider: "openai")]))
        }
        for index in 101...110 {
            rows.append(
                ResultRow(
                    job: Int64(index), taskClass: "reasoning", model: "beta", provider: "anthropic", tier: "secondary",
                    latencyMS: 2000, queueWaitMS: 500, cost: 0.002, tokensIn: 10, tokensOut: 20,
                    finishedAt: at.addingTimeInterval(-5 * minute),
                    trail: [
                        ResultRow.call("alpha", outcome: "timeout", latencyMS: 1500, provider: "openai"),
                        ResultRow.call("beta", tier: "secondary", latencyMS: 400, provider: "anthropic"),
                    ]))
        }
        for index in 111...115 {
            rows.append(
                ResultRow(
                    job: Int64(index), status: "failed", priority: "background", model: nil, provider: nil, tier: nil,
                    latencyMS: 800, queueWaitMS: 1000, finishedAt: at.addingTimeInterval(-10 * minute),
                    trail: [
                        ResultRow.call("alpha", outcome: "error", latencyMS: 300, httpStatus: 500, provider: "openai"),
                        ResultRow.call(
                            "beta", tier: "secondary", outcome: "error", latencyMS: 200, httpStatus: 503,
                            provider: "anthropic"),
                    ]))
        }
        rows.append(
            ResultRow(
                job: 116, status: "failed", model: nil, provider: nil, tier: nil, latencyMS: 100,
                finishedAt: at.addingTimeInterval(-minute),
                trail: [ResultRow.call("alpha", outcome: "error", latencyMS: 100, httpStatus: 400, provider: "openai")])
        )
        rows.append(
            ResultRow(
                job: 117, status: "cancelled", model: nil, provider: nil, tier: nil,
                finishedAt: at.addingTimeInterval(-minute),
                trail: [ResultRow.call("alpha", outcome: "cancelled", latencyMS: 50, provider: "openai")]))
        for (job, offset) in [(Int64(118), -2 * 3600.0), (119, 60)] {
            rows.append(
                ResultRow(
                    job: job, model: "alpha", provider: "openai", latencyMS: 99_999, queueWaitMS: 99_999, cost: 9,
                    finishedAt: at.addingTimeInterval(offset),
                    trail: [ResultRow.call("alpha", latencyMS: 99_999, provider: "openai")]))
        }
        return rows
    }

    @Test("job_stats: percentiles, rates, cost and tokens per model, tier, provider and in total")
    func jobStats() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await ResultRow.insert(Self.dataSet(), into: pool)
            let stats = try await ObservabilityStore(pool: pool).jobStats(window: .seconds(3600), at: Self.at)
            func row(_ dimension: String, _ subject: String) throws -> JobStats {
                try #require(stats.first { $0.dimension == dimension && $0.subject == subject })
            }

            let alpha = try row("model", "alpha")
            #expect(alpha.jobs == 100)
            #expect(alpha.latencyP50MS == 505)
            #expect(alpha.latencyP95MS == 950.5)
            #expect(abs((alpha.latencyP99MS ?? 0) - 990.1) < 1e-9)
            #expect(alpha.queueWaitP50MS == 50.5)
            #expect(abs((alpha.queueWaitP95MS ?? 0) - 95.05) < 1e-9)
            #expect(abs((alpha.queueWaitP99MS ?? 0) - 99.01) < 1e-9)
            #expect(alpha.cost == Decimal(string: "0.1"))
            #expect(alpha.costPerRequest == Decimal(string: "0.001"))
            #expect(alpha.tokensIn == 1000 && alpha.tokensOut == 2000)
            #expect(alpha.fallbackRate == 0)

            let beta = try row("model", "beta")
            #expect(beta.jobs == 10)
            #expect(beta.fallbackRate == 1)
            #expect(beta.timeoutRate == 1)
            #expect(try row("tier", "secondary").jobs == 10)
            #expect(try row("provider", "anthropic").jobs == 10)
            #expect(try row("model", "(none)").jobs == 6)

            // Cancelled jobs and rows outside the window are left out.
            let total = try row("total", "all")
            #expect(total.jobs == 116)
            #expect(total.succeeded == 110 && total.failed == 6)
            #expect(abs(total.errorRate - 6.0 / 116) < 1e-12)
            #expect(abs(total.fallbackRate - 15.0 / 116) < 1e-12)
            #expect(abs(total.timeoutRate - 10.0 / 116) < 1e-12)
            #expect(abs(total.jobsPerMinute - 116.0 / 60) < 1e-9)
            let latencies =
                (1...100).map { Double($0 * 10) } + Array(repeating: 2000, count: 10)
                + Array(repeating: 800, count: 5) + [100]
            #expect(abs((total.latencyP95MS ?? 0) - percentileCont(latencies, 0.95)) < 1e-9)
            #expect(abs((total.latencyP50MS ?? 0) - percentileCont(latencies, 0.5)) < 1e-9)
            let background = try row("priority", "background")
            #expect(background.jobs == 5 && background.errorRate == 1)
        }
    }

    @Test("call_stats and model_stats: per-model error, timeout and latency from the trails")
    func callAndModelStats() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await ResultRow.insert(Self.dataSet(), into: pool)
            let store = ObservabilityStore(pool: pool)
            let calls = try await store.callStats(window: .seconds(3600), at: Self.at)
            let alpha = try #require(calls.first { $0.dimension == "model" && $0.subject == "alpha" })
            // 100 answers, 10 timeouts, 5 server errors, 1 bad request (the caller's fault).
            #expect(alpha.calls == 116)
            #expect(alpha.errors == 5)
            #expect(alpha.timeouts == 10)
            #expect(abs(alpha.errorRate - 5.0 / 116) < 1e-12)
            #expect(abs(alpha.timeoutRate - 10.0 / 116) < 1e-12)
            let timed = (1...100).map { Double($0 * 10) } + Array(repeating: 1500, count: 10)
            #expect(alpha.latencyP50MS == percentileCont(timed, 0.5))
            #expect(alpha.latencyP95MS == percentileCont(timed, 0.95))
            #expect(alpha.latencyP99MS == percentileCont(timed, 0.99))
            let primary = try #require(calls.first { $0.dimension == "tier" && $0.subject == "primary" })
            #expect(primary.calls == 116)

            let models = try await store.modelStats(window: .seconds(3600), at: Self.at)
            let beta = try #require(models.first { $0.model == "beta" })
            #expect(beta.calls == 15)
            #expect(beta.errorRate == 5.0 / 15)
            #expect(beta.latencyP50MS == 400)
            #expect(beta.answered == 10)
            #expect(beta.fallbackRate == 1)
            #expect(beta.costPerRequest == Decimal(string: "0.002"))
            #expect(beta.breaker == "closed")
            #expect(models.map(\.model) == ["alpha", "beta"])

            // The same numbers from plain SQL, as an operator would ask.
            let p95 = try await pool.query(
                "SELECT latency_p95_ms FROM switchyard.model_stats('1 hour', $1) WHERE model = 'alpha'", [Self.at]
            ).scalar(Double.self)
            #expect(p95 == percentileCont(timed, 0.95))
        }
    }

    @Test("fell_back: whether the trail's entries that name a model name more than one")
    func fellBack() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let trails: [(String, Bool)] = [
                ("[]", false),
                (#"[{"model": "a"}]"#, false),
                (#"[{"model": "a", "outcome": "timeout"}, {"model": "a"}]"#, false),
                (#"[{"model": "a"}, {"outcome": "postponed"}, {"model": "b"}]"#, true),
                (#"[{"outcome": "postponed"}, {"model": "b"}]"#, false),
                (#"[{"model": null}, {"model": "b"}]"#, false),
                (#"[{"model": "b"}, {"model": "a"}, {"model": "b"}]"#, true),
            ]
            for (trail, expected) in trails {
                let answer = try await pool.query("SELECT switchyard.fell_back($1::jsonb)", [trail]).scalar(Bool.self)
                #expect(answer == expected, "\(trail)")
            }
        }
    }

    @Test("queue_depth counts each partition and names the oldest waiting job; worker_status shows leases")
    func queueAndWorkers() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let interactive = try await store.submit(batch: (0..<3).map { _ in Submission(request: hello) })
            _ = try await store.submit(Submission(request: hello, priority: .background))
            _ = try await store.submit(
                Submission(request: hello, priority: .background, runAt: Date().addingTimeInterval(3600)))
            let claimed = try await store.claim(worker: "w-test", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
            #expect(claimed.map(\.id) == [interactive[0]])
            _ = try await store.heartbeat(
                worker: WorkerIdentity(id: "w-test", concurrency: 4, hostname: "h", pid: 1, version: "t"),
                held: [(claimed[0].id, claimed[0].attempt)], lease: .seconds(30))

            let observability = ObservabilityStore(pool: pool)
            let depth = try await observability.queueDepth()
            #expect(depth.map(\.priority) == ["interactive", "background"])
            #expect(depth[0].queued == 2 && depth[0].running == 1 && depth[0].scheduled == 0)
            #expect(depth[0].oldestJobID == interactive[1])
            #expect((depth[0].oldestWaitSeconds ?? -1) >= 0)
            #expect(depth[1].queued == 1 && depth[1].scheduled == 1 && depth[1].running == 0)

            // Put back to wait for a model (every one of its rule's down): waiting, not scheduled,
            // and its wait counts from when it began to wait.
            try await pool.query(
                """
                UPDATE switchyard.jobs SET run_at = now() + interval '5 seconds', postponed_at = now(),
                       waiting_since = now() - interval '40 seconds'
                WHERE id = $1
                """, [interactive[2]])
            let outage = try await observability.queueDepth()
            #expect(outage[0].queued == 2 && outage[0].scheduled == 0)
            #expect(outage[0].oldestJobID == interactive[2])
            #expect((outage[0].oldestWaitSeconds ?? 0) >= 40)
            // Due again, but not the first due: still the longest waiting.
            try await pool.query(
                "UPDATE switchyard.jobs SET run_at = now() - interval '1 second' WHERE id = $1", [interactive[2]])
            try await pool.query(
                "UPDATE switchyard.jobs SET run_at = now() - interval '2 seconds' WHERE id = $1", [interactive[1]])
            let due = try await observability.queueDepth()
            #expect(due[0].oldestJobID == interactive[2])

            let workers = try await observability.workers()
            let worker = try #require(workers.first { $0.id == "w-test" })
            #expect(worker.inFlight == 1 && worker.leased == 1 && worker.alive)
        }
    }

    @Test("the report puts a retried job's early call in the bucket it ended in, and reads no call time for a job of one bucket")
    func reportBucketsCallsByTheirEnd() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let at = Self.at
            // Created 50 min before `at`; a call failed then, and another answered at the end.
            let early = ResultRow.call("alpha", outcome: "error", latencyMS: 300, httpStatus: 500,
                                       at: at.addingTimeInterval(-3000))
            let late = ResultRow.call("beta", tier: "secondary", latencyMS: 300, at: at.addingTimeInterval(-2))
            // Created and finished in the last bucket; its trail's time (a worker's clock far behind)
            // is not read: its call ended in that bucket.
            let skewed = ResultRow.call("alpha", latencyMS: 300, at: at.addingTimeInterval(-5000))
            try await ResultRow.insert(
                [ResultRow(job: 1, model: "beta", tier: "secondary", latencyMS: 300, finishedAt: at.addingTimeInterval(-1),
                           trail: [early, late],
                           createdAt: at.addingTimeInterval(-3001)),
                 ResultRow(job: 2, model: "alpha", latencyMS: 300, finishedAt: at.addingTimeInterval(-1), trail: [skewed],
                           createdAt: at.addingTimeInterval(-30))], into: pool)
            let series = try await ReportStore(pool: pool).series(window: .seconds(3600), bucket: .seconds(600), at: at)
            let calls = series.models.filter { $0.calls > 0 }.map { ($0.bucket.timeIntervalSince(at), $0.model, $0.calls) }
            #expect(calls.count == 3, "\(calls)")
            #expect(calls.contains { $0 == (-3000, "alpha", 1) }, "\(calls)")  // the early call, 50 min back
            #expect(calls.contains { $0 == (-600, "alpha", 1) }, "\(calls)")  // the skewed one, at its job's end
            #expect(calls.contains { $0 == (-600, "beta", 1) }, "\(calls)")
        }
    }
}
