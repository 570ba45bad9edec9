import Foundation
import Postgres

/// Tenants' limits (`sql/0088`): a pause, and a budget in US dollars per UTC day or calendar
/// month. A tenant paused or over its budget is *held*: its queued jobs, and those it submits,
/// stay in the queue unclaimed until it is resumed, its budget is raised, or a new period begins.
/// Running jobs finish; nothing is lost. And caps on how many of its jobs run at once and start a
/// minute (`sql/0096`): jobs over them wait, queued, until its running ones end or its rate allows.
public enum TenantLimits {
    /// `name` as a shell takes it back, for a command a message suggests: as it is when plain,
    /// else in single quotes (as `switchyard.shell_word` writes it in SQL's messages).
    public static func shellWord(_ name: String) -> String {
        let plain = !name.isEmpty && name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "_.,:@%+=/-".unicodeScalars.contains($0)
        }
        return plain ? name : "'" + name.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    public enum Period: String, Sendable, CaseIterable {
        case day, month

        /// As a person says it: `daily`, `monthly`.
        public var adjective: String { self == .day ? "daily" : "monthly" }
    }

    /// What a pause, a resume, a budget or the housekeeper's round did to a tenant's jobs.
    public struct Change: Sendable, Hashable {
        public var tenant: String
        /// `held`, `still held` (jobs found that were not held yet) or `released`.
        public var change: String
        /// How many jobs it held or released.
        public var jobs: Int
        /// Why the tenant is held (nil when released).
        public var reason: String?

        init(tenant: String, row: PostgresRow) throws {
            self.tenant = tenant
            change = try row.decode("change", as: String?.self) ?? "unchanged"
            jobs = try row.decode("jobs", as: Int?.self) ?? 0
            reason = try row.decode("reason", as: String?.self)
        }
    }

    /// One tenant as `dispatcher tenants` lists it.
    public struct Usage: Sendable, Hashable {
        public var tenant: String
        /// Jobs that may be claimed now or later, jobs held for the tenant's limits, jobs running.
        public var queued: Int
        public var held: Int
        public var running: Int
        /// USD its results cost today and this month (UTC).
        public var spentToday: Decimal
        public var spentThisMonth: Decimal
        public var budget: Decimal?
        public var period: Period?
        public var pausedAt: Date?
        /// Why its jobs are held, as its users read it; nil when they are not.
        public var heldReason: String?
        /// At most this many of its jobs run at once; nil: no cap.
        public var maxRunning: Int?
        /// At most this many of its jobs start a minute; nil: no cap.
        public var maxPerMinute: Int?
        /// Whether its rate lets none of its jobs start now (its bucket holds less than one).
        public var rateSpent = false

        /// What it has spent of its budget's period.
        public var spentInPeriod: Decimal? {
            period.map { $0 == .day ? spentToday : spentThisMonth }
        }

        public var json: JSONValue {
            [
                "tenant": .string(tenant), "queued": .number(Double(queued)), "held": .number(Double(held)),
                "running": .number(Double(running)), "spent_today": .string("\(spentToday)"),
                "spent_this_month": .string("\(spentThisMonth)"),
                "budget": budget.map { .string("\($0)") } ?? .null,
                "budget_period": period.map { .string($0.rawValue) } ?? .null,
                "paused_at": pausedAt.map { .string($0.postgresText) } ?? .null,
                "held_reason": heldReason.map(JSONValue.string) ?? .null,
                "max_running": maxRunning.map { .number(Double($0)) } ?? .null,
                "max_per_minute": maxPerMinute.map { .number(Double($0)) } ?? .null,
            ]
        }
    }

    /// The housekeeper's round: adds the write-backs' spending up, and holds or releases each
    /// tenant's jobs as its limits say now. Returns the changes made.
    public static func enforce(_ pool: PostgresPool) async throws -> [Change] {
        try await pool.query("SELECT * FROM switchyard.enforce_tenant_limits()").map {
            try Change(tenant: try $0.decode("tenant", as: String.self), row: $0)
        }
    }

    /// Pauses `tenant`: returns how many of its queued jobs were held now.
    public static func pause(_ tenant: String, in pool: PostgresPool) async throws -> Int {
        try await pool.query("SELECT switchyard.pause_tenant($1) AS held", [tenant]).scalar(Int.self)
    }

    /// Resumes `tenant`: returns how many of its jobs may run again (none while its budget is spent).
    public static func resume(_ tenant: String, in pool: PostgresPool) async throws -> Int {
        try await pool.query("SELECT switchyard.resume_tenant($1) AS released", [tenant]).scalar(Int.self)
    }

