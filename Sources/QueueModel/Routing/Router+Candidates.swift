import Foundation

extension Router {
    /// One model the rule names, checked against the request and the state.
    struct Evaluation: Sendable {
        var name: String
        /// Position in the rule (primary 0), the tie-breaker of every strategy.
        var index: Int
        /// Index in the rule's hash ring's members, nil when not a member.
        var ringMember: Int?
        var entry: ModelEntry?
        var model: ModelSpec? { entry?.spec }
        var dropReasons: [String] = []
        /// True when some reason will not pass with time (too small, too dear, not good enough).
        var isPermanentlyDropped = false
        var facts: [String] = []
        var inFlight = 0
        var latencyEWMAMS: Double?
        var hasCalls = false
        var score: Int?
        var price: Decimal = 0
        /// `price` as a Double, for comparing and sorting (Decimal comparison normalises both
        /// sides every time, which dominated a plan).
        var priceValue = 0.0
        /// Whether to word the drop reasons (the worker's hot path does not; an empty plan is
        /// planned again with explanation to say why).
        var explain = true
        private(set) var isDropped = false
        /// Dropped (among possibly other reasons) because the context window is too small.
        var isTooSmall = false
        /// Dropped (among possibly other reasons) because the model cannot take what the request
        /// asks for (`n` > 1 on Anthropic): the request's doing, as a too-small window is.
        var refusesRequest = false

        var isKept: Bool { !isDropped && entry != nil }

        /// True when some reason that passes is no mere busyness (a breaker open, a model this
        /// worker cannot call, a price that a window may lower).
        var isDroppedForMoreThanBusy = false

        /// - Parameter busy: the model is only busy (calls in flight, budget, a provider's pause):
        ///   it will be free in moments, however long the job has waited.
        mutating func drop(_ reason: @autoclosure () -> String, permanent: Bool, busy: Bool = false) {
            isDropped = true
            if explain { dropReasons.append(reason()) }
            if permanent { isPermanentlyDropped = true }
            if !permanent && !busy { isDroppedForMoreThanBusy = true }
        }
    }

    /// A catalog model and what every plan needs of it, computed once per catalog.
    final class ModelEntry: Sendable {
        let spec: ModelSpec
        let averagePricePer1K: Decimal
        let averagePricePer1KValue: Double
        let priceText: String
        /// The lowest average price per 1K its windows can bring it to (its list price when it has
        /// none, or only surcharges): over a ceiling, the model never comes within it.
        let lowestPricePer1KValue: Double
        /// The model's scored capability for each of `TaskClass.builtIn`, in that order (a class's
        /// capability names and the dictionary lookups cost a tenth of a plan when done per plan).
        let builtInScores: [(name: String, score: Int)?]

        init(_ spec: ModelSpec) {
            self.spec = spec
            // Decimal division is slow enough to dominate a plan if done per decision.
            self.averagePricePer1K = Router.averagePricePer1K(spec)
            self.averagePricePer1KValue = NSDecimalNumber(decimal: averagePricePer1K).doubleValue
            self.priceText = "$\(averagePricePer1K)/1K"
            self.lowestPricePer1KValue = NSDecimalNumber(decimal: PriceSchedule(spec).lowestAveragePricePer1K).doubleValue
            self.builtInScores = TaskClass.builtIn.map { $0.scoredCapability(of: spec) }
        }
    }

    /// The average of a model's input and output price per 1K tokens: what `max_cost_per_1k`
    /// and `cheapest` compare. It takes the full input price, not the cache prices: whether the
    /// provider's cache will serve a prompt is not known before the call.
    public static func averagePricePer1K(_ model: ModelSpec) -> Decimal { Pricing.averagePricePer1K(model) }

    /// A rule's models, each once, primary first, with their catalog entries (nil for a name the
    /// catalog lacks), and the rule's hash ring: computed once per catalog, since building them
    /// (a set of names, a dictionary lookup per model) cost a tenth of a plan.
    struct RuleModels: Sendable {
        let names: [String]
        let entries: [ModelEntry?]
        /// For a `hash` rule, the ring over its enabled catalog models. Health is not part of
        /// membership: an unhealthy model is walked past, so only its keys move.
        let ring: HashRing?
        /// Each model's index in `ring.members`, nil when it is not a member.
        let ringMembers: [Int?]
        /// Whether an Anthropic model is among them (a plan then reads what the request asks that
        /// Anthropic cannot give).
        let hasAnthropic: Bool

        init(rule: RouteRule, entries byName: [String: ModelEntry]) {
            names = Router.uniqueModels(of: rule)
            entries = names.map { byName[$0] }
            hasAnthropic = entries.contains { $0?.spec.provider == .anthropic }
            guard rule.strategy == .hash else {
                ring = nil
                ringMembers = names.map { _ in nil }
                return
            }
            var members: [(name: String, weight: Double)] = []
            ringMembers = entries.map { entry in
                guard let model = entry?.spec, model.enabled else { return nil }
                members.append((model.name, model.weight))
                return members.count - 1
            }
            ring = HashRing(members: members)
        }
    }

