import Foundation
import Postgres
import QueueModel

/// Pickup latency (submit → claimed) and interactive isolation from background load.
struct LatencyBenchmarks {
    let fleet: BenchFleet
    let concurrency: Int

    /// The background backlog that `latency` drains under its probes.
    static let loadBacklog = 100_000

    /// Submits `count` interactive jobs one at a time, `gap` apart, and waits for them.
    private func trickle(_ pool: PostgresPool, count: Int, gap: Duration, taskClass: String? = nil) async throws -> [Int64] {
        var ids: [Int64] = []
        let store = QueueStore(pool: pool)
        for _ in 0..<count {
            ids.append(try await store.submit(Submission(request: Submission.prompt("latency probe"), taskClass: taskClass)))
            try await Task.sleep(for: gap)
        }
        return ids
    }

    /// Pickup latency at idle and under load, with LISTEN/NOTIFY and with polling only.
    func latency(report: inout BenchReport) async throws {
        for pollOnly in [false, true] {
            let label = pollOnly ? "--poll-only" : "LISTEN/NOTIFY"
            let database = try await fleet.freshDatabase(pollOnly ? "latency_poll" : "latency_listen")
            let pool = PostgresPool(database, options: .init(maxConnections: 2))
            let processes = try BenchFleet.startWorkers(
                1, concurrency: concurrency, database: database, extra: pollOnly ? ["--poll-only"] : []
            )
            try await Task.sleep(for: .seconds(1))  // let it start and go idle
            let idle = try await trickle(pool, count: 200, gap: .milliseconds(20))
            try await BenchFleet.waitForResults(pool, count: idle.count)
            let quiet = try await BenchFleet.percentiles(pool, "queue_wait_ms", where: "true")
            report.add(Measurement(scenario: "latency", metric: "pickup P50/P95 at idle, \(label)", value: quiet.p50,
                                   unit: "ms", note: String(format: "P95 %.2f ms", quiet.p95)))
            report.add(Measurement(scenario: "latency", metric: "pickup P99 at idle, \(label)", value: quiet.p99, unit: "ms",
                                   note: pollOnly ? nil : "target ≤ 10 ms"))

            // Under load: a background backlog drains while interactive probes arrive. It must
            // outlast the probes (4 s of them): 30,000 jobs ran out after about 3 s here, and the
            // last probes measured an idle worker (with --poll-only, its 1 s poll). And the
            // probes start once the worker is draining it, not while it wakes up to it (with
            // --poll-only, up to a poll later) or claims by the statistics of an empty queue
            // (until the housekeeper analyzes it). What is left of it when the last probe has
            // been claimed is reported.
            try await BenchFleet.enqueue(pool, count: Self.loadBacklog, priority: .background)
            try await BenchFleet.waitUntil(
                pool, "SELECT count(*) >= 10000 FROM switchyard.results WHERE priority = 'background'")
            let loaded = try await trickle(pool, count: 200, gap: .milliseconds(20))
            try await BenchFleet.waitUntil(
                pool, "SELECT count(*) = cardinality($1::bigint[]) FROM switchyard.results WHERE job_id = ANY($1)", [loaded])
            let left = try await pool.query(
                "SELECT count(*) FROM switchyard.jobs WHERE priority = 'background' AND lease_owner IS NULL"
            ).scalar(Int.self)
            let busy = try await BenchFleet.percentiles(
                pool, "queue_wait_ms", where: "priority = 'interactive' AND job_id > \(idle.last ?? 0)")
            report.add(Measurement(
                scenario: "latency", metric: "pickup P99 under load, \(label)", value: busy.p99, unit: "ms",
                note: String(format: "P50 %.2f ms; ", busy.p50)
                    + (left > 0 ? "\(left) background jobs still queued after the last probe"
                        : "the backlog ran out before the last probe: not all of them under load")))
            await BenchFleet.stop(processes)
            await pool.close()
        }
    }

    /// One tenant's backlog of slow jobs queued, then a few jobs of each of five others: how long
    /// the few wait, with the claim's shares among tenants (`fair_tenants`, `sql/0082`) and, as
    /// the baseline of the same run, with the queue's order alone.
    func tenants(report: inout BenchReport, backlog: Int = 2_000, few: Int = 10) async throws {
        let small = (1...5).map { "small-\($0)" }
        for fair in [false, true] {
            let database = try await fleet.freshDatabase(fair ? "tenants_fair" : "tenants_ordered")
            let pool = PostgresPool(database, options: .init(maxConnections: 2))
            try await pool.query("UPDATE switchyard.settings SET value = $1 WHERE name = 'fair_tenants'", [String(fair)])
            try await BenchFleet.enqueue(pool, count: backlog, taskClass: "slow", tenant: "noisy")
            for tenant in small {
                try await BenchFleet.enqueue(pool, count: few, taskClass: "slow", tenant: tenant)
            }
            let processes = try BenchFleet.startWorkers(1, concurrency: concurrency, database: database)
            try await BenchFleet.waitForResults(pool, count: backlog + few * small.count)
            await BenchFleet.stop(processes)
            let waits = try await BenchFleet.percentiles(pool, "queue_wait_ms", where: "tenant <> 'noisy'")
            let noisy = try await BenchFleet.percentiles(pool, "queue_wait_ms", where: "tenant = 'noisy'")
            report.add(Measurement(
                scenario: "tenants", metric: "small tenants' wait P50, " + (fair ? "shared" : "queue order"),
                value: waits.p50, unit: "ms",
                note: String(format: "P99 %.0f ms; 5 tenants × %d behind one tenant's %d (its own P50 %.0f ms)",
                             waits.p99, few, backlog, noisy.p50)
                    + (fair ? "" : "; fair_tenants off: the baseline")))
            await pool.close()
        }
    }

    /// Every slot busy with slow background calls and a deep background backlog; interactive
    /// jobs arriving at a steady rate: how long they wait.
    func isolation(report: inout BenchReport, backlog: Int = 100_000) async throws {
        let database = try await fleet.freshDatabase("isolation")
        let pool = PostgresPool(database, options: .init(maxConnections: 2))
        defer { Task { await pool.close() } }
        try await BenchFleet.enqueue(pool, count: backlog, priority: .background, taskClass: "slow")
        let processes = try BenchFleet.startWorkers(1, concurrency: concurrency, database: database)
        try await Task.sleep(for: .seconds(2))  // every background slot is busy by now
        let probes = try await trickle(pool, count: 300, gap: .milliseconds(50))
        try await BenchFleet.waitUntil(
            pool, "SELECT count(*) >= $1 FROM switchyard.results WHERE priority = 'interactive'", [probes.count])
        await BenchFleet.stop(processes)
        let waits = try await BenchFleet.percentiles(pool, "queue_wait_ms", where: "priority = 'interactive'")
        report.add(Measurement(
            scenario: "isolation", metric: "interactive wait P50, \(backlog) background queued", value: waits.p50,
            unit: "ms"))
        report.add(Measurement(
            scenario: "isolation", metric: "interactive wait P99, \(backlog) background queued", value: waits.p99,
            unit: "ms", note: "target ≤ 50 ms"))
    }
}
