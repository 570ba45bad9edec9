import Postgres

/// Model calls over a window for one slice of the fleet, as `switchyard.call_stats(window, at)`
/// reports it: every entry of every finished job's trail, by `total`, `priority`, `model`,
/// `provider` or `tier` (the call's place in its plan).
public struct CallStats: Sendable, Hashable {
    /// `total`, `priority`, `model`, `provider` or `tier`.
    public var dimension: String
    /// The slice: `all`, `interactive`, a model name, `primary`, …
    public var subject: String
    /// Calls made (cancelled ones left out).
    public var calls: Int
    /// Calls that ended in a model error: 5xx, 429, bad key, unreadable answer (not the request's
    /// fault, and not timeouts).
    public var errors: Int
    /// Calls that timed out.
    public var timeouts: Int
    /// errors / calls.
    public var errorRate: Double
    /// timeouts / calls.
    public var timeoutRate: Double
    /// Latency percentiles of calls that answered or timed out, in milliseconds.
    public var latencyP50MS: Double?
    /// The 95th percentile, in milliseconds.
    public var latencyP95MS: Double?
    /// The 99th percentile, in milliseconds.
    public var latencyP99MS: Double?

    init(row: PostgresRow) throws {
        dimension = try row.decode("dimension")
        subject = try row.decode("subject")
        calls = try row.decode("calls")
        errors = try row.decode("errors")
        timeouts = try row.decode("timeouts")
        errorRate = try row.decode("error_rate")
        timeoutRate = try row.decode("timeout_rate")
        latencyP50MS = try row.decode("latency_p50_ms", as: Double?.self)
        latencyP95MS = try row.decode("latency_p95_ms", as: Double?.self)
        latencyP99MS = try row.decode("latency_p99_ms", as: Double?.self)
    }

    /// The stats as JSON (snake_case keys, as in SQL).
    public var json: JSONValue {
        [
            "dimension": .string(dimension), "subject": .string(subject), "calls": .number(Double(calls)),
            "errors": .number(Double(errors)), "timeouts": .number(Double(timeouts)),
            "error_rate": .optional(errorRate), "timeout_rate": .optional(timeoutRate),
            "latency_p50_ms": .optional(latencyP50MS), "latency_p95_ms": .optional(latencyP95MS),
            "latency_p99_ms": .optional(latencyP99MS),
        ]
    }
}
