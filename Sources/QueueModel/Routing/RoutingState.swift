import Foundation

/// The live facts the router weighs, passed in so that routing stays pure: the same request and
/// state always give the same plan.
public struct RoutingState: Sendable, Hashable {
    /// A model's circuit breaker, as kept in `switchyard.model_health`.
    public enum Breaker: String, Sendable, Hashable, CaseIterable {
        /// Healthy: requests flow.
        case closed
        /// Failing: the router skips the model until the breaker half-opens.
        case open
        /// Probing: the router keeps the model (the worker limits how many probes go through).
        case halfOpen = "half_open"
    }

    /// What is known about one model right now. Unknown facts are nil and never drop a model.
    public struct ModelState: Sendable, Hashable {
        /// The model's circuit breaker.
        public var breaker: Breaker
        /// Requests in flight to the model (this worker's or the fleet's, as the caller counts).
        public var inFlight: Int
        /// Recent latency (exponentially weighted moving average), in milliseconds: of answers and
        /// timeouts only.
        public var latencyEWMAMS: Double?
        /// Whether the fleet has reported calls to the model: one with calls and no latency has
        /// only failed fast, which says nothing of its speed (`lowest_latency` tries it last, not
        /// first as a model never measured).
        public var hasCalls = false
        /// Requests left in this minute's budget.
        public var requestsRemaining: Int?
        /// Tokens left in this minute's budget.
        public var tokensRemaining: Int?
        /// Of this worker's requests (tokens) per minute, how many background work may not spend:
        /// kept for interactive jobs (`RoutingState.interactiveReserve` of the budget).
        public var requestsReserved: Int?
        public var tokensReserved: Int?
        /// This worker's tokens per minute when its budget is full.
        public var tokensCapacity: Int?
        /// Until when the provider asked this worker for no calls (a 429's `retry-after`): the
        /// model is out of budget until then, and says why.
        public var pausedUntil: Date?
        /// The model's average price per 1K tokens now, when an off-peak window changes it from
        /// the list price (what ceilings and `cheapest` then compare).
        public var averagePricePer1K: Decimal?
        /// Why this worker cannot call the model, when only this worker cannot (its environment
        /// lacks the model's key); the router skips the model, other workers keep it.
        public var unavailableHere: String?

        /// A model state; every fact defaults to "healthy, idle, unknown".
        public init(
            breaker: Breaker = .closed, inFlight: Int = 0, latencyEWMAMS: Double? = nil, requestsRemaining: Int? = nil,
            tokensRemaining: Int? = nil, averagePricePer1K: Decimal? = nil, unavailableHere: String? = nil
        ) {
            self.breaker = breaker
            self.inFlight = inFlight
            self.latencyEWMAMS = latencyEWMAMS
            self.requestsRemaining = requestsRemaining
            self.tokensRemaining = tokensRemaining
            self.averagePricePer1K = averagePricePer1K
            self.unavailableHere = unavailableHere
        }
    }

    /// Per-model state by model name; a model missing here is healthy, idle and unmeasured.
    public var models: [String: ModelState]
    /// A number that differs from one decision to the next (the job id, or a counter): where
    /// `round_robin` starts and what `weighted` draws. The caller owns it, so a plan can be
    /// reproduced exactly.
    public var sequence: UInt64

    /// The share of each model's `max_concurrency` (and, through `requestsReserved` and
    /// `tokensReserved`, of its rate budget) that background jobs may not take: kept for
    /// interactive ones, as the worker keeps a share of its slots (`--reserve-interactive`).
    /// 0: none kept.
    public var interactiveReserve: Double

    /// A state with these model facts and sequence number.
    public init(models: [String: ModelState] = [:], sequence: UInt64 = 0, interactiveReserve: Double = 0) {
        self.models = models
        self.sequence = sequence
        self.interactiveReserve = interactiveReserve
    }

    /// The state of a model (the defaults when nothing is known).
    public subscript(model: String) -> ModelState {
        get { models[model] ?? ModelState() }
        set { models[model] = newValue }
    }
}

extension RoutingState {
    /// Of `capacity` (slots, calls in flight, requests or tokens a minute), what is kept for
    /// interactive work: the share, rounded up, but always leaving background work at least one.
    public static func reserved(of capacity: Int, share: Double) -> Int {
        guard share > 0, capacity > 1 else { return 0 }
        return min(Int((Double(capacity) * share).rounded(.up)), capacity - 1)
    }
}

extension RoutingState {
    /// The soonest moment a pause of one of these models ends, after `instant` (nil: none paused).
    public func soonestPauseEnd(of models: [String], after instant: Date) -> Date? {
        models.compactMap { self.models[$0]?.pausedUntil }.filter { $0 > instant }.min()
    }
}
