import Foundation
import Postgres

/// Reads what the fleet did and what is waiting: the SQL of `sql/0006_observability.sql` for
/// `dispatcher status`, `top` and `report`. Every call is one statement.
public struct ObservabilityStore: Sendable {
    /// The pool every statement runs on.
    public let pool: PostgresPool

    /// A store over a pool.
    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// Per-model calls, latency, errors, cost and breaker over the window ending at `at`
    /// (default: the database's now).
    public func modelStats(window: Duration, at: Date? = nil) async throws -> [ModelStats] {
        try await pool.query(
            "SELECT * FROM switchyard.model_stats(make_interval(secs => $1), coalesce($2::timestamptz, now()))",
            [window.seconds, at]
        ).map(ModelStats.init(row:))
    }

    /// Finished jobs over the window by total, priority, model, provider and tier.
    public func jobStats(window: Duration, at: Date? = nil) async throws -> [JobStats] {
        try await pool.query(
            "SELECT * FROM switchyard.job_stats(make_interval(secs => $1), coalesce($2::timestamptz, now()))",
            [window.seconds, at]
        ).map(JobStats.init(row:))
    }

    /// Model calls over the window by total, priority, model, provider and tier.
    public func callStats(window: Duration, at: Date? = nil) async throws -> [CallStats] {
        try await pool.query(
            "SELECT * FROM switchyard.call_stats(make_interval(secs => $1), coalesce($2::timestamptz, now()))",
            [window.seconds, at]
        ).map(CallStats.init(row:))
    }

    /// Both partitions of the live queue.
    public func queueDepth() async throws -> [QueueDepth] {
        try await pool.query("SELECT * FROM switchyard.queue_depth").map(QueueDepth.init(row:))
    }

    /// Per partition (interactive first), the three tenants with most jobs due and unclaimed,
    /// most first (a nil tenant: jobs submitted without one).
    public func queuedByTenant() async throws -> [QueuedByTenant] {
        let rows = try await pool.query(
            """
            SELECT priority, tenant, n, tenants, total, untenanted FROM (
                SELECT j.priority, j.tenant, count(*) AS n,
                       row_number() OVER (PARTITION BY j.priority ORDER BY count(*) DESC, j.tenant) AS rank,
                       count(*) OVER (PARTITION BY j.priority) AS tenants,
                       (sum(count(*)) OVER (PARTITION BY j.priority))::bigint AS total,
                       bool_or(j.tenant IS NULL) OVER (PARTITION BY j.priority) AS untenanted
                FROM switchyard.jobs j WHERE j.lease_owner IS NULL AND j.run_at <= now()
                GROUP BY j.priority, j.tenant) t
            WHERE rank <= 3 ORDER BY priority DESC, n DESC, tenant
            """)
        var result: [QueuedByTenant] = []
        for row in rows {
            let priority = try row.decode("priority", as: String.self)
            let entry = (tenant: try row.decode("tenant", as: String?.self), queued: try row.decode("n", as: Int.self))
            if result.last?.priority != priority {
                result.append(
                    QueuedByTenant(
                        priority: priority, tenants: [], otherTenants: try row.decode("tenants", as: Int.self),
                        otherQueued: try row.decode("total", as: Int.self),
                        othersWithoutTenant: try row.decode("untenanted", as: Bool.self)))
            }
            result[result.count - 1].tenants.append(entry)
            result[result.count - 1].otherTenants -= 1
            result[result.count - 1].otherQueued -= entry.queued
            if entry.tenant == nil { result[result.count - 1].othersWithoutTenant = false }
        }
        return result
    }

    /// A partition's queued jobs by tenant: the three with most, and how many more tenants have
    /// how many more jobs (a walkthrough's fourth tenant, 938 jobs, was left out without a word).
    public struct QueuedByTenant: Sendable {
        public var priority: String
        public var tenants: [(tenant: String?, queued: Int)]
        public var otherTenants: Int
        public var otherQueued: Int
        /// Whether the other tenants' jobs include jobs without a tenant (counted as one more).
        public var othersWithoutTenant: Bool
    }

    /// Jobs taken back from their workers in the window because their leases ran out (the
    /// `lease_expired` entries of the trails of jobs finished in the window or still live), by
    /// the worker they were taken from, most first. `failed`: of them, those that ended failed
    /// there, their attempts spent (an SQL walkthrough's `max_attempts` 1 jobs were left out).
    public func rescues(window: Duration, at: Date? = nil) async throws -> [(worker: String, jobs: Int, failed: Int)] {
        try await pool.query(
            """
            SELECT e->>'worker' AS worker, count(*) AS jobs,
                   count(*) FILTER (WHERE trails.failed_at = (e->>'attempt')::int) AS failed
            FROM (SELECT r.attempts, CASE WHEN r.status = 'failed' THEN r.attempt_count END AS failed_at
                  FROM switchyard.results r
                  WHERE r.finished_at > coalesce($2::timestamptz, now()) - make_interval(secs => $1)
                    AND (r.attempt_count > 1 OR r.status = 'failed')
                  UNION ALL
                  SELECT j.attempts, NULL FROM switchyard.jobs j WHERE j.attempts <> '[]') trails,
                 jsonb_array_elements(trails.attempts) e
            WHERE e->>'outcome' = 'lease_expired'
              AND (e->>'at')::timestamptz > coalesce($2::timestamptz, now()) - make_interval(secs => $1)
              AND (e->>'at')::timestamptz <= coalesce($2::timestamptz, now())
            GROUP BY 1 ORDER BY 2 DESC, 1
            """,
            [window.seconds, at]
        ).map {
            (worker: try $0.decode("worker", as: String?.self) ?? "?", jobs: try $0.decode("jobs", as: Int.self),
             failed: try $0.decode("failed", as: Int.self))
        }
    }

    /// The job running longest (claimed earliest and not yet written back), its worker, and for
    /// how many seconds; nil when none runs.
    public func longestRunning() async throws -> (job: Int64, worker: String, seconds: Double)? {
        try await pool.query(
            """
            SELECT id, lease_owner, extract(epoch FROM now() - claimed_at)::double precision AS seconds
            FROM switchyard.jobs WHERE lease_owner IS NOT NULL AND claimed_at IS NOT NULL
            ORDER BY claimed_at, id LIMIT 1
            """
        ).first.map {
            (job: try $0.decode("id", as: Int64.self), worker: try $0.decode("lease_owner", as: String.self),
             seconds: try $0.decode("seconds", as: Double.self))
        }
    }

    /// Whether each catalog model is enabled, by name.
    public func modelsEnabled() async throws -> [String: Bool] {
        Dictionary(
            try await pool.query("SELECT name, enabled FROM switchyard.models")
                .map { (try $0.decode("name", as: String.self), try $0.decode("enabled", as: Bool.self)) },
            uniquingKeysWith: { first, _ in first })
    }

    /// Every worker with a row in `switchyard.workers` (live or not yet pruned).
    public func workers() async throws -> [WorkerStatus] {
        try await pool.query("SELECT * FROM switchyard.worker_status").map(WorkerStatus.init(row:))
    }
}
