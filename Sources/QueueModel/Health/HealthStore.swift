import Foundation
import Postgres

/// The fleet's shared model health in `switchyard.model_health`.
public struct HealthStore: Sendable {
    /// The NOTIFY channel on which a model's name is sent when its breaker changes state.
    public static let channel = "switchyard_health"

    public let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// Folds reports into the fleet's breakers.
    /// - Returns: each reported model's breaker afterwards.
    @discardableResult
    public func report(_ reports: [HealthReport]) async throws -> [String: RoutingState.Breaker] {
        try await reportChanges(reports).breakers
    }

    /// Reports, and says which breakers these reports moved (opened, closed, or opened again
    /// from half-open): of all the workers reporting on a model, the one whose report moved it.
    public func reportChanges(_ reports: [HealthReport]) async throws
        -> (breakers: [String: RoutingState.Breaker], changed: Set<String>)
    {
        guard !reports.isEmpty else { return ([:], []) }
        let rows = try await pool.query(
            "SELECT model_name, breaker, changed FROM switchyard.report_health($1::jsonb)",
            [JSONValue.array(reports.map(\.json)).jsonText]
        )
        var states: [String: RoutingState.Breaker] = [:]
        var changed: Set<String> = []
        for row in rows {
            let model: String = try row.decode("model_name")
            states[model] = RoutingState.Breaker(rawValue: try row.decode("breaker")) ?? .closed
            if try row.decode("changed", as: Bool.self) { changed.insert(model) }
        }
        return (states, changed)
    }

    /// Why each of `models`' breakers is as it is (`failure rate 5.3% over the last 57 requests
    /// …`, `5 failures in a row`, an alert's message); models whose breaker has no reason are
    /// left out.
    public func reasons(of models: [String]) async throws -> [String: String] {
        let rows = try await pool.query(
            "SELECT model, reason FROM switchyard.model_health WHERE model = ANY ($1) AND reason IS NOT NULL", [models])
        var reasons: [String: String] = [:]
        for row in rows { reasons[try row.decode("model")] = try row.decode("reason") }
        return reasons
    }

    /// What a worker routes by: each model's breaker and latency as of now, and how many workers
    /// are alive to share rate budgets.
    public struct Snapshot: Sendable {
        public var models: [String: RoutingState.ModelState]
        public var liveWorkers: Int
        /// `breaker_consecutive_failures`: after this many failures in a row a worker stops
        /// calling the model at once, before its report comes back with the fleet's breaker.
        public var consecutiveFailureLimit: Int
        /// `breaker_open_seconds`: a worker the provider refused skips the model this long.
        public var breakerOpenSeconds: Double
        /// The live workers other than the one asking: whether another may call a model this
        /// one cannot.
        public var others = OtherWorkers()
    }

    /// The live workers other than the one asking, and how many of them skip each model
    /// (`workers.skipped_models`).
    public struct OtherWorkers: Sendable {
        public var count = 0
        public var skipping: [String: Int] = [:]

        public init(count: Int = 0, skipping: [String: Int] = [:]) {
            self.count = count
            self.skipping = skipping
        }

        /// Whether one of them calls `model` (does not skip it).
        public func call(_ model: String) -> Bool { count > skipping[model, default: 0] }
    }

    /// Reads the fleet's health in one round trip.
    /// - Parameter worker: the worker asking, left out of `others`.
    public func snapshot(for worker: String? = nil) async throws -> Snapshot {
        let rows = try await pool.query(
            """
            SELECT model, state, latency_ewma_ms, total_requests > 0 AS has_calls,
                   (SELECT count(*) FROM switchyard.workers WHERE heartbeat_at > now() - interval '30 seconds') AS live,
                   NULL AS consecutive_limit, NULL AS open_seconds, NULL AS others, NULL AS skipped_by_others
            FROM switchyard.fleet_health
            UNION ALL
            SELECT NULL, NULL, NULL, NULL,
                   (SELECT count(*) FROM switchyard.workers WHERE heartbeat_at > now() - interval '30 seconds'),
                   (SELECT value FROM switchyard.settings WHERE name = 'breaker_consecutive_failures'),
                   (SELECT value FROM switchyard.settings WHERE name = 'breaker_open_seconds'),
                   (SELECT count(*) FROM switchyard.workers
                    WHERE heartbeat_at > now() - interval '30 seconds' AND id IS DISTINCT FROM $1),
                   (SELECT coalesce(jsonb_object_agg(s.model, s.workers), '{}')::text
                    FROM (SELECT e.key AS model, count(*) AS workers
                          FROM switchyard.workers w CROSS JOIN LATERAL jsonb_each(w.skipped_models) e
                          WHERE w.heartbeat_at > now() - interval '30 seconds' AND w.id IS DISTINCT FROM $1
                          GROUP BY e.key) s)
            """, [worker]
        )
        var models: [String: RoutingState.ModelState] = [:]
        var live = 1
        var limit = 5
        var openSeconds = 30.0
        var others = OtherWorkers()
        for row in rows {
            live = max(1, try row.decode("live", as: Int.self))
            if let text = try row.decode("consecutive_limit", as: String?.self), let value = Int(text), value > 0 {
                limit = value
            }
            if let text = try row.decode("open_seconds", as: String?.self), let value = Double(text), value > 0 {
                openSeconds = value
            }
            if let count = try row.decode("others", as: Int?.self) { others.count = count }
            if let text = try row.decode("skipped_by_others", as: String?.self) {
                for (model, count) in try JSONValue(parsing: text).objectValue ?? [:] {
                    others.skipping[model] = count.intValue ?? 0
                }
            }
            guard let model = try row.decode("model", as: String?.self) else { continue }
            var state = RoutingState.ModelState(
                breaker: RoutingState.Breaker(rawValue: try row.decode("state", as: String.self)) ?? .closed,
                latencyEWMAMS: try row.decode("latency_ewma_ms", as: Double?.self)
            )
            state.hasCalls = try row.decode("has_calls", as: Bool?.self) ?? false
            models[model] = state
        }
        return Snapshot(
            models: models, liveWorkers: live, consecutiveFailureLimit: limit, breakerOpenSeconds: openSeconds,
            others: others)
    }
}
