import Foundation
import Postgres

/// The background backlog at a glance: how much waits, whether it may run now, when it may, and
/// when it will be done at the current pace.
public struct BacklogStatus: Sendable {
    /// Jobs that may run now (`run_at` passed), not running.
    public var queued: Int
    /// Jobs set to run later: submitted with a later `run_at`, or put back by a worker until a
    /// cheaper price (postponed), or until a retry's backoff ends.
    public var waiting: Int
    /// The earliest `run_at` among the waiting.
    public var nextWaitingAt: Date?
    /// Of the waiting, those a worker put off (no model of their rule within a ceiling), as against
    /// those submitted to run later.
    public var putOff = 0
    /// Jobs held for their tenant's limits (paused, or its budget spent: `sql/0088`), in neither
    /// of the above: they run when their tenant is released.
    public var held = 0
    public var running: Int
    public var gate: BackgroundGate
    /// Background jobs workers finished (succeeded or failed) per minute over the last 10 minutes.
    public var perMinute: Double
    /// The same over the last minute: its finishes over the time since the first of them (5 s at
    /// least), so seconds into a drain its pace is not taken for a minute's.
    public var lastMinute: Double = 0
    public var policy: BackgroundPolicy
    /// Workers whose heartbeat is younger than their lease.
    public var liveWorkers: Int
    /// Rules with a background ceiling of their own (settings.background_max_cost_per_1k), by name:
    /// shown beside the global one (a cost walkthrough found them nowhere).
    public var ruleCeilings: [(rule: String, ceiling: String)] = []

    /// The pace the drain time is reckoned at: the last minute's when it is faster (a drain or
    /// a cheap window just began: a figures audit read "drained by" 40 minutes off from the
    /// ten-minute average, the backlog gone in 45 s), else the ten minutes'.
    public var pace: Double { max(perMinute, lastMinute) }

    /// When the queued and running jobs would be done at the current pace (nil when they are not
    /// moving: the gate closed, nothing finished lately, or no worker running). Jobs waiting to
    /// run later are not counted: they come due at their own times.
    public var drainedAt: Date? {
        guard queued + running > 0 else { return Date() }
        // Nothing running and nothing finished in the last minute: not draining, whatever the ten
        // minutes before did (an on-call walkthrough's backlog, starved by an interactive surge,
        // was "drained by" a time it could not meet).
        guard pace > 0, gate.isOpen, liveWorkers > 0, running > 0 || lastMinute > 0 else { return nil }
        return Date().addingTimeInterval(Double(queued + running) / pace * 60)
    }

    public static func load(_ pool: PostgresPool) async throws -> BacklogStatus {
        guard let row = try await pool.query(
            """
            SELECT q.queued, q.waiting, q.running, q.next_waiting_at, q.put_off, q.held,
                   -- What workers finished: a mass cancel or expiry is no pace of draining.
                   (SELECT count(*) FROM switchyard.results
                    WHERE priority = 'background' AND status IN ('succeeded', 'failed')
                          AND finished_at > now() - interval '10 minutes') / 10.0 AS per_minute,
                   (SELECT coalesce(count(*) * 60.0 / greatest(5, extract(epoch FROM now() - min(finished_at))), 0)
                    FROM switchyard.results
                    WHERE priority = 'background' AND status IN ('succeeded', 'failed')
                          AND finished_at > now() - interval '1 minute') AS last_minute,
                   (SELECT count(*) FROM switchyard.workers w
                    WHERE w.heartbeat_at + make_interval(secs => coalesce(w.lease_seconds, 30)) > now()) AS live_workers
            -- One pass over the partition (queued, waiting and running as switchyard.queue_depth
            -- counts them): a backlog of 1,000,000 was read three times per status.
            FROM (SELECT count(*) FILTER (WHERE j.lease_owner IS NULL AND j.held_run_at IS NULL
                                                AND (j.run_at <= now() OR j.waiting_since IS NOT NULL)) AS queued,
                         count(*) FILTER (WHERE j.lease_owner IS NULL AND j.held_run_at IS NULL AND j.run_at > now()
                                                AND j.waiting_since IS NULL) AS waiting,
                         count(*) FILTER (WHERE j.lease_owner IS NOT NULL) AS running,
                         count(*) FILTER (WHERE j.held_run_at IS NOT NULL) AS held,
                         min(j.run_at) FILTER (WHERE j.lease_owner IS NULL AND j.held_run_at IS NULL
                                                     AND j.run_at > now()) AS next_waiting_at,
                         -- Put off for a price, not those waiting for a model of their rule to come back.
                         count(*) FILTER (WHERE j.postponed_at IS NOT NULL AND j.lease_owner IS NULL AND j.run_at > now()
                                                AND j.held_run_at IS NULL
                                                AND coalesce(j.waiting_reason, '') NOT LIKE 'no model available now:%')
                             AS put_off
                  FROM switchyard.jobs_background j) q
            """
        ).first else {
            throw QueueError(.database, "the backlog query returned nothing")
        }
        let ruleCeilings = try await pool.query(
            """
            SELECT task_class, settings ->> 'background_max_cost_per_1k' AS ceiling FROM switchyard.routes
            WHERE jsonb_typeof(settings -> 'background_max_cost_per_1k') = 'number' ORDER BY task_class
            """
        ).map { (rule: try $0.decode("task_class", as: String.self), ceiling: try $0.decode("ceiling", as: String.self)) }
        return BacklogStatus(
            queued: try row.decode("queued"), waiting: try row.decode("waiting"),
            nextWaitingAt: try row.decode("next_waiting_at", as: Date?.self),
            putOff: try row.decode("put_off"), held: try row.decode("held"), running: try row.decode("running"),
            gate: try await BackgroundGate.check(pool),
            perMinute: Double(truncating: try row.decode("per_minute", as: Decimal.self) as NSNumber),
            lastMinute: Double(truncating: try row.decode("last_minute", as: Decimal.self) as NSNumber),
            policy: try await BackgroundPolicy.load(pool), liveWorkers: try row.decode("live_workers"),
            ruleCeilings: ruleCeilings
        )
    }

