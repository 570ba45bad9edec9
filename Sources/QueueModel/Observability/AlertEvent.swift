import Foundation
import Postgres

/// An alert raised or cleared by one evaluation (`switchyard.evaluate_alerts`).
public struct AlertEvent: Sendable, Hashable {
    /// Raised or cleared.
    public enum Kind: String, Sendable, Hashable {
        case raised, cleared
    }

    /// Whether the alert was raised or cleared.
    public var event: Kind
    /// The alert's row in `switchyard.alerts`.
    public var alertID: Int64
    /// `error_rate`, `latency`, `breaker`, `queue_wait`, `backlog_deadlines`, `job_failures`,
    /// `tenant_budget` or `tenant_budget_share`.
    public var kind: String
    /// A model name, `interactive`, `background` or a task class.
    public var subject: String
    /// The measurement (nil when a cleared alert had nothing left to measure and never had one).
    public var value: Double?
    /// The limit the rule measures against.
    public var threshold: Double
    /// What happened, for people.
    public var message: String
    /// The evaluation time.
    public var at: Date

    /// Whether the alert is about a model (and so ties into its breaker).
    public var isModelAlert: Bool { kind == "error_rate" || kind == "latency" }

    init(row: PostgresRow) throws {
        let text = try row.decode("event", as: String.self)
        guard let event = Kind(rawValue: text) else {
            throw QueueError(.database, "switchyard.evaluate_alerts returned an unknown event \(text)")
        }
        self.event = event
        alertID = try row.decode("alert_id")
        kind = try row.decode("kind")
        subject = try row.decode("subject")
        value = try row.decode("value", as: Double?.self)
        threshold = try row.decode("threshold")
        message = try row.decode("message")
        at = try row.decode("event_at")
    }

    /// The event as JSON (the NOTIFY payload's shape).
    public var json: JSONValue {
        [
            "event": .string(event.rawValue), "id": .number(Double(alertID)), "kind": .string(kind),
            "subject": .string(subject), "value": .optional(value), "threshold": .optional(threshold),
            "message": .string(message), "at": .string(at.postgresText),
        ]
    }
}
