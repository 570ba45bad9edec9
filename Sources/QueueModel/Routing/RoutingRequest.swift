import Foundation

/// What the router needs to know about one job.
public struct RoutingRequest: Sendable, Hashable {
    /// The OpenAI chat-completions body.
    public var body: JSONValue
    /// The job's task class; when set it overrides the classifier.
    public var taskClass: String?
    /// Jobs with the same key go to the same model (under a `hash` rule), so provider prompt
    /// caches keep hitting.
    public var affinityKey: String?
    /// The job's priority (shown in explanations).
    public var priority: Priority
    /// A ceiling of the job's own on the price per 1K tokens; the lower of it and the rule's applies.
    public var maxCostPer1K: Decimal?
    /// The price tiers the job may use (background work limited to cheap tiers); nil for any.
    public var allowedTiers: Set<String>?

    /// A request to route.
    public init(
        body: JSONValue, taskClass: String? = nil, affinityKey: String? = nil, priority: Priority = .interactive,
        maxCostPer1K: Decimal? = nil, allowedTiers: Set<String>? = nil
    ) {
        self.body = body
        self.taskClass = taskClass
        self.affinityKey = affinityKey
        self.priority = priority
        self.maxCostPer1K = maxCostPer1K
        self.allowedTiers = allowedTiers
    }

    /// The routing view of a claimed job.
    public init(job: Job) {
        self.init(body: job.request, taskClass: job.taskClass, affinityKey: job.affinityKey, priority: job.priority)
    }
}
