extension Router {
    /// Where a request goes after a context-length error: a model with a context window larger
    /// than `tokens`.
    ///
    /// First the plan's own later attempts (the rule's order, already filtered); then any other
    /// enabled catalog model that is not unhealthy, has budget left, and meets the rule's quality
    /// floor and the plan's cost ceiling and price tiers (a background job's included) — the
    /// smallest sufficient window first (usually the cheapest), then the lowest price, then the name.
    /// - Parameters:
    ///   - tokens: the window that proved too small (the failed model's `contextWindow`, or the
    ///     token count the provider reported, whichever is larger).
    ///   - plan: the job's plan.
    ///   - position: the failed attempt's position; the answer comes after it.
    ///   - excluding: models already tried.
    ///   - state: the live state, as for `plan(for:state:)`.
    ///   - request: the job's request, so an Anthropic model is left out for what it cannot give
    ///     (`AnthropicLimits`), as the plan leaves it out.
    /// - Returns: the attempt to make next, or nil when no model has a larger window.
    public func largerContextAttempt(
        than tokens: Int, after plan: RoutePlan, position: Int, excluding: Set<String> = [], state: RoutingState,
        request: JSONValue? = nil
    ) -> RoutePlan.Attempt? {
        if let next = plan.attempts.first(where: {
            $0.position > position && $0.model.contextWindow > tokens && !excluding.contains($0.model.name)
        }) {
            return next
        }
        let planned = Set(plan.attempts.map(\.model.name))
        let scoringClass = matcher.match(plan.classification.taskClass)?.scoringClass ?? plan.classification.taskClass
        let anthropicRefusals = request.map { AnthropicLimits.untranslatable($0.objectValue ?? [:]) } ?? []
        let candidates = catalog.models.filter { model in
            guard model.contextWindow > tokens, !excluding.contains(model.name), !planned.contains(model.name) else {
                return false
            }
            let evaluation = evaluate(
                model.name, index: 0, rule: plan.rule ?? RouteRule(taskClass: "", primary: model.name),
                scoringClass: scoringClass, estimate: plan.estimate, ceiling: plan.ceiling,
                allowedTiers: plan.allowedTiers, background: plan.background, state: state,
                anthropicRefusals: anthropicRefusals, needs: request.map(featuresNeeded(by:)) ?? []
            )
            // The estimate said the request fits; the provider disagreed. Trust the provider.
            return evaluation.dropReasons.count == (evaluation.isTooSmall ? 1 : 0)
        }
        let best = candidates.min { a, b in
            (a.contextWindow, Self.averagePricePer1K(a), a.name) < (b.contextWindow, Self.averagePricePer1K(b), b.name)
        }
        return best.map { RoutePlan.Attempt(model: $0, position: position + 1) }
    }
}
