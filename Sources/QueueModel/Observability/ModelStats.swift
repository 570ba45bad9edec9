import Foundation
import Postgres

/// One model's activity over a window, as `switchyard.model_stats(window, at)` reports it: its
/// calls (error, timeout and latency), the jobs it answered (fallback rate, cost, tokens), and its
/// breaker now.
public struct ModelStats: Sendable, Hashable {
    /// The model's catalog name.
    public var model: String
    /// Its provider, when the catalog still has it.
    public var provider: String?
    /// Calls made to it (cancelled calls left out).
    public var calls: Int
    /// Calls that ended in a model error (5xx, 429, bad key; not the request's fault, not a
    /// timeout) / calls; nil without calls.
    public var errorRate: Double?
    /// Timed-out calls / calls.
    public var timeoutRate: Double?
    /// Percentiles of the latency of calls that answered or timed out, in milliseconds.
    public var latencyP50MS: Double?
    /// The 95th percentile, in milliseconds.
    public var latencyP95MS: Double?
    /// The 99th percentile, in milliseconds.
    public var latencyP99MS: Double?
    /// Jobs it answered.
    public var answered: Int
    /// Of those, the share that reached it by falling back.
    public var fallbackRate: Double?
    /// What the answered jobs cost, in total and per job.
    public var cost: Decimal
    /// The average cost of the answered jobs that have one.
    public var costPerRequest: Decimal?
    /// Prompt tokens of the answered jobs.
    public var tokensIn: Int
    /// Completion tokens of the answered jobs.
    public var tokensOut: Int
    /// `closed`, `open` or `half_open`.
    public var breaker: String
    /// Why the breaker opened.
    public var breakerReason: String?

    init(row: PostgresRow) throws {
        model = try row.decode("model")
        provider = try row.decode("provider", as: String?.self)
        calls = try row.decode("calls")
        errorRate = try row.decode("error_rate", as: Double?.self)
        timeoutRate = try row.decode("timeout_rate", as: Double?.self)
        latencyP50MS = try row.decode("latency_p50_ms", as: Double?.self)
        latencyP95MS = try row.decode("latency_p95_ms", as: Double?.self)
        latencyP99MS = try row.decode("latency_p99_ms", as: Double?.self)
        answered = try row.decode("answered")
        fallbackRate = try row.decode("fallback_rate", as: Double?.self)
        cost = try row.decode("cost")
        costPerRequest = try row.decode("cost_per_request", as: Decimal?.self)
        tokensIn = try row.decode("tokens_in")
        tokensOut = try row.decode("tokens_out")
        breaker = try row.decode("breaker")
        breakerReason = try row.decode("breaker_reason", as: String?.self)
    }

    /// The stats as JSON (snake_case keys, as in SQL).
    public var json: JSONValue {
        [
            "model": .string(model), "provider": provider.map(JSONValue.string) ?? .null,
            "calls": .number(Double(calls)), "error_rate": .optional(errorRate),
            "timeout_rate": .optional(timeoutRate), "latency_p50_ms": .optional(latencyP50MS),
            "latency_p95_ms": .optional(latencyP95MS), "latency_p99_ms": .optional(latencyP99MS),
            "answered": .number(Double(answered)), "fallback_rate": .optional(fallbackRate),
            "cost": .number(cost), "cost_per_request": costPerRequest.map(JSONValue.number) ?? .null,
            "tokens_in": .number(Double(tokensIn)), "tokens_out": .number(Double(tokensOut)),
            "breaker": .string(breaker), "breaker_reason": breakerReason.map(JSONValue.string) ?? .null,
        ]
    }
}

extension JSONValue {
    /// A number, or null: to the thousandth, or below 1 to six significant digits (an error rate
    /// of 0.00782 stays that, not 0.008; one under 0.0005 is not 0).
    static func optional(_ value: Double?) -> JSONValue {
        guard let value else { return .null }
        guard value.isFinite, abs(value) < 1, value != 0 else { return .number((value * 1000).rounded() / 1000) }
        return .number(Double(String(format: "%.6g", value)) ?? value)
    }

}
