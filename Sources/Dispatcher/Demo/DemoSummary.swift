import Foundation
import Postgres
import QueueModel

/// The demo's closing report, read from `switchyard.results`.
struct DemoSummary {
    let pool: PostgresPool
    /// The model the demo made fail halfway through.
    let failing: String
    /// The dearest model, to price "everything on premium" against.
    let premium: ModelSpec

    func render() async throws -> String {
        var lines: [String] = []
        let totals = try await pool.query(
            """
            SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   extract(epoch FROM max(finished_at) - min(created_at))::float8 AS seconds
            FROM switchyard.results
            """
        ).first
        let jobs = try totals?.decode("jobs", as: Int.self) ?? 0
        let seconds = try totals?.decode("seconds", as: Double?.self) ?? 0
        lines.append(
            "jobs        \(jobs) finished: \(try totals?.decode("succeeded", as: Int.self) ?? 0) succeeded, "
                + "\(try totals?.decode("failed", as: Int.self) ?? 0) failed — "
                + String(format: "%.1f jobs/s over %.1f s", seconds > 0 ? Double(jobs) / seconds : 0, seconds)
        )

        lines.append("latency     by tier (model call, claim to answer)")
        for row in try await pool.query(
            """
            SELECT tier, count(*) AS jobs,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99
            FROM switchyard.results WHERE status = 'succeeded' GROUP BY tier ORDER BY tier
            """
        ) {
            let tier = (try row.decode("tier", as: String?.self) ?? "-").padding(toLength: 10, withPad: " ", startingAt: 0)
            lines.append(
                "              \(tier)"
                    + String(
                        format: " %5d jobs   P50 %6.0f ms   P95 %6.0f ms   P99 %6.0f ms", try row.decode("jobs", as: Int.self),
                        try row.decode("p50", as: Double.self), try row.decode("p95", as: Double.self),
                        try row.decode("p99", as: Double.self))
            )
        }
        for row in try await pool.query(
            """
            SELECT priority, percentile_cont(0.5) WITHIN GROUP (ORDER BY queue_wait_ms) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY queue_wait_ms) AS p99
            FROM switchyard.results GROUP BY priority ORDER BY priority DESC
            """
        ) {
            let priority = try row.decode("priority", as: String.self).padding(toLength: 11, withPad: " ", startingAt: 0)
            lines.append(
                "queue wait  \(priority)"
                    + String(format: " P50 %6.0f ms   P99 %6.0f ms", try row.decode("p50", as: Double.self),
                             try row.decode("p99", as: Double.self))
            )
        }

        let fallbacks = try require(try await pool.query(
            """
            SELECT count(*) FILTER (WHERE models > 1) AS fell_back,
                   count(*) FILTER (WHERE models > 1 AND first_model = $1) AS from_failing
            FROM (SELECT (SELECT count(DISTINCT e->>'model') FROM jsonb_array_elements(attempts) e) AS models,
                         attempts->0->>'model' AS first_model
                  FROM switchyard.results) t
            """, [failing]
        ).first)
        let breaker = try await pool.query(
            "SELECT state, coalesce(reason, '') AS reason FROM switchyard.fleet_health WHERE model = $1", [failing]
        ).first
        lines.append(
            "fallbacks   \(try fallbacks.decode("fell_back", as: Int.self)) jobs moved to another model "
                + "(\(try fallbacks.decode("from_failing", as: Int.self)) of them away from \(failing)); "
                + "\(failing)'s breaker: \(try breaker?.decode("state", as: String.self) ?? "closed")"
                + ((try breaker?.decode("reason", as: String.self)).map { $0.isEmpty ? "" : " (\($0))" } ?? "")
        )

        let affinity = try require(try await pool.query(
            """
            WITH turns AS (
                SELECT affinity_key, model, finished_at,
                       count(*) OVER (PARTITION BY affinity_key, model) AS on_model
                FROM switchyard.results WHERE affinity_key IS NOT NULL AND status = 'succeeded'
            ), homes AS (
                SELECT DISTINCT ON (affinity_key) affinity_key, model AS home FROM turns
                ORDER BY affinity_key, on_model DESC, model
            )
            SELECT count(*) AS turns, count(*) FILTER (WHERE t.model = h.home) AS at_home
            FROM turns t JOIN homes h USING (affinity_key)
            """
        ).first)
        let turns = try affinity.decode("turns", as: Int.self)
        let atHome = try affinity.decode("at_home", as: Int.self)
        lines.append(
            "affinity    \(atHome) of \(turns) conversation turns "
                + String(format: "(%.0f%%)", turns > 0 ? Double(atHome) * 100 / Double(turns) : 0)
                + " ran on their conversation's usual model; the others moved when \(failing) failed "
                + "(only its keys move) or when a model was over its bounded load"
        )

        let cost = try require(try await pool.query(
            """
            SELECT coalesce(sum(cost), 0) AS cost,
                   coalesce(sum(tokens_in * $1::numeric + tokens_out * $2::numeric) / 1000, 0) AS premium
            FROM switchyard.results WHERE status = 'succeeded'
            """, [premium.pricePer1KInput, premium.pricePer1KOutput]
        ).first)
        let paid = try cost.decode("cost", as: Decimal.self)
        let allPremium = try cost.decode("premium", as: Decimal.self)
        let share = allPremium > 0 ? NSDecimalNumber(decimal: paid / allPremium).doubleValue * 100 : 0
        lines.append(
            "cost        \(Self.money(paid)) against \(Self.money(allPremium)) with every job on \(premium.name) "
                + String(format: "(%.1f%% of it)", share)
        )
        lines.append("models      " + (try await pool.query(
            "SELECT model, count(*) AS jobs FROM switchyard.results WHERE status = 'succeeded' GROUP BY model ORDER BY jobs DESC"
        ).map { "\(try $0.decode("model", as: String.self)) \(try $0.decode("jobs", as: Int.self))" }.joined(separator: ", ")))
        return lines.joined(separator: "\n")
    }

    static func money(_ value: Decimal) -> String {
        let amount = NSDecimalNumber(decimal: value).doubleValue
        return (amount < 0 ? "-" : "") + String(format: "$%.4f", abs(amount))
    }
}

/// Like Swift Testing's, for a row that must exist.
private func require<T>(_ value: T?) throws -> T {
    guard let value else { throw QueueError(.database, "the demo summary query returned no row") }
    return value
}