    /// The figures as JSON (`status --json`'s background object, `background status --json`).
    public var json: JSONValue {
        var json: [String: JSONValue] = [
            "queued": .number(Double(queued)), "running": .number(Double(running)), "waiting": .number(Double(waiting)),
            "put_off": .number(Double(putOff)), "held": .number(Double(held)),
            "gate_open": .bool(gate.isOpen), "gate_reason": .string(gate.reason),
            "per_minute": .number(perMinute), "last_minute": .number((lastMinute * 10).rounded() / 10),
            "paused": .bool(policy.paused),
            "max_cost_per_1k": policy.maxCostPer1K.map { .string($0.description) } ?? .null,
            "tiers": policy.tiers.map { .array($0.sorted().map(JSONValue.string)) } ?? .null,
            "rule_ceilings": .object(Dictionary(
                ruleCeilings.map { ($0.rule, JSONValue.string($0.ceiling)) }, uniquingKeysWith: { first, _ in first })),
        ]
        if let next = gate.nextOpenAt { json["next_cheap_window"] = .string(next.postgresText) }
        if let next = nextWaitingAt { json["next_waiting_at"] = .string(next.postgresText) }
        if let done = drainedAt { json["drained_by"] = .string(done.postgresText) }
        if let drain = policy.drainUntil, drain > Date() { json["draining_until"] = .string(drain.postgresText) }
        return .object(json)
    }

    /// Lines for `dispatcher status` and `dispatcher background status`.
    public var lines: [String] {
        var lines = ["background backlog: \(queued) queued, \(running) running, \(waiting) waiting to run later"]
        if let next = nextWaitingAt {
            lines[0] += " (the next at \(next.readableUTC))"
        }
        if held > 0 { lines[0] += ", \(held) held for their tenants (dispatcher tenants)" }
        // A dash, not brackets: reasons carry their own ("paused (dispatcher background resume)").
        var gateLine = "  gate: " + (gate.isOpen ? "open" : "closed") + " — \(gate.reason)"
        // A price window's start, or when a cheap model's open breaker lets a probe through
        // (sql/0079): "next cheap window" named a breaker's half-open time as a window.
        if let next = gate.nextOpenAt { gateLine += "; it may open at \(next.readableUTC)" }
        // The gate opens for all when one model is within a ceiling: a job whose rule has none waits
        // (a cost walkthrough read "open — chat-fast is within…" beside 12 jobs its rules held back).
        if gate.isOpen, putOff > 0, !policy.paused {
            gateLine += " (for the fleet: a job whose rule has no model within it is put off; route --explain says why)"
        }
        lines.append(gateLine)
        var ceiling = "  ceiling: " + (policy.maxCostPer1K.map { "$\($0)/1K" } ?? "none")
        if !ruleCeilings.isEmpty {
            ceiling += " (" + ruleCeilings.map { "rule \($0.rule): $\($0.ceiling)/1K" }.joined(separator: ", ") + ")"
        }
        if let tiers = policy.tiers { ceiling += ", tiers \(tiers.sorted().joined(separator: ","))" }
        if let drain = policy.drainUntil, drain > Date() { ceiling += ", draining until \(drain.readableUTC)" }
        if policy.paused { ceiling += ", PAUSED" }
        lines.append(ceiling)
        let pace = "  pace: \(String(format: "%.1f", perMinute)) jobs/min over the last 10 minutes"
        if policy.paused {
            lines.append("\(pace); paused: nothing starts until dispatcher background resume")
        } else if queued == 0 {
            lines.append("\(pace); nothing queued now")
        } else if let done = drainedAt {
            let recent = lastMinute > perMinute ? ", \(Int(lastMinute.rounded()))/min in the last minute" : ""
            lines.append(
                "\(pace)\(recent); the \(queued + running) queued and running drained by \(done.readableUTC)")
        } else if liveWorkers == 0 {
            // "not draining now" beside a drain's "draining until …" read as a contradiction.
            lines.append("\(pace); no worker is running: nothing starts until one does")
        } else if gate.isOpen {
            // Seconds into a drain nothing has finished yet: "not draining now" said the opposite.
            lines.append("\(pace); no job finished lately to reckon a drain time by")
        } else {
            lines.append("\(pace); not draining now")
        }
        return lines
    }
}