    /// Cancels every job `tenant` has in the queue now, held or not, and asks the workers running
    /// its others to stop them. Returns how many were cancelled, and how many are cancelling.
    public static func cancelJobs(of tenant: String, in pool: PostgresPool) async throws -> (cancelled: Int, cancelling: Int) {
        guard let row = try await pool.query("SELECT * FROM switchyard.cancel_tenant_jobs($1)", [tenant]).first else {
            throw QueueError(.database, "cancel_tenant_jobs returned nothing")
        }
        return (try row.decode("cancelled"), try row.decode("cancelling"))
    }

    /// Sets `tenant`'s budget per `period` (nil: the period its budget has, else a month), or
    /// removes it (`amount` nil). Returns what that did to its jobs.
    public static func setBudget(
        _ tenant: String, _ amount: Decimal?, per period: Period? = nil, in pool: PostgresPool
    ) async throws -> Change {
        let rows = try await pool.query(
            "SELECT * FROM switchyard.set_tenant_budget($1, $2::numeric, $3)",
            [tenant, amount.map { "\($0)" }, period?.rawValue])
        guard let row = rows.first else { throw QueueError(.database, "set_tenant_budget returned nothing") }
        return try Change(tenant: tenant, row: row)
    }

    /// Caps how many of `tenant`'s jobs run at once (nil: removes its cap). Returns how many run now.
    public static func setMaxRunning(_ tenant: String, _ limit: Int?, in pool: PostgresPool) async throws -> Int {
        try await pool.query("SELECT switchyard.set_tenant_max_running($1, $2::integer) AS running", [tenant, limit])
            .scalar(Int.self)
    }

    /// The time between two starts at `perMinute` a minute, as a person reads it: `100 ms`, `1.5 s`, `1 min`.
    public static func startInterval(perMinute: Int) -> String {
        let seconds = 60 / Double(max(perMinute, 1))
        if seconds < 1 { return "\(Int((seconds * 1000).rounded())) ms" }
        if seconds < 60 { return String(format: "%g s", (seconds * 10).rounded() / 10) }
        return "1 min"
    }

    /// Lets at most `limit` of `tenant`'s jobs start a minute (nil: removes its limit).
    public static func setMaxPerMinute(_ tenant: String, _ limit: Int?, in pool: PostgresPool) async throws {
        try await pool.query("SELECT switchyard.set_tenant_max_per_minute($1, $2::integer)", [tenant, limit])
    }

    /// The tenants held now, by name, with how many jobs each has held and why.
    public static func held(in pool: PostgresPool) async throws -> [(tenant: String, jobs: Int, paused: Bool, reason: String)] {
        try await pool.query(
            """
            SELECT l.tenant, l.paused_at IS NOT NULL AS paused, l.held_reason,
                   (SELECT count(*) FROM switchyard.jobs j WHERE j.tenant = l.tenant AND j.held_run_at IS NOT NULL) AS jobs
            FROM switchyard.tenant_limits l WHERE l.held_reason IS NOT NULL ORDER BY l.tenant
            """
        ).map {
            (tenant: try $0.decode("tenant"), jobs: try $0.decode("jobs"), paused: try $0.decode("paused"),
             reason: try $0.decode("held_reason"))
        }
    }

    /// A capped tenant (`sql/0096`) whose due jobs wait for its caps.
    public struct AtCap: Sendable, Hashable {
        public var tenant: String
        /// Its jobs due, unclaimed.
        public var queued: Int
        public var running: Int
        /// Its cap on running jobs, when it runs as many as that.
        public var maxRunning: Int?
        /// Its rate, when it has started as many as that allows now.
        public var maxPerMinute: Int?

        /// `3/3 running`, `600/min`, or both.
        public var caps: String {
            [maxRunning.map { "\(running)/\($0) running" }, maxPerMinute.map { "\($0)/min" }].compactMap { $0 }
                .joined(separator: ", ")
        }
    }

