import Foundation
import Postgres

/// One incident in `switchyard.alerts`: open while `clearedAt` is nil.
public struct Alert: Sendable, Hashable {
    /// Its id in `switchyard.alerts`.
    public var id: Int64
    /// `error_rate`, `latency`, `breaker`, `queue_wait`, `backlog_deadlines`, `job_failures`,
    /// `tenant_budget` or `tenant_budget_share`.
    public var kind: String
    /// What it is about: a model, `interactive`, `background`, a task class.
    public var subject: String
    /// When it was raised (the evaluation time).
    public var openedAt: Date
    /// When it cleared; nil while open.
    public var clearedAt: Date?
    /// The measurement that raised it, and the limit it passed.
    public var value: Double
    /// The limit the value passed.
    public var threshold: Double
    /// What happened, for people.
    public var message: String
    /// The latest measurement while open.
    public var lastValue: Double?

    /// True while the alert has not cleared.
    public var isOpen: Bool { clearedAt == nil }

    /// The latest measurement in the unit of its message (`12.5%`, `2300 ms`, `140 jobs`), when it
    /// differs from the one that raised it: the message keeps the figures it was raised with.
    public var latest: String? {
        guard let lastValue, lastValue != value else { return nil }
        switch kind {
        case "error_rate", "job_failures", "tenant_budget_share": return String(format: "%.1f%%", lastValue * 100)
        case "latency", "queue_wait": return "\(Int(lastValue.rounded())) ms"
        case "backlog_deadlines": return "\(Int(lastValue.rounded())) jobs"
        case "breaker":
            let seconds = Int(lastValue.rounded(.down))
            return seconds >= 60 ? "out for \(seconds / 60) min \(seconds % 60) s" : "out for \(seconds) s"
        default: return String(format: "%g", lastValue)
        }
    }

    init(row: PostgresRow) throws {
        id = try row.decode("id")
        kind = try row.decode("kind")
        subject = try row.decode("subject")
        openedAt = try row.decode("opened_at")
        clearedAt = try row.decode("cleared_at", as: Date?.self)
        value = try row.decode("value")
        threshold = try row.decode("threshold")
        message = try row.decode("message")
        lastValue = try row.decode("last_value", as: Double?.self)
    }

    /// The alert as JSON (snake_case keys, as in SQL).
    public var json: JSONValue {
        [
            "id": .number(Double(id)), "kind": .string(kind), "subject": .string(subject),
            "opened_at": .string(openedAt.postgresText),
            "cleared_at": clearedAt.map { .string($0.postgresText) } ?? .null, "value": .optional(value),
            "threshold": .optional(threshold), "message": .string(message), "last_value": .optional(lastValue),
        ]
    }
}