    /// What a plan checks every model against, worked out once per plan.
    struct Criteria {
        var rule: RouteRule
        var scoringClass: TaskClass
        /// `scoringClass`'s index in `TaskClass.builtIn`, where `ModelEntry.builtInScores` has it.
        var scoringIndex: Int?
        var estimate: PromptEstimate
        var ceiling: Decimal?
        /// `ceiling` as a Double, to compare with `Evaluation.priceValue` (NSDecimalNumber
        /// allocates, so this is done once, not once per model).
        var ceilingValue: Double?
        var allowedTiers: Set<String>?
        /// A background job: it leaves interactive work its share of each model's budget and
        /// calls in flight (`RoutingState.interactiveReserve`).
        var background: Bool
        var explain: Bool
        /// What the request asks that an Anthropic model cannot give (`AnthropicLimits`), read
        /// only when the plan has one.
        var anthropicRefusals: [String] = []
        /// What the request asks that the catalog says some model cannot take (`ModelFeature`),
        /// read only when the catalog says so of one.
        var needs: Set<ModelFeature> = []

        init(
            rule: RouteRule, scoringClass: TaskClass, estimate: PromptEstimate, ceiling: Decimal?,
            allowedTiers: Set<String>? = nil, background: Bool = false, explain: Bool = true
        ) {
            self.background = background
            self.rule = rule
            self.scoringClass = scoringClass
            self.scoringIndex = TaskClass.builtIn.firstIndex(of: scoringClass)
            self.estimate = estimate
            self.ceiling = ceiling
            self.ceilingValue = ceiling.map { NSDecimalNumber(decimal: $0).doubleValue }
            self.allowedTiers = allowedTiers
            self.explain = explain
        }
    }

    /// Runs every filter on one model, collecting every reason to drop it (not just the first),
    /// so the explanation says all there is.
    func evaluate(
        _ name: String, index: Int, rule: RouteRule, scoringClass: TaskClass, estimate: PromptEstimate,
        ceiling: Decimal?, allowedTiers: Set<String>? = nil, background: Bool,
        state: RoutingState, explain: Bool = true, anthropicRefusals: [String] = [], needs: Set<ModelFeature> = []
    ) -> Evaluation {
        var criteria = Criteria(
            rule: rule, scoringClass: scoringClass, estimate: estimate, ceiling: ceiling, allowedTiers: allowedTiers,
            background: background, explain: explain
        )
        criteria.anthropicRefusals = anthropicRefusals
        criteria.needs = needs
        return evaluate(name, entry: modelsByName[name], index: index, criteria: criteria, state: state)
    }

