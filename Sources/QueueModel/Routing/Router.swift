import Foundation

/// The routing engine: turns a request and the live state of the models into a plan of attempts.
///
/// Pure and deterministic: no clock, no randomness, no I/O. The same catalog, request and state
/// always give the same plan, in any process. Build one per catalog version (it precomputes the
/// hash rings) and share it; it is a value.
///
/// For each request:
/// 1. classify it (`TaskClassifier`; the job's `task_class` wins);
/// 2. find its rule (`RuleMatcher`: by name, by `classes`, by alias, else `default`);
/// 3. check every model the rule names: in the catalog, enabled, breaker not open, context window
///    fits the estimated prompt plus output, within the cost ceiling, at or above the quality
///    floor, rate-limit budget left, below max concurrency;
/// 4. order the models that pass by the rule's strategy (a model the request names in its body's
///    `"model"` goes first, ahead of the rule's models, if it passes the filters);
/// 5. give each a tier by position and a timeout (the tier's target; the rule's
///    `max_latency_ms` for the primary).
public struct Router: Sendable {
    /// The catalog this router routes with.
    public let catalog: Catalog
    /// Classifies requests that carry no task class.
    public let classifier: TaskClassifier
    let matcher: RuleMatcher
    /// Each catalog model with what every plan needs of it, computed once. A reference, so the
    /// evaluations a plan copies around carry one pointer instead of a whole `ModelSpec`.
    let modelsByName: [String: ModelEntry]
    /// Each rule's models, by rule name, computed once: every plan for the rule walks them.
    let rulesModels: [String: RuleModels]
    /// Whether the catalog says of some model what it cannot take (`supports`): only then does a
    /// plan read what the request asks (`ModelFeature.needed(by:)`).
    let hasFeatureLimits: Bool

