import Foundation
import Postgres
import QueueModel

/// The queue's own figures: enqueue and drain rates against the raw-SQL ceiling, scaling, and
/// the 1M-backlog and held-snapshot cases.
struct QueueBenchmarks {
    let fleet: BenchFleet
    let jobs: Int
    let workers: Int
    let concurrency: Int

    // MARK: throughput and ceiling

    /// Enqueue (single-row submits from 8 connections, then the bulk CLI path) and drain (worker
    /// processes with routing and write-back), then the same drain as raw SQL.
    func throughput(report: inout BenchReport) async throws {
        let database = try await fleet.freshDatabase("throughput")
        let pool = PostgresPool(database, options: .init(maxConnections: 8))
        defer { Task { await pool.close() } }

        // Single-row SQL submits from 8 connections, one round trip each.
        let singleCount = min(jobs / 5, 20_000)
        let clock = ContinuousClock()
        var started = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for connection in 0..<8 {
                group.addTask {
                    for index in stride(from: connection, to: singleCount, by: 8) {
                        try await pool.query(
                            "SELECT switchyard.submit($1::jsonb)",
                            [#"{"messages":[{"role":"user","content":"single \#(index)"}]}"#]
                        )
                    }
                }
            }
            try await group.waitForAll()
        }
        let singleRate = Double(singleCount) / (clock.now - started).seconds
        report.add(Measurement(scenario: "throughput", metric: "enqueue, single-row submits, 8 connections",
                               value: singleRate, unit: "jobs/s"))

        // The bulk CLI path: dispatcher submit --file.
        let file = FileManager.default.temporaryDirectory.appending(path: "switchyard-bench-\(UUID().uuidString).jsonl")
        var text = ""
        text.reserveCapacity(jobs * 60)
        for index in 0..<(jobs - singleCount) {
            text += #"{"messages":[{"role":"user","content":"bulk \#(index)"}]}"# + "\n"
        }
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = database.effectiveConnectionString
        let dispatcher = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        started = clock.now
        let child = try ChildProcess.spawn(
            dispatcher, ["submit", "--file", file.path], environment: environment, standardOutput: .discard
        )
        let status = try await BlockingWork.run { child.wait() }
        guard status == 0 else { throw QueueError(.database, "dispatcher submit --file exited \(status)") }
        report.add(Measurement(scenario: "throughput", metric: "enqueue, dispatcher submit --file (bulk)",
                               value: Double(jobs - singleCount) / (clock.now - started).seconds, unit: "jobs/s"))

        // Drain with routing and write-back, then the ceiling: the same claim → write result →
        // delete cycle as raw SQL (pgbench), with the same batch size and connections, on the
        // same number of jobs. Three rounds of each, alternated: on a shared machine either can
        // land on a slow minute, and the median of each is steadier than one run.
        // Each starts with no results and a vacuumed, analyzed queue, as a queue in service is
        // (autovacuum catching up on 100,000 new rows would otherwise land inside one of them).
        @Sendable func fill(enqueue: Bool) async throws {
            try await pool.query("DELETE FROM switchyard.results")
            if enqueue { try await BenchFleet.enqueue(pool, count: jobs) }
            try await pool.query("VACUUM ANALYZE switchyard.jobs_interactive, switchyard.results")
        }
        var drains: [Double] = []
        var ceilings: [Double] = []
        for round in 0..<3 {
            try await fill(enqueue: round > 0)  // the first round drains what was just submitted
            let workerProcesses = try BenchFleet.startWorkers(workers, concurrency: concurrency, database: database)
            try await BenchFleet.waitForResults(pool, count: jobs)
            await BenchFleet.stop(workerProcesses)
            drains.append(try await BenchFleet.drainRate(pool))

            try await fill(enqueue: true)
            ceilings.append(try await rawSQLDrain(database, pool: pool))
        }
        report.add(Measurement(
            scenario: "throughput", metric: "drain, \(workers) workers × \(concurrency), routing + write-back",
            value: drains.sorted()[1], unit: "jobs/s", baseline: ceilings.sorted()[1], baselineName: "raw SQL ceiling",
            note: "medians of 3 rounds each, alternated; drains " + drains.map { String(Int($0)) }.joined(separator: "/")
                + ", ceilings " + ceilings.map { String(Int($0)) }.joined(separator: "/")))
    }

