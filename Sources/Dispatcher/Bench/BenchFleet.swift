import Foundation
import Postgres
import QueueModel

/// What the queue benchmarks share: fresh databases, the benchmark catalog, worker processes,
/// and the results to time them by.
struct BenchFleet {
    let context: BenchContext

    /// A simulated catalog: `instant` answers at once (the default rule) with two tokens, the
    /// answer the raw-SQL ceiling writes (a no-op job: the benchmark measures the queue and
    /// routing, not a model); `slow` after about 200 ms (class `slow`).
    static let catalog = """
        {"models": {
           "instant": {"provider": "simulated", "tier": "cheap", "price_per_1k_input": 0.0001,
                       "price_per_1k_output": 0.0002,
                       "settings": {"mode": "instant", "output_tokens_min": 2, "output_tokens_max": 2}},
           "slow":    {"provider": "simulated", "tier": "cheap", "price_per_1k_input": 0.0001,
                       "price_per_1k_output": 0.0002,
                       "settings": {"latency_p50_ms": 200, "latency_p95_ms": 220, "error_rate": 0, "rate_limit_rate": 0}}},
         "routing_rules": {"default": {"primary": "instant"}, "slow": {"primary": "slow"}}}
        """

    /// A new, migrated database with the benchmark catalog, named for the scenario.
    /// - Parameter keeping: other databases of this scenario, still in use, that stay.
    func freshDatabase(_ name: String, keeping: [String] = []) async throws -> PostgresConfiguration {
        let database = "switchyard_bench_\(name)"
        let admin = try await PostgresConnection.connect(context.configuration)
        // Earlier scenarios' databases go first: autovacuum on their dead rows would take CPU
        // from this one's measurement.
        let earlier = try await admin.query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'switchyard\\_bench\\_%'")
        for row in earlier {
            let name = try row.decode("datname", as: String.self)
            if keeping.contains(where: { "switchyard_bench_\($0)" == name }) { continue }
            try await admin.query("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        }
        try await admin.query("CREATE DATABASE \(database)")
        await admin.close()
        let configuration = context.configuration.withDatabase(database)
        let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
        try await Migrator().migrate(pool)
        _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
        await pool.close()
        return configuration
    }

    /// Where the workers' output goes.
    static let workerLog = FileManager.default.temporaryDirectory.appending(path: "switchyard-bench-workers.log").path

    /// Starts worker processes; their output goes to `workerLog`.
    static func startWorkers(
        _ count: Int, concurrency: Int, database: PostgresConfiguration, extra: [String] = []
    ) throws -> [ChildProcess] {
        try LocalWorkers.start(
            count, concurrency: concurrency, database: database, extra: extra, log: workerLog, idPrefix: "bench"
        )
    }

    /// Stops workers gracefully and waits for them.
    static func stop(_ workers: [ChildProcess]) async {
        await LocalWorkers.stop(workers)
    }

    /// Waits until `count` results exist, or `limit` passes: then it throws, or returns false
    /// when `throwing` is off.
    ///
    /// It adds up the job ids that the `switchyard_results` notifications carry, and counts the
    /// table only when they reach the target (or after a reconnect, or 5 s after the last count).
    /// Counting the results every 100 ms instead cost the drain it measured a third of a core
    /// by 100,000 results. A notification for a row the last count already saw is added again;
    /// that only brings the next count forward.
    @discardableResult
    static func waitForResults(
        _ pool: PostgresPool, count: Int, limit: Duration = .seconds(1800), throwing: Bool = true
    ) async throws -> Bool {
        let notifications = try await pool.listen(on: ["switchyard_results"])
        @Sendable func counted() async throws -> Int {
            try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self)
        }
        let start = try await counted()
        var finished = start >= count
        if !finished {
            finished = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    try await Task.sleep(for: limit)
                    return false
                }
                group.addTask {
                    let clock = ContinuousClock()
                    var confirmed = start
                    var announced = 0
                    var countedAt = clock.now
                    for await event in notifications {
                        switch event {
                        case .notification(let notification): announced += notification.payload.split(separator: ",").count
                        case .reconnected: announced = count  // some were lost: count now
                        case .disconnected: continue
                        }
                        if confirmed + announced >= count || clock.now - countedAt >= .seconds(5) {
                            confirmed = try await counted()
                            announced = 0
                            countedAt = clock.now
                            if confirmed >= count { return true }
                        }
                    }
                    return false
                }
                let first = try await group.next() ?? false
                group.cancelAll()
                return first
            }
        }
        if !finished && throwing {
            throw QueueError(.timedOut, "the workers did not finish \(count) jobs in time")
        }
        return finished
    }

    /// Polls `condition` (a query answering one boolean) every 50 ms until it holds.
    /// - Throws: after `limit`, saying what was awaited and where the workers' log is.
    static func waitUntil(
        _ pool: PostgresPool, _ condition: String, _ binds: [(any PostgresEncodable)?] = [],
        limit: Duration = .seconds(60)
    ) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while try await !pool.query(condition, binds).scalar(Bool.self) {
            guard clock.now < deadline else {
                throw QueueError(
                    .timedOut, "waited \(limit) for: \(condition)",
                    hint: "The workers may have stopped: see their log, \(workerLog).")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Jobs per second between the first and the last result (the steady rate, without start-up).
    static func drainRate(_ pool: PostgresPool, where condition: String = "true") async throws -> Double {
        let row = try await pool.query(
            """
            SELECT count(*)::float8 AS jobs, extract(epoch FROM max(finished_at) - min(finished_at))::float8 AS seconds
            FROM switchyard.results WHERE \(condition)
            """
        ).first
        let jobs = try row?.decode("jobs", as: Double.self) ?? 0
        let seconds = try row?.decode("seconds", as: Double?.self) ?? 0
        return seconds > 0 ? jobs / seconds : 0
    }

    /// Inserts `count` interactive (or background) jobs in one statement, server-side.
    static func enqueue(
        _ pool: PostgresPool, count: Int, priority: Priority = .interactive, taskClass: String? = nil,
        tenant: String? = nil
    ) async throws {
        var inserted = 0
        while inserted < count {
            let chunk = min(100_000, count - inserted)
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request, priority, task_class, tenant)
                SELECT jsonb_build_object('messages', jsonb_build_array(
                           jsonb_build_object('role', 'user', 'content', 'benchmark question ' || n))), $2, $3, $4
                FROM generate_series(1, $1) AS n
                """,
                [chunk, priority.rawValue, taskClass, tenant]
            )
            inserted += chunk
        }
    }

    /// Percentiles of a column over results matching a condition.
    static func percentiles(_ pool: PostgresPool, _ column: String, where condition: String) async throws
        -> (p50: Double, p95: Double, p99: Double)
    {
        let row = try await pool.query(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY \(column)) AS p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY \(column)) AS p95,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY \(column)) AS p99
            FROM switchyard.results WHERE \(condition)
            """
        ).first
        return (
            try row?.decode("p50", as: Double?.self) ?? 0, try row?.decode("p95", as: Double?.self) ?? 0,
            try row?.decode("p99", as: Double?.self) ?? 0
        )
    }
}
