import Foundation
import Postgres

/// The background backlog at a glance: how much waits, whether it may run now, when it may, and
/// when it will be done at the current pace.
public struct BacklogStatus: Sendable {
    public var queued: Int
    public var running: Int
    public var gate: BackgroundGate
    /// Background jobs finished per minute over the last 10 minutes.
    public var perMinute: Double
    public var policy: BackgroundPolicy

    /// When the backlog would be drained at the current pace (nil when it is not moving).
    public var drainedAt: Date? {
        guard queued > 0 else { return Date() }
        guard perMinute > 0, gate.isOpen else { return nil }
        return Date().addingTimeInterval(Double(queued) / perMinute * 60)
    }

    public static func load(_ pool: PostgresPool) async throws -> BacklogStatus {
        guard let row = try await pool.query(
            """
            SELECT (SELECT count(*) FROM switchyard.jobs_background WHERE lease_owner IS NULL) AS queued,
                   (SELECT count(*) FROM switchyard.jobs_background WHERE lease_owner IS NOT NULL) AS running,
                   (SELECT count(*) FROM switchyard.results
                    WHERE priority = 'background' AND finished_at > now() - interval '10 minutes') / 10.0 AS per_minute
            """
        ).first else {
            throw QueueError(.database, "the backlog query returned nothing")
        }
        return BacklogStatus(
            queued: try row.decode("queued"), running: try row.decode("running"),
            gate: try await BackgroundGate.check(pool),
            perMinute: Double(truncating: try row.decode("per_minute", as: Decimal.self) as NSNumber),
            policy: try await BackgroundPolicy.load(pool)
        )
    }

    /// Lines for `dispatcher status` and `dispatcher background status`.
    public var lines: [String] {
        var lines = ["background backlog: \(queued) queued, \(running) running"]
        var gateLine = "  gate: " + (gate.isOpen ? "open" : "closed") + " (\(gate.reason))"
        if let next = gate.nextOpenAt { gateLine += "; next cheap window \(next.formatted(.iso8601))" }
        lines.append(gateLine)
        var ceiling = "  ceiling: " + (policy.maxCostPer1K.map { "$\($0)/1K" } ?? "none")
        if let tiers = policy.tiers { ceiling += ", tiers \(tiers.sorted().joined(separator: ","))" }
        if let drain = policy.drainUntil, drain > Date() { ceiling += ", draining until \(drain.formatted(.iso8601))" }
        if policy.paused { ceiling += ", PAUSED" }
        lines.append(ceiling)
        let pace = String(format: "%.1f", perMinute)
        if let done = drainedAt {
            lines.append("  pace: \(pace) jobs/min; drained by \(done.formatted(.iso8601))")
        } else {
            lines.append("  pace: \(pace) jobs/min; not draining now")
        }
        return lines
    }
}
