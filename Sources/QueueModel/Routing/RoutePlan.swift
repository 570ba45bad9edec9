import Foundation

/// The router's answer for one job: the models to try, in order, each with its tier and time
/// budget, and why.
public struct RoutePlan: Sendable, Hashable {
    /// One model to try.
    public struct Attempt: Sendable, Hashable {
        /// The model, with everything needed to call it (provider, base URL, key variable, …).
        public var model: ModelSpec
        /// Position in the plan (0 = first).
        public var position: Int
        /// `Tier.at(position:)`: primary, secondary, tertiary.
        public var tier: Tier
        /// How long this attempt may take: the tier's latency target, or for the primary the
        /// rule's `max_latency_ms` when it has one.
        public var timeout: Duration
        /// True when `timeout` is the rule's `max_latency_ms`, not the tier's default: the trail
        /// records it (`target_ms`), and the latency alert judges the call by it.
        public var timeoutSetByRule: Bool

        /// An attempt at `position`, timed out after `timeout` (default: its tier's latency target).
        public init(model: ModelSpec, position: Int, timeout: Duration? = nil) {
            self.model = model
            self.position = position
            self.tier = Tier.at(position: position)
            self.timeout = timeout ?? tier.defaultLatencyTarget
            self.timeoutSetByRule = timeout != nil
        }

        /// The timeout in whole milliseconds.
        public var timeoutMS: Int {
            let (seconds, attoseconds) = timeout.components
            return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
        }

        /// The trail's `target_ms`: the timeout when the rule set it, else nil (the tier's setting).
        public var targetMS: Int? { timeoutSetByRule ? timeoutMS : nil }
    }

    /// Why a plan has no attempts.
    public struct Unroutable: Sendable, Hashable {
        /// What stands in the way, naming every model and why it was dropped.
        public var reason: String
        /// What to do about it.
        public var hint: String
        /// True when every model was dropped for a reason that passes (breaker open, rate budget
        /// spent, at max concurrency): retrying later may succeed. False when the request itself
        /// cannot be served (no rule, too long for every model, over every price ceiling).
        public var isTransient: Bool
        /// True when some model was dropped only because it is busy (calls in flight, rate
        /// budget, a provider's pause): it will be free in moments, not after an outage.
        public var isBusy = false
        /// True when the request is too long for every model of the rule, and of the catalog: the
        /// request's fault, as a provider's context-length error is, not the rule's.
        public var isTooLarge = false
        /// True when every model of the rule is kept out by the request itself (too long for it,
        /// or asking what it cannot do), whatever else keeps it out too, and no model of the
        /// catalog would take it either.
        public var isRequestsFault = false

        public init(
            reason: String, hint: String, isTransient: Bool, isBusy: Bool = false, isTooLarge: Bool = false,
            isRequestsFault: Bool = false
        ) {
            self.reason = reason
            self.hint = hint
            self.isTransient = isTransient
            self.isBusy = isBusy
            self.isTooLarge = isTooLarge
            self.isRequestsFault = isRequestsFault || isTooLarge
        }
    }

    /// The models to try, in order; empty when `unroutable` says why.
    public var attempts: [Attempt]
    /// The request's class and how it was decided.
    public var classification: TaskClassification
    /// The rule used, or nil when no rule serves the class.
    public var rule: RouteRule?
    /// The strategy that ordered the attempts (for a `hash` rule and a job without an affinity
    /// key, the rule's other strategy).
    public var strategy: RoutingStrategy?
    /// The request's estimated size.
    public var estimate: PromptEstimate
    /// Why each candidate was kept or dropped.
    public var explanation: RouteExplanation
    /// Set when `attempts` is empty.
    public var unroutable: Unroutable?
    /// The price ceiling the plan's models were held to (the lower of the rule's and the job's
    /// own), and the price tiers the job may use: a later fallback keeps to them too.
    public var ceiling: Decimal? = nil
    public var allowedTiers: Set<String>? = nil
    /// Under a `hash` rule, for a job with an affinity key: the key's home model on the ring (a
    /// call to any other is marked in the trail, `affinity_home`).
    public var affinityHome: String? = nil
    /// A background job's plan: a later fallback leaves interactive work its reserve too.
    public var background = false

    /// The first attempt after `position` whose model has a context window larger than `tokens`:
    /// where a context-length error moves to.
    public func nextAttempt(withContextLargerThan tokens: Int, after position: Int) -> Attempt? {
        attempts.first { $0.position > position && $0.model.contextWindow > tokens }
    }

    /// The plan's failure as an error for the job's result, or nil when there are attempts:
    /// `.invalidInput` when the request cannot be served as it is, `.noModelAvailable` when
    /// waiting may help.
    public var error: QueueError? {
        unroutable.map { QueueError($0.isTransient ? .noModelAvailable : .invalidInput, $0.reason, hint: $0.hint) }
    }
}

extension QueueError.Code {
    /// Every model that could take the request is unhealthy, busy or out of rate budget right now.
    public static let noModelAvailable = QueueError.Code("noModelAvailable")
}

/// Why a plan is what it is: the class, the rule, the strategy, and every candidate with the
/// reason it was kept or dropped.
public struct RouteExplanation: Sendable, Hashable {
    /// One model the rule names.
    public struct Candidate: Sendable, Hashable {
        /// The model name.
        public var model: String
        /// Position in the plan, or nil when dropped.
        public var position: Int?
        /// Why it was dropped; empty when kept.
        public var dropReasons: [String]
        /// What the router saw: price, score, in flight, latency, ring notes.
        public var facts: [String]
        /// Dropped for a reason that lasts (disabled, under the rule's quality floor, too small for
        /// the request, over its ceiling at every hour), not one that passes (a breaker, a budget,
        /// a price a window brings under the ceiling).
        public var isDroppedForGood: Bool

        /// True when the model is in the plan.
        public var isKept: Bool { position != nil }

        /// A candidate (kept when `position` is set).
        public init(
            model: String, position: Int? = nil, dropReasons: [String] = [], facts: [String] = [],
            isDroppedForGood: Bool = false
        ) {
            self.model = model
            self.position = position
            self.dropReasons = dropReasons
            self.facts = facts
            self.isDroppedForGood = isDroppedForGood
        }
    }

    /// How the rule was found.
    public var rule: String
    /// What the strategy did and why it was chosen.
    public var strategy: String
    /// Every model the rule names, in the plan's order, dropped ones last.
    public var candidates: [Candidate]

    /// An explanation of a plan.
    public init(rule: String, strategy: String, candidates: [Candidate]) {
        self.rule = rule
        self.strategy = strategy
        self.candidates = candidates
    }
}