    /// `evaluate` for a model whose catalog entry the caller has already found.
    func evaluate(
        _ name: String, entry: ModelEntry?, index: Int, criteria: Criteria, state: RoutingState
    ) -> Evaluation {
        let explain = criteria.explain
        let estimate = criteria.estimate
        var evaluation = Evaluation(name: name, index: index)
        evaluation.explain = explain
        guard let entry else {
            evaluation.drop("not in the catalog", permanent: true)
            return evaluation
        }
        // Read through the entry, never copied out: a ModelSpec copy retains a dozen fields.
        evaluation.entry = entry
        let live = state[name]
        evaluation.inFlight = live.inFlight
        evaluation.latencyEWMAMS = live.latencyEWMAMS
        evaluation.hasCalls = live.hasCalls
        let scored =
            if let scoringIndex = criteria.scoringIndex { entry.builtInScores[scoringIndex] } else {
                criteria.scoringClass.scoredCapability(of: entry.spec)
            }
        evaluation.score = scored?.score

        var price = entry.averagePricePer1K
        var priceValue = entry.averagePricePer1KValue
        var priceText = entry.priceText
        if let offPeak = live.averagePricePer1K, offPeak != price {
            price = offPeak
            priceValue = NSDecimalNumber(decimal: offPeak).doubleValue
            priceText = explain ? "$\(offPeak)/1K \(offPeak < entry.averagePricePer1K ? "off-peak" : "surcharged")" : ""
        }
        evaluation.price = price
        evaluation.priceValue = priceValue
        if explain {
            evaluation.facts.append(priceText)
            evaluation.facts.append(
                scored.map { "\($0.name) \($0.score)" } ?? "no \(criteria.scoringClass.capabilityNames[0]) score")
            evaluation.facts.append("context \(entry.spec.contextWindow)")
            evaluation.facts.append("\(live.inFlight) in flight")
            if let latency = live.latencyEWMAMS { evaluation.facts.append("EWMA \(Int(latency.rounded())) ms") }
            if live.breaker == .halfOpen { evaluation.facts.append("breaker half-open (probing)") }
        }

        if !entry.spec.enabled { evaluation.drop("disabled in the catalog", permanent: true) }
        if entry.spec.provider == .anthropic, !criteria.anthropicRefusals.isEmpty {
            evaluation.refusesRequest = true
            evaluation.drop(
                "Anthropic models have no equivalent of \(criteria.anthropicRefusals.joined(separator: ", "))",
                permanent: true)
        }
        if !criteria.needs.isEmpty, case let lacking = criteria.needs.intersection(entry.spec.unsupported), !lacking.isEmpty {
            evaluation.refusesRequest = true
            evaluation.drop(
                "the catalog says it cannot take \(lacking.sorted().map(\.wording).joined(separator: ", ")) (supports)",
                permanent: true)
        }
        if live.breaker == .open { evaluation.drop("breaker open (unhealthy)", permanent: false) }
        // Another worker may call it: the job waits for one rather than failing as unroutable.
        if let reason = live.unavailableHere { evaluation.drop("not on this worker: \(reason)", permanent: false) }
        if entry.spec.contextWindow < estimate.totalTokens {
            evaluation.isTooSmall = true
            evaluation.drop(
                "context window \(entry.spec.contextWindow) < \(estimate.totalTokens) tokens needed "
                    + "(≈ \(estimate.promptTokens) prompt + \(estimate.outputTokens) output)",
                permanent: true
            )
        }
        if let ceiling = criteria.ceiling, let ceilingValue = criteria.ceilingValue, priceValue > ceilingValue {
            // A model whose windows can bring it within the ceiling may come within it later.
            evaluation.drop(
                "\(priceText) is over the cost ceiling $\(ceiling)/1K", permanent: entry.lowestPricePer1KValue > ceilingValue)
        }
        if let allowedTiers = criteria.allowedTiers, !allowedTiers.contains(entry.spec.tier) {
            evaluation.drop(
                "tier \(entry.spec.tier) is not allowed here (\(allowedTiers.sorted().joined(separator: ", ")))", permanent: true
            )
        }
        if let floor = criteria.rule.qualityFloor {
            if let score = evaluation.score, score < floor {
                evaluation.drop("\(scored?.name ?? "") score \(score) < quality floor \(floor)", permanent: true)
            } else if evaluation.score == nil, floor > 0 {
                evaluation.drop(
                    "no \(criteria.scoringClass.capabilityNames.joined(separator: "/")) score for quality floor \(floor)",
                    permanent: true)
            }
        }
        // Background work leaves interactive work its share of the model's budget and calls in
        // flight, as of the worker's slots: a backlog on a model limited to 2 calls otherwise
        // took both, and a person's question waited behind all of it.
        let background = criteria.background
        if let paused = live.pausedUntil {
            // The provider's own wait (a 429's retry-after), not the catalog's budget.
            evaluation.drop("paused by the provider until \(paused.postgresText)", permanent: false, busy: true)
        } else if let requests = live.requestsRemaining {
            if requests <= 0 {
                evaluation.drop("requests-per-minute budget spent", permanent: false, busy: true)
            } else if background, let reserved = live.requestsReserved, requests <= reserved {
                evaluation.drop(
                    "requests-per-minute budget: the \(requests) left are kept for interactive work", permanent: false,
                    busy: true)
            }
        }
        if live.pausedUntil == nil, let tokens = live.tokensRemaining {
            if tokens < estimate.totalTokens {
                evaluation.drop(
                    "tokens-per-minute budget: \(tokens) left < \(estimate.totalTokens) needed", permanent: false,
                    // Busy while a full budget would take it; a job larger than a minute's is not.
                    busy: live.tokensCapacity.map { estimate.totalTokens <= $0 } ?? false)
            } else if background, let reserved = live.tokensReserved, let capacity = live.tokensCapacity,
                tokens - estimate.totalTokens < min(reserved, max(0, capacity - estimate.totalTokens))
            {
                // (A job larger than what background work may spend runs on a full budget.)
                evaluation.drop(
                    "tokens-per-minute budget: \(reserved) of the \(tokens) left are kept for interactive work",
                    permanent: false, busy: true)
            }
        }
        if let limit = entry.spec.maxConcurrency {
            let reserved = background ? RoutingState.reserved(of: limit, share: state.interactiveReserve) : 0
            if live.inFlight >= limit {
                evaluation.drop("at max_concurrency (\(live.inFlight) of \(limit) in flight)", permanent: false, busy: true)
            } else if live.inFlight >= limit - reserved {
                evaluation.drop(
                    "at max_concurrency for background work (\(live.inFlight) of \(limit) in flight, \(reserved) kept "
                        + "for interactive work)", permanent: false, busy: true)
            }
        }
        return evaluation
    }
}