    /// A router for one catalog version; builds the hash rings of its `hash` rules.
    public init(catalog: Catalog, classifier: TaskClassifier = TaskClassifier()) {
        self.catalog = catalog
        self.classifier = classifier
        self.matcher = RuleMatcher(catalog: catalog)
        let models = Dictionary(catalog.models.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let entries = models.mapValues(ModelEntry.init)
        self.modelsByName = entries
        self.rulesModels = Dictionary(
            catalog.rules.map { ($0.taskClass, RuleModels(rule: $0, entries: entries)) },
            uniquingKeysWith: { first, _ in first }
        )
        self.hasFeatureLimits = catalog.models.contains { !$0.unsupported.isEmpty }
    }

    /// What `request` asks that the catalog says some model cannot take; empty when it says so of none.
    func featuresNeeded(by request: JSONValue) -> Set<ModelFeature> {
        hasFeatureLimits ? ModelFeature.needed(by: request) : []
    }

    /// Whether the job's own `task_class` found no rule by name, by `classes` or by alias, and was
    /// routed by the `default` rule: for a class the classifier does not produce, most likely a
    /// misspelt one ("sumarize"), which otherwise ran like any job without a word.
    public func isUnservedClass(_ classification: TaskClassification) -> Bool {
        classification.source == .job && !TaskClass.builtIn.contains(classification.taskClass)
            && matcher.match(classification.taskClass)?.byDefault == true
    }

    /// The plan for one request.
    /// - Parameters:
    ///   - request: the job's body, class, affinity key, priority.
    ///   - state: health, in-flight counts, latencies and budgets of the models, and a sequence
    ///     number for `round_robin` and `weighted`.
    ///   - explain: build the per-candidate explanation (`route --explain`); the worker's hot path
    ///     skips it, since formatting the facts costs more than the decision itself.
    /// - Returns: the attempts in order, or none with `unroutable` saying why.
    public func plan(for request: RoutingRequest, state: RoutingState, explain: Bool = true) -> RoutePlan {
        let estimate = PromptEstimate(request: request.body)
        let classification = classifier.classify(
            request.body, given: request.taskClass, estimate: estimate, conversation: request.affinityKey?.isEmpty == false)
        guard let match = matcher.match(classification.taskClass) else {
            return RoutePlan(
                attempts: [], classification: classification, rule: nil, strategy: nil, estimate: estimate,
                explanation: RouteExplanation(rule: "none", strategy: "none", candidates: []),
                unroutable: .init(
                    reason: "no routing rule serves class \"\(classification.taskClass)\" and there is no "
                        + "\"\(RuleMatcher.defaultRule)\" rule",
                    hint: "add a rule named \"\(classification.taskClass)\" or \"\(RuleMatcher.defaultRule)\" to the "
                        + "catalog (dispatcher models import), or submit with a task_class a rule serves",
                    isTransient: false
                )
            )
        }
        let rule = match.rule
        let ceiling = [rule.maxCostPer1K, request.maxCostPer1K].compactMap { $0 }.min()
        // A request that names a model ("model": "gpt-4o") gets it first, if it passes the filters
        // that protect the request (the job's own ceiling and allowed tiers, not the rule's floor
        // and ceiling: the caller chose it); the rule's models follow as fallbacks.
        let requested = Self.requestedModel(in: request.body)
        // Catalog rule names are unique, so the rule matched is the one these were computed for.
        let ruleModels = rulesModels[rule.taskClass] ?? RuleModels(rule: rule, entries: modelsByName)
        // What the request asks that Anthropic cannot give, read once, and only when the plan has
        // an Anthropic model.
        let anthropicRefusals =
            ruleModels.hasAnthropic || requested.flatMap({ modelsByName[$0] })?.spec.provider == .anthropic
            ? AnthropicLimits.untranslatable(request.body.objectValue ?? [:]) : []
        let needs = featuresNeeded(by: request.body)
        let pinned = requested.map { name in
            evaluate(
                name, index: -1, rule: RouteRule(taskClass: rule.taskClass, primary: name),
                scoringClass: match.scoringClass, estimate: estimate, ceiling: request.maxCostPer1K,
                allowedTiers: request.allowedTiers, background: request.priority == .background, state: state,
                explain: explain, anthropicRefusals: anthropicRefusals, needs: needs
            )
        }
        // The pinned model first, then the rule's: the order the explanation lists them in.
        var evaluations = pinned.map { [$0] } ?? []
        evaluations.reserveCapacity(evaluations.count + ruleModels.names.count)
        var criteria = Criteria(
            rule: rule, scoringClass: match.scoringClass, estimate: estimate, ceiling: ceiling,
            allowedTiers: request.allowedTiers, background: request.priority == .background, explain: explain
        )
        criteria.anthropicRefusals = anthropicRefusals
        criteria.needs = needs
        var kept: [Int] = []
        kept.reserveCapacity(ruleModels.names.count)
        var index = 0
        for (position, name) in ruleModels.names.enumerated() where name != requested {
            var evaluation = evaluate(
                name, entry: ruleModels.entries[position], index: index, criteria: criteria, state: state
            )
            index += 1
            evaluation.ringMember = ruleModels.ringMembers[position]
            if evaluation.isKept { kept.append(evaluations.count) }
            evaluations.append(evaluation)
        }
        var ordering = order(
            kept, of: evaluations, rule: rule, ring: ruleModels.ring, request: request,
            scoringClass: match.scoringClass, state: state, explain: explain
        )
        if let pinned {
            ordering.reason = "the request names model \"\(pinned.name)\": it goes first; then " + ordering.reason
            if pinned.isKept { ordering.models.insert(0, at: 0) }
        }

        let attempts = ordering.models.enumerated().map { position, chosen in
            RoutePlan.Attempt(
                model: evaluations[chosen].model!, position: position,
                timeout: position == 0 ? rule.maxLatencyMS.map { Duration.milliseconds($0) } : nil
            )
        }
        var candidates: [RouteExplanation.Candidate] = []
        if explain {
            candidates = attempts.map { attempt in
                let evaluation = evaluations[ordering.models[attempt.position]]
                var facts = evaluation.facts + (ordering.notes[evaluation.name] ?? [])
                facts.append(Self.timeoutFact(attempt))
                return RouteExplanation.Candidate(model: evaluation.name, position: attempt.position, facts: facts)
            }
            candidates += evaluations.filter { !$0.isKept }.map {
                RouteExplanation.Candidate(
                    model: $0.name, dropReasons: $0.dropReasons, facts: $0.facts, isDroppedForGood: $0.isPermanentlyDropped)
            }
        }
        var plan = RoutePlan(
            attempts: attempts, classification: classification, rule: rule, strategy: ordering.strategy,
            estimate: estimate,
            explanation: RouteExplanation(rule: match.reason, strategy: ordering.reason, candidates: candidates),
            unroutable: nil, ceiling: ceiling, allowedTiers: request.allowedTiers,
            background: request.priority == .background
        )
        plan.affinityHome = ordering.home
        if attempts.isEmpty {
            // Planning without words is for plans that work; one that fails is planned again
            // with them, so its error says why every model was dropped.
            if !explain { return self.plan(for: request, state: state, explain: true) }
            // Kept out of the rule's models by the request itself, it may still suit another of the
            // catalog's: then the rule is at fault, which adding that model fixes, not the request (a
            // review's 40,000 tokens failed as the request's fault on a rule of 32k models, and ran
            // on a 128k model named outright). Judged as a context escalation judges a model: the
            // request's ceiling, tiers and what Anthropic cannot give count; the rule's floor does not.
            let refusals = AnthropicLimits.untranslatable(request.body.objectValue ?? [:])
            let servableElsewhere = catalog.models.contains { model in
                !evaluate(
                    model.name, index: 0, rule: RouteRule(taskClass: "", primary: model.name),
                    scoringClass: match.scoringClass, estimate: estimate, ceiling: ceiling,
                    allowedTiers: request.allowedTiers, background: request.priority == .background, state: state,
                    explain: false, anthropicRefusals: refusals, needs: needs
                ).isPermanentlyDropped
            }
            plan.unroutable = Self.unroutable(
                rule: rule, evaluations: evaluations, servableElsewhere: servableElsewhere)
        }
        return plan
    }

    /// The model a request names in its body (`"model"`), unless empty or `auto`.
    public static func requestedModel(in body: JSONValue) -> String? {
        guard let name = body["model"]?.stringValue, !name.isEmpty, name != "auto" else { return nil }
        return name
    }

    /// The rule's models, primary first, each once.
    static func uniqueModels(of rule: RouteRule) -> [String] {
        var seen: Set<String> = []
        return rule.models.filter { seen.insert($0).inserted }
    }

    private static func timeoutFact(_ attempt: RoutePlan.Attempt) -> String {
        let source = attempt.timeoutSetByRule ? "rule max_latency_ms" : "\(attempt.tier) target"
        return "timeout \(attempt.timeoutMS) ms (\(source))"
    }

    /// What would let the rule take the request, from what kept each model out (a walkthrough's
    /// context-only case was told to raise a ceiling and lower a floor the rule did not have).
    private static func permanentFixes(_ evaluations: [Evaluation], rule: RouteRule) -> String {
        let reasons = evaluations.flatMap(\.dropReasons)
        var fixes: [String] = []
        if evaluations.contains(where: \.isTooSmall) { fixes.append("shorten the request or lower its max_tokens") }
        // The ceiling that bound it: the rule's, or a lower one (the request's, the background one).
        if let ceiling = reasons.first(where: { $0.contains("over the cost ceiling") }) {
            fixes.append(
                rule.maxCostPer1K.map { ceiling.hasSuffix("ceiling $\($0)/1K") } == true
                    ? "raise the rule's max_cost_per_1k"
                    : "raise the ceiling that bound it (the request's max_cost_per_1k, or the background ceiling)")
        }
        if reasons.contains(where: { $0.contains("quality floor") }) { fixes.append("lower its quality_floor") }
        if reasons.contains(where: { $0.contains("disabled in the catalog") }) { fixes.append("enable one of its models") }
        if reasons.contains(where: { $0.hasPrefix("Anthropic models have no equivalent") }) {
            fixes.append("submit it without what Anthropic models cannot take")
        }
        if reasons.contains(where: { $0.hasPrefix("the catalog says it cannot take") }) {
            fixes.append("submit it without what its models cannot take (or correct their supports in the catalog)")
        }
        if reasons.contains(where: { $0.contains("is not allowed here") }) {
            fixes.append("allow its models' tiers (dispatcher background ceiling --tiers)")
        }
        fixes.append("add a model that fits to the rule")
        return fixes.count == 1 ? fixes[0] : fixes.dropLast().joined(separator: ", ") + ", or " + fixes.last!
    }

    private static func unroutable(rule: RouteRule, evaluations: [Evaluation], servableElsewhere: Bool)
        -> RoutePlan.Unroutable
    {
        // Transient when some model is kept out only by something that passes (breaker, budget,
        // concurrency): that model may take the job later, whatever keeps the others out for good.
        let transient = evaluations.contains { !$0.isPermanentlyDropped }
        let reasons = evaluations.map { "\($0.name): \($0.dropReasons.joined(separator: "; "))" }
        return RoutePlan.Unroutable(
            reason: "no model of rule \"\(rule.taskClass)\" can take this request (" + reasons.joined(separator: " | ")
                + ")",
            hint: transient
                ? (evaluations.filter { !$0.isPermanentlyDropped }.allSatisfy {
                    $0.dropReasons.contains { $0.hasPrefix("not on this worker: ") }
                }
                    // A key this worker lacks is no passing state (a walkthrough's missing key was
                    // told to wait for health and prices).
                    ? "this worker cannot call them for the reasons given (a key not in its environment, a TLS "
                        + "setting it was not given): fix that and restart it; workers that can call them take the job"
                    : "every model is unhealthy, busy, out of rate budget or priced over the ceiling right now "
                        + "(a price window brings it within later); retry later")
                : permanentFixes(evaluations, rule: rule),
            isTransient: transient,
            isBusy: evaluations.contains { !$0.isPermanentlyDropped && !$0.isDroppedForMoreThanBusy },
            isTooLarge: !servableElsewhere && !evaluations.isEmpty && evaluations.allSatisfy(\.isTooSmall),
            isRequestsFault: !servableElsewhere && !evaluations.isEmpty
                && evaluations.allSatisfy { $0.isTooSmall || $0.refusesRequest }
        )
    }
}