    /// Drains the queue with pgbench running the claim and complete statements as plain SQL.
    func rawSQLDrain(_ database: PostgresConfiguration, pool: PostgresPool) async throws -> Double {
        let script = """
            WITH picked AS (
                SELECT id FROM switchyard.jobs_interactive
                WHERE lease_owner IS NULL AND run_at <= now()
                ORDER BY run_at, id LIMIT \(concurrency) FOR NO KEY UPDATE SKIP LOCKED)
            UPDATE switchyard.jobs_interactive j
            SET lease_owner = 'ceiling-' || :client_id, lease_expires_at = now() + interval '30 seconds',
                attempt = j.attempt + 1, claimed_at = now()
            FROM picked WHERE j.id = picked.id;
            WITH finished AS (
                DELETE FROM switchyard.jobs_interactive j WHERE j.lease_owner = 'ceiling-' || :client_id RETURNING j.*)
            INSERT INTO switchyard.results (job_id, status, priority, task_class, model, provider, tier, request,
                response, attempts, attempt_count, tokens_in, tokens_out, cost, queue_wait_ms, latency_ms,
                created_at, started_at, worker, metadata)
            SELECT f.id, 'succeeded', f.priority, 'simple', 'instant', 'simulated', 'primary', f.request,
                   '{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":4,"completion_tokens":2}}',
                   f.attempts || '[{"attempt":1,"model":"instant","outcome":"succeeded"}]', f.attempt, 4, 2,
                   0.0000008, extract(epoch FROM f.claimed_at - f.created_at) * 1000, 1, f.created_at, f.claimed_at,
                   'ceiling', f.metadata FROM finished f;
            """
        let transactions = jobs / (workers * concurrency) + 2
        try await fleet.context.on(database).pgbench(
            script: script.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "; ", with: ";\n"),
            clients: workers, transactions: transactions, extendedProtocol: true
        )
        return try await BenchFleet.drainRate(pool, where: "worker = 'ceiling'")
    }

    // MARK: scale, backlog, bloat, memory

    /// Drain rate for 1, 2, 4 and 8 worker processes.
    func scale(report: inout BenchReport) async throws {
        var first: Double?
        for count in [1, 2, 4, 8] {
            let database = try await fleet.freshDatabase("scale_\(count)")
            let pool = PostgresPool(database, options: .init(maxConnections: 2))
            let size = min(jobs, 40_000)
            try await BenchFleet.enqueue(pool, count: size)
            let processes = try BenchFleet.startWorkers(count, concurrency: concurrency, database: database)
            try await BenchFleet.waitForResults(pool, count: size)
            await BenchFleet.stop(processes)
            let rate = try await BenchFleet.drainRate(pool)
            await pool.close()
            first = first ?? rate
            report.add(Measurement(scenario: "scale", metric: "drain, \(count) worker process\(count == 1 ? "" : "es") × \(concurrency)",
                                   value: rate, unit: "jobs/s", baseline: first, baselineName: "1 worker"))
        }
    }

    /// Drain rate with 1,000,000 jobs queued against 10,000: seven rounds of 10,000 results on
    /// each queue, alternated (one round lasts about a second, and this machine's speed drifts
    /// over the minutes the whole takes), the median of each. The small queue is refilled to
    /// 10,000 before each of its rounds; the large one keeps its backlog.
    func backlog(report: inout BenchReport, large: Int = 1_000_000) async throws {
        let round = 10_000
        let sizes = [round, large]
        var queues: [(database: PostgresConfiguration, pool: PostgresPool)] = []
        for queued in sizes {
            let database = try await fleet.freshDatabase("backlog_\(queued)", keeping: sizes.map { "backlog_\($0)" })
            let pool = PostgresPool(database, options: .init(maxConnections: 2))
            try await BenchFleet.enqueue(pool, count: queued)
            try await pool.query("VACUUM ANALYZE switchyard.jobs_interactive")
            queues.append((database, pool))
        }
        // Write out what the enqueues dirtied now, not during the measurement (superusers only).
        _ = try? await queues[0].pool.query("CHECKPOINT")
        var rates: [[Double]] = [[], []]
        for index in 0..<7 {
            for (which, queue) in queues.enumerated() {
                if index > 0 && sizes[which] == round {  // refill: the last round drained it
                    try await BenchFleet.enqueue(queue.pool, count: round)
                    try await queue.pool.query("VACUUM ANALYZE switchyard.jobs_interactive")
                }
                // Stopping workers finish what they hold, so a round may end past its 10,000.
                let before = try await queue.pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self)
                let processes = try BenchFleet.startWorkers(workers, concurrency: concurrency, database: queue.database)
                try await BenchFleet.waitForResults(queue.pool, count: before + round)
                await BenchFleet.stop(processes)
                rates[which].append(try await BenchFleet.drainRate(
                    queue.pool, where: """
                        job_id IN (SELECT job_id FROM switchyard.results ORDER BY finished_at, job_id
                                   OFFSET \(before) LIMIT \(round))
                        """))
            }
        }
        for queue in queues { await queue.pool.close() }
        let medians = rates.map { $0.sorted()[3] }
        report.add(Measurement(
            scenario: "backlog", metric: "drain with \(large) queued", value: medians[1], unit: "jobs/s",
            baseline: medians[0], baselineName: "\(round) queued",
            note: "medians of 7 rounds each, alternated; " + rates[1].map { String(Int($0)) }.joined(separator: "/")
                + " vs " + rates[0].map { String(Int($0)) }.joined(separator: "/")))
    }

    /// Drain rate while another session holds a snapshot open, against the same without, and
    /// the dead tuples left in the hot tables.
    func bloat(report: inout BenchReport, hold: Duration = .seconds(120)) async throws {
        var rates: [Double] = []
        for holding in [false, true] {
            let database = try await fleet.freshDatabase(holding ? "bloat_held" : "bloat_free")
            let pool = PostgresPool(database, options: .init(maxConnections: 2))
            let holder = try await PostgresConnection.connect(database)
            if holding {
                try await holder.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
                try await holder.query("SELECT count(*) FROM switchyard.results")
            }
            // Keep the queue busy for the whole hold: enqueue more than the workers drain in it.
            let size = min(jobs, 100_000)
            try await BenchFleet.enqueue(pool, count: size)
            let deadBefore = try await deadTuples(pool)
            let processes = try BenchFleet.startWorkers(workers, concurrency: concurrency, database: database)
            try await BenchFleet.waitForResults(pool, count: size, limit: hold, throwing: false)
            await BenchFleet.stop(processes)
            let rate = try await BenchFleet.drainRate(pool)
            let deadAfter = try await deadTuples(pool)
            if holding { try await holder.query("ROLLBACK") }
            await holder.close()
            await pool.close()
            rates.append(rate)
            report.add(Measurement(
                scenario: "bloat", metric: holding ? "dead tuples in jobs, snapshot held" : "dead tuples in jobs, no snapshot",
                value: Double(deadAfter), unit: "rows", note: "before: \(deadBefore)"))
        }
        report.add(Measurement(scenario: "bloat", metric: "drain with a snapshot held \(Int(hold.seconds)) s", value: rates[1],
                               unit: "jobs/s", baseline: rates[0], baselineName: "no snapshot"))
    }

    private func deadTuples(_ pool: PostgresPool) async throws -> Int {
        try await pool.query(
            "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables WHERE relname LIKE 'jobs_%'"
        ).scalar(Int.self)
    }

    /// Peak resident memory of one worker at concurrency 256 draining a backlog.
    func memory(report: inout BenchReport) async throws {
        let database = try await fleet.freshDatabase("memory")
        let pool = PostgresPool(database, options: .init(maxConnections: 2))
        defer { Task { await pool.close() } }
        let size = min(jobs, 50_000)
        try await BenchFleet.enqueue(pool, count: size)
        let processes = try BenchFleet.startWorkers(1, concurrency: 256, database: database)
        try await BenchFleet.waitForResults(pool, count: size)
        let status = (try? String(contentsOfFile: "/proc/\(processes[0].pid)/status", encoding: .utf8)) ?? ""
        await BenchFleet.stop(processes)
        let peak = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
            .flatMap { Double($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
        report.add(Measurement(scenario: "memory", metric: "worker peak RSS, concurrency 256, \(size) jobs",
                               value: peak / 1024, unit: "MiB", note: "target ≤ 64 MiB"))
    }
}
