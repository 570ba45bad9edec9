import Foundation

extension Router {
    /// One model the rule names, checked against the request and the state.
    struct Evaluation: Sendable {
        var name: String
        /// Position in the rule (primary 0), the tie-breaker of every strategy.
        var index: Int
        var model: ModelSpec?
        var dropReasons: [String] = []
        /// True when some reason will not pass with time (too small, too dear, not good enough).
        var isPermanentlyDropped = false
        var facts: [String] = []
        var inFlight = 0
        var latencyEWMAMS: Double?
        var score: Int?
        var price: Decimal = 0
        /// Dropped (among possibly other reasons) because the context window is too small.
        var isTooSmall = false

        var isKept: Bool { dropReasons.isEmpty && model != nil }

        mutating func drop(_ reason: String, permanent: Bool) {
            dropReasons.append(reason)
            if permanent { isPermanentlyDropped = true }
        }
    }

    /// The average of a model's input and output price per 1K tokens: what `max_cost_per_1k`
    /// and `cheapest` compare.
    public static func averagePricePer1K(_ model: ModelSpec) -> Decimal {
        (model.pricePer1KInput + model.pricePer1KOutput) / 2
    }

    /// Runs every filter on one model, collecting every reason to drop it (not just the first),
    /// so the explanation says all there is.
    func evaluate(
        _ name: String, index: Int, rule: RouteRule, scoringClass: TaskClass, estimate: PromptEstimate,
        ceiling: Decimal?,
        state: RoutingState
    ) -> Evaluation {
        var evaluation = Evaluation(name: name, index: index)
        guard let model = modelsByName[name] else {
            evaluation.drop("not in the catalog", permanent: true)
            return evaluation
        }
        evaluation.model = model
        let live = state[name]
        evaluation.inFlight = live.inFlight
        evaluation.latencyEWMAMS = live.latencyEWMAMS
        evaluation.score = scoringClass.score(of: model)

        let (price, priceText) = prices[name] ?? (Self.averagePricePer1K(model), "$\(Self.averagePricePer1K(model))/1K")
        evaluation.price = price
        evaluation.facts.append(priceText)
        let scored = scoringClass.scoredCapability(of: model)
        evaluation.facts.append(
            scored.map { "\($0.name) \($0.score)" } ?? "no \(scoringClass.capabilityNames[0]) score")
        evaluation.facts.append("context \(model.contextWindow)")
        evaluation.facts.append("\(live.inFlight) in flight")
        if let latency = live.latencyEWMAMS { evaluation.facts.append("EWMA \(Int(latency.rounded())) ms") }
        if live.breaker == .halfOpen { evaluation.facts.append("breaker half-open (probing)") }

        if !model.enabled { evaluation.drop("disabled in the catalog", permanent: true) }
        if live.breaker == .open { evaluation.drop("breaker open (unhealthy)", permanent: false) }
        if model.contextWindow < estimate.totalTokens {
            evaluation.isTooSmall = true
            evaluation.drop(
                "context window \(model.contextWindow) < \(estimate.totalTokens) tokens needed "
                    + "(≈ \(estimate.promptTokens) prompt + \(estimate.outputTokens) output)",
                permanent: true
            )
        }
        if let ceiling, price > ceiling {
            evaluation.drop("\(priceText) is over the cost ceiling $\(ceiling)/1K", permanent: true)
        }
        if let floor = rule.qualityFloor {
            if let score = evaluation.score, score < floor {
                evaluation.drop("\(scored?.name ?? "") score \(score) < quality floor \(floor)", permanent: true)
            } else if evaluation.score == nil, floor > 0 {
                evaluation.drop(
                    "no \(scoringClass.capabilityNames.joined(separator: "/")) score for quality floor \(floor)",
                    permanent: true)
            }
        }
        if let requests = live.requestsRemaining, requests <= 0 {
            evaluation.drop("requests-per-minute budget spent", permanent: false)
        }
        if let tokens = live.tokensRemaining, tokens < estimate.totalTokens {
            evaluation.drop(
                "tokens-per-minute budget: \(tokens) left < \(estimate.totalTokens) needed", permanent: false)
        }
        if let limit = model.maxConcurrency, live.inFlight >= limit {
            evaluation.drop("at max_concurrency (\(live.inFlight) of \(limit) in flight)", permanent: false)
        }
        return evaluation
    }
}
