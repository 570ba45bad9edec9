import Foundation

/// How running a job ended, as the executor reports it to the worker.
public enum JobOutcome: Sendable {
    /// A model answered.
    case succeeded(JobAnswer)
    /// Every candidate failed. `retryable` says whether trying the whole job again later may help
    /// (an outage may pass; a malformed request will not).
    case failed(JobFailure)
    /// The job was cancelled while running (its call abandoned).
    case cancelled(trail: [AttemptRecord])
    /// The job should wait until a later time without spending its attempt: a background job
    /// that no model may run at the current price waits for the next price window, and a job
    /// whose rule's models are all out for now (breakers, budgets) waits for one to come back.
    /// `policy`: the version of the background policy it was decided under. `forModel`: it waits
    /// for a model to come back (its wait keeps counting: `jobs.waiting_since`), not for a price.
    /// `passedOn` (with `forModel`): another live worker calls a model of the job's rule that this
    /// one cannot (and this one's could not answer, or it had none); its claims pass the job over
    /// for a while, and it is due at once, for the others.
    /// `trail`: the calls this attempt made before it was put back.
    case postponed(
        until: Date, reason: String, policy: String?, forModel: Bool = false, passedOn: Bool = false,
        trail: [AttemptRecord] = [])
}

/// A successful answer and what it cost.
public struct JobAnswer: Sendable {
    public var model: String
    public var provider: String
    public var tier: String
    /// The routing class the job ran under.
    public var taskClass: String?
    /// The OpenAI-shaped response.
    public var response: JSONValue
    public var tokensIn: Int?
    public var tokensOut: Int?
    public var cost: Decimal?
    /// The same call on the same model at its list (peak) price.
    public var baseCost: Decimal?
    /// The same call on the rule's primary model at list price.
    public var primaryCost: Decimal?
    public var trail: [AttemptRecord]
    /// Added to the job's metadata in the result (e.g. why a deadline escalated it).
    public var metadata: [String: JSONValue]

    public init(
        model: String, provider: String, tier: String, taskClass: String? = nil, response: JSONValue,
        tokensIn: Int? = nil, tokensOut: Int? = nil, cost: Decimal? = nil, baseCost: Decimal? = nil,
        primaryCost: Decimal? = nil, trail: [AttemptRecord] = [], metadata: [String: JSONValue] = [:]
    ) {
        self.model = model
        self.provider = provider
        self.tier = tier
        self.taskClass = taskClass
        self.response = response
        self.tokensIn = tokensIn
        self.tokensOut = tokensOut
        self.cost = cost
        self.baseCost = baseCost
        self.primaryCost = primaryCost
        self.trail = trail
        self.metadata = metadata
    }
}

/// Why a job's attempt failed.
public struct JobFailure: Sendable {
    /// A stable code (`all_candidates_failed`, `bad_request`, `no_eligible_model`, …).
    public var code: String
    public var message: String
    public var retryable: Bool
    public var taskClass: String?
    public var trail: [AttemptRecord]
    public var metadata: [String: JSONValue]

    public init(
        code: String, message: String, retryable: Bool, taskClass: String? = nil, trail: [AttemptRecord] = [],
        metadata: [String: JSONValue] = [:]
    ) {
        self.code = code
        self.message = message
        self.retryable = retryable
        self.taskClass = taskClass
        self.trail = trail
        self.metadata = metadata
    }
}
