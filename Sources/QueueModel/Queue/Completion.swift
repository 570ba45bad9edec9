import Foundation

/// One outcome for `switchyard.complete`: the end of a job, a retry later, or a release.
public struct Completion: Sendable {
    public enum Kind: String, Sendable {
        /// The job ends with `status`; it moves to results.
        case result
        /// The job goes back to the queue until `retryAt`; the attempt counts.
        case retry
        /// The job goes back to the queue now; the attempt does not count (shutdown).
        case release
        /// The job goes back to the queue until `retryAt`; the attempt does not count (a
        /// background job that no model may run now waits for the next price window).
        case postpone
    }

    public var jobID: Int64
    /// The attempt this outcome belongs to: with the worker's id, the fence.
    public var attempt: Int
    public var kind: Kind
    /// `succeeded`, `failed` or `cancelled`, for `.result`.
    public var status: String?
    public var taskClass: String?
    public var model: String?
    public var provider: String?
    public var tier: String?
    public var response: JSONValue?
    public var error: JSONValue?
    /// This attempt's trail entries, appended to the job's.
    public var trail: [AttemptRecord]
    public var tokensIn: Int?
    public var tokensOut: Int?
    /// Exact; sent as a decimal string so it never passes through a Double.
    public var cost: Decimal?
    /// The same call on the same model at its list (peak) price.
    public var baseCost: Decimal?
    /// The same call on the rule's primary model at its list price: the savings baseline.
    public var primaryCost: Decimal?
    public var latencyMS: Double?
    public var metadata: [String: JSONValue]
    public var retryAt: Date?

    public init(
        jobID: Int64, attempt: Int, kind: Kind, status: String? = nil, taskClass: String? = nil,
        model: String? = nil, provider: String? = nil, tier: String? = nil, response: JSONValue? = nil,
        error: JSONValue? = nil, trail: [AttemptRecord] = [], tokensIn: Int? = nil, tokensOut: Int? = nil,
        cost: Decimal? = nil, baseCost: Decimal? = nil, primaryCost: Decimal? = nil, latencyMS: Double? = nil, metadata: [String: JSONValue] = [:], retryAt: Date? = nil
    ) {
        self.jobID = jobID
        self.attempt = attempt
        self.kind = kind
        self.status = status
        self.taskClass = taskClass
        self.model = model
        self.provider = provider
        self.tier = tier
        self.response = response
        self.error = error
        self.trail = trail
        self.tokensIn = tokensIn
        self.tokensOut = tokensOut
        self.cost = cost
        self.baseCost = baseCost
        self.primaryCost = primaryCost
        self.latencyMS = latencyMS
        self.metadata = metadata
        self.retryAt = retryAt
    }

    /// The item as `switchyard.complete` reads it (`jsonb_to_recordset`).
    var json: JSONValue {
        var object: [String: JSONValue] = [
            "id": .number(Double(jobID)), "attempt": .number(Double(attempt)), "kind": .string(kind.rawValue),
            "trail": .array(trail.map(\.json)),
        ]
        if let status { object["status"] = .string(status) }
        if let taskClass { object["task_class"] = .string(taskClass) }
        if let model { object["model"] = .string(model) }
        if let provider { object["provider"] = .string(provider) }
        if let tier { object["tier"] = .string(tier) }
        if let response { object["response"] = response }
        if let error { object["error"] = error }
        if let tokensIn { object["tokens_in"] = .number(Double(tokensIn)) }
        if let tokensOut { object["tokens_out"] = .number(Double(tokensOut)) }
        if let cost { object["cost"] = .string(cost.description) }
        if let baseCost { object["base_cost"] = .string(baseCost.description) }
        if let primaryCost { object["primary_cost"] = .string(primaryCost.description) }
        if let latencyMS { object["latency_ms"] = .number(latencyMS) }
        if !metadata.isEmpty { object["metadata"] = .object(metadata) }
        if let retryAt { object["retry_at"] = .string(retryAt.postgresText) }
        return .object(object)
    }
}
