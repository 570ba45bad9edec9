import Foundation
import Postgres

extension CatalogStore {
    /// A model's fleet-wide health, as kept in `switchyard.model_health` by the workers and read
    /// through `switchyard.fleet_health` (a breaker open past its cool-down reads `half_open`).
    public struct HealthRecord: Sendable, Hashable {
        /// The model name.
        public var model: String
        /// `closed` (healthy), `open` (skipped) or `half_open` (probing).
        public var breaker: RoutingState.Breaker
        /// Why the breaker is as it is (`failure rate 12.0% over the last 50 requests (errors and
        /// timeouts; limit 2.0%)`,
        /// `5 failures in a row`, an alert's reason), when it is not closed.
        public var reason: String?
        /// When the breaker last opened.
        public var openedAt: Date?
        /// Failures in a row, reset by a success.
        public var consecutiveFailures: Int
        /// Requests in the current error-rate window.
        public var windowRequests: Int
        /// Failures in the current error-rate window.
        public var windowFailures: Int
        /// Recent latency (EWMA), in milliseconds.
        public var latencyEWMAMS: Double?
        /// Recent 95th-percentile latency, in milliseconds.
        public var latencyP95MS: Double?
        /// When a worker last reported.
        public var updatedAt: Date
        /// Calls reported since the row was made.
        public var totalRequests = 0

        /// What the router needs of it.
        public var modelState: RoutingState.ModelState {
            var state = RoutingState.ModelState(breaker: breaker, latencyEWMAMS: latencyEWMAMS)
            state.hasCalls = totalRequests > 0
            return state
        }
    }

    /// Every model's health row, by model name (models no worker has reported on have none), with
    /// its breaker as the workers treat it now: the stored `open` of a breaker whose cool-down has
    /// run is `half_open` (a probe may go), as `status` and `fleet_health` say.
    public func health() async throws -> [String: HealthRecord] {
        let rows = try await pool.query(
            """
            SELECT model, state, reason, opened_at, consecutive_failures, window_requests, window_failures,
                   latency_ewma_ms, latency_p95_ms, updated_at, total_requests
            FROM switchyard.fleet_health ORDER BY model
            """
        )
        var records: [String: HealthRecord] = [:]
        for row in rows {
            let model = try row.decode("model", as: String.self)
            let state = try row.decode("state", as: String.self)
            records[model] = HealthRecord(
                model: model, breaker: RoutingState.Breaker(rawValue: state) ?? .closed,
                reason: try row.decode("reason", as: String?.self), openedAt: try row.decode("opened_at", as: Date?.self),
                consecutiveFailures: try row.decode("consecutive_failures"),
                windowRequests: try row.decode("window_requests"),
                windowFailures: try row.decode("window_failures"),
                latencyEWMAMS: try row.decode("latency_ewma_ms", as: Double?.self),
                latencyP95MS: try row.decode("latency_p95_ms", as: Double?.self),
                updatedAt: try row.decode("updated_at"),
                totalRequests: try row.decode("total_requests", as: Int.self)
            )
        }
        return records
    }

    /// The routing state the stored health implies (breakers and latencies; in-flight counts and
    /// rate budgets live in the workers).
    public func routingState(sequence: UInt64 = 0) async throws -> RoutingState {
        RoutingState(models: try await health().mapValues(\.modelState), sequence: sequence)
    }
}