    /// The tenants not held with jobs due waiting for their caps (`sql/0096`), by name: those
    /// running as many jobs as their caps allow, and those whose rate allows no start now.
    public static func atCap(in pool: PostgresPool) async throws -> [AtCap] {
        try await pool.query(
            """
            SELECT c.tenant, c.queued, c.running,
                   CASE WHEN c.running >= c.max_running THEN c.max_running END AS max_running,
                   CASE WHEN c.tokens < 1 THEN c.max_per_minute END AS max_per_minute
            FROM (
                SELECT l.tenant, l.max_running, l.max_per_minute,
                       switchyard.rate_tokens_now(l.max_per_minute, l.rate_tokens, l.rate_at) AS tokens,
                       (SELECT count(*) FROM switchyard.jobs j WHERE j.tenant = l.tenant AND j.lease_owner IS NOT NULL) AS running,
                       (SELECT count(*) FROM switchyard.jobs j
                        WHERE j.tenant = l.tenant AND j.lease_owner IS NULL AND j.held_run_at IS NULL AND j.run_at <= now()) AS queued
                FROM switchyard.tenant_limits l
                WHERE (l.max_running IS NOT NULL OR l.max_per_minute IS NOT NULL) AND l.held_reason IS NULL
            ) c
            WHERE (c.running >= c.max_running OR c.tokens < 1) AND c.queued > 0 ORDER BY c.tenant
            """
        ).map {
            AtCap(
                tenant: try $0.decode("tenant"), queued: try $0.decode("queued"), running: try $0.decode("running"),
                maxRunning: try $0.decode("max_running", as: Int?.self), maxPerMinute: try $0.decode("max_per_minute", as: Int?.self))
        }
    }

    /// Every tenant with jobs in the queue, spending this month, or limits, by name (one, if
    /// `tenant` is given). A submitter's role sees its own tenants only.
    public static func usage(in pool: PostgresPool, tenant: String? = nil) async throws -> [Usage] {
        let rows = try await pool.query(
            """
            WITH month AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date AS first,
                                  (now() AT TIME ZONE 'UTC')::date AS today),
            live AS (
                SELECT j.tenant,
                       count(*) FILTER (WHERE j.lease_owner IS NULL AND j.held_run_at IS NULL) AS queued,
                       count(*) FILTER (WHERE j.held_run_at IS NOT NULL) AS held,
                       count(*) FILTER (WHERE j.lease_owner IS NOT NULL) AS running
                FROM switchyard.jobs j WHERE j.tenant IS NOT NULL AND ($1::text IS NULL OR j.tenant = $1)
                GROUP BY j.tenant
            ), spent AS (
                SELECT s.tenant, coalesce(sum(s.cost) FILTER (WHERE s.day = month.today), 0) AS today,
                       sum(s.cost) AS this_month
                FROM (SELECT tenant, day, cost FROM switchyard.tenant_spend
                      UNION ALL SELECT tenant, day, cost FROM switchyard.tenant_spend_pending) s, month
                WHERE s.day >= month.first AND ($1::text IS NULL OR s.tenant = $1) GROUP BY s.tenant
            ), named AS (
                SELECT tenant FROM live UNION SELECT tenant FROM spent
                UNION SELECT tenant FROM switchyard.tenant_limits
            )
            SELECT n.tenant, coalesce(live.queued, 0) AS queued, coalesce(live.held, 0) AS held,
                   coalesce(live.running, 0) AS running, coalesce(spent.today, 0) AS spent_today,
                   coalesce(spent.this_month, 0) AS spent_this_month, l.budget, l.budget_period, l.paused_at,
                   l.held_reason, l.max_running, l.max_per_minute,
                   coalesce(switchyard.rate_tokens_now(l.max_per_minute, l.rate_tokens, l.rate_at) < 1, false) AS rate_spent
            FROM named n
            LEFT JOIN live ON live.tenant = n.tenant
            LEFT JOIN spent ON spent.tenant = n.tenant
            LEFT JOIN switchyard.tenant_limits l ON l.tenant = n.tenant
            WHERE $1::text IS NULL OR n.tenant = $1
            ORDER BY n.tenant
            """, [tenant])
        return try rows.map { row in
            Usage(
                tenant: try row.decode("tenant"), queued: try row.decode("queued"), held: try row.decode("held"),
                running: try row.decode("running"), spentToday: try row.decode("spent_today"),
                spentThisMonth: try row.decode("spent_this_month"), budget: try row.decode("budget", as: Decimal?.self),
                period: try row.decode("budget_period", as: String?.self).flatMap(Period.init(rawValue:)),
                pausedAt: try row.decode("paused_at", as: Date?.self),
                heldReason: try row.decode("held_reason", as: String?.self),
                maxRunning: try row.decode("max_running", as: Int?.self),
                maxPerMinute: try row.decode("max_per_minute", as: Int?.self),
                rateSpent: try row.decode("rate_spent", as: Bool.self))
        }
    }
}
