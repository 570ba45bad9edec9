import Foundation
import Postgres

/// Alerts: evaluates the rules of `switchyard.evaluate_alerts` and reads `switchyard.alerts`.
///
/// Thresholds are rows of `switchyard.settings` (`alert_*`); see docs/observability.md. Each
/// raised or cleared alert is also announced on `channel` with a JSON payload.
public struct AlertStore: Sendable {
    /// The NOTIFY channel alert events are announced on.
    public static let channel = "switchyard_alerts"

    /// The pool every statement runs on.
    public let pool: PostgresPool

    /// A store over a pool.
    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// Evaluates every alert rule once, as of `at` (default: the database's now), raising and
    /// clearing alerts; a raised model alert opens the model's breaker.
    /// - Parameter at: the evaluation time; tests pass one to replay a scripted breach.
    /// - Returns: the alerts raised or cleared by this evaluation (none when nothing changed).
    @discardableResult
    public func evaluate(at: Date? = nil) async throws -> [AlertEvent] {
        try await pool.query(
            "SELECT * FROM switchyard.evaluate_alerts(coalesce($1::timestamptz, now()))", [at]
        ).map(AlertEvent.init(row:))
    }

    /// Notes how `worker`'s evaluation went (`error` nil: it succeeded), for `dispatcher status`.
    public func noteEvaluation(worker: String, error: String?) async throws {
        try await pool.query("SELECT switchyard.note_alert_evaluation($1, $2)", [worker, error])
    }

    /// Whether alerts are being evaluated: the last evaluation that succeeded, and while they
    /// fail, since when and why.
    public struct EvaluationState: Sendable, Equatable {
        public var evaluatedAt: Date?
        public var failingSince: Date?
        public var error: String?
        /// Seconds since the last success, by the database's clock.
        public var secondsSinceEvaluated: Double?

        public var json: JSONValue {
            [
                "evaluated_at": evaluatedAt.map { .string($0.postgresText) } ?? .null,
                "failing_since": failingSince.map { .string($0.postgresText) } ?? .null,
                "error": error.map { .string($0) } ?? .null,
            ]
        }
    }

    /// The housekeeper's note of its alert evaluations (all nil before the first).
    public func evaluationState() async throws -> EvaluationState {
        guard let row = try await pool.query(
            """
            SELECT alerts_evaluated_at, alerts_failing_since, alerts_error,
                   extract(epoch FROM now() - alerts_evaluated_at)::float8 AS age
            FROM switchyard.housekeeper
            """).first
        else { return EvaluationState() }
        return EvaluationState(
            evaluatedAt: try row.decode("alerts_evaluated_at", as: Date?.self),
            failingSince: try row.decode("alerts_failing_since", as: Date?.self),
            error: try row.decode("alerts_error", as: String?.self),
            secondsSinceEvaluated: try row.decode("age", as: Double?.self))
    }

    /// Tenant mappings whose role no longer exists (dropped after it was mapped): whoever creates
    /// a role of that name acts for the tenant. Roles are the server's, so no trigger sees the
    /// drop; `status` names them. Empty for a role that may not read the map.
    public func orphanTenantMappings() async throws -> [(role: String, tenant: String)] {
        do {
            return try await pool.query(
                """
                SELECT t.role, t.tenant FROM switchyard.tenant_roles t
                WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = t.role)
                ORDER BY t.role, t.tenant
                """
            ).map { (try $0.decode("role", as: String.self), try $0.decode("tenant", as: String.self)) }
        } catch let error as PostgresError where error.sqlState == .insufficientPrivilege {
            return []
        }
    }

    /// Alerts open now, oldest first.
    public func open() async throws -> [Alert] {
        try await pool.query(
            "SELECT * FROM switchyard.alerts WHERE cleared_at IS NULL ORDER BY opened_at, id"
        ).map(Alert.init(row:))
    }

    /// The most recent alerts, open or cleared, newest first.
    public func recent(limit: Int = 20) async throws -> [Alert] {
        try await pool.query(
            "SELECT * FROM switchyard.alerts ORDER BY opened_at DESC, id DESC LIMIT $1", [limit]
        ).map(Alert.init(row:))
    }
}
