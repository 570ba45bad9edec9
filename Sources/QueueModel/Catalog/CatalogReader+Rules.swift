import Foundation

extension CatalogReader {
    /// The fields a routing rule may have, in documentation order.
    static let ruleFields = [
        "primary", "fallback", "fallbacks", "strategy", "max_cost_per_1k", "max_latency_ms", "quality_floor",
        "classes", "strategy_without_affinity", "load_epsilon", "description", "settings",
    ]

    static let ruleSynonyms = [
        "fallback_models": "fallbacks", "models": "primary and fallbacks", "routing_strategy": "strategy",
        "timeout_ms": "max_latency_ms", "timeout": "max_latency_ms (milliseconds)", "max_cost": "max_cost_per_1k",
        "min_quality": "quality_floor", "task_classes": "classes",
    ]

    /// Reads the `routing_rules` section: an object keyed by rule name.
    /// - Parameter knownModels: every model a rule may name (the document's and the database's).
    mutating func rules(_ node: JSONNode, at path: String, knownModels: Set<String>) -> [RouteRule] {
        guard let members = node.members else {
            problem(path, "expected an object of rules keyed by name, got \(node.typeName)")
            return []
        }
        var rules: [RouteRule] = []
        var seen: Set<String> = []
        var classes: [(rule: String, classes: [String])] = []
        for member in members {
            let rulePath = Self.join(path, member.key)
            guard seen.insert(member.key).inserted else {
                problem(rulePath, "rule \"\(member.key)\" is defined twice", hint: "keep one definition")
                continue
            }
            if !Self.isValidName(member.key) || member.key.contains("/") {
                problem(
                    rulePath, "\"\(member.key)\" is not a usable rule name", hint: "use ASCII letters and digits and . _ - only")
            }
            if let rule = rule(member.value, named: member.key, at: rulePath, knownModels: knownModels) {
                rules.append(rule)
            }
            // Read again, so a rule with other problems still has its classes checked.
            if let listed = member.value.members?.first(where: { $0.key == "classes" })?.value {
                var quiet = CatalogReader()
                classes.append((member.key, quiet.stringList(listed, at: "") ?? []))
            }
        }
        checkClasses(classes, ruleNames: members.map(\.key), at: path)
        return rules
    }

    private mutating func rule(_ node: JSONNode, named name: String, at path: String, knownModels: Set<String>)
        -> RouteRule?
    {
        let before = problems.count
        guard let fields = members(node, at: path, allowed: Self.ruleFields, synonyms: Self.ruleSynonyms) else {
            return nil
        }
        let primary = string(fields["primary"], at: Self.join(path, "primary"), required: true)
        if let primary { checkModel(primary, at: Self.join(path, "primary"), knownModels: knownModels) }

        var fallbacks: [String] = []
        var fallbackKey = "fallbacks"
        if fields["fallback"] != nil && fields["fallbacks"] != nil {
            problem(Self.join(path, "fallback"), "both \"fallback\" and \"fallbacks\" are given", hint: "keep one list")
        } else if fields["fallback"] != nil {
            fallbackKey = "fallback"
        }
        let fallbackPath = Self.join(path, fallbackKey)
        if let list = stringList(fields[fallbackKey], at: fallbackPath) {
            let isArray = if case .array = fields[fallbackKey] { true } else { false }
            for (index, model) in list.enumerated() {
                let modelPath = isArray ? "\(fallbackPath)[\(index)]" : fallbackPath
                if model == primary || fallbacks.contains(model) {
                    problem(modelPath, "\"\(model)\" is already in this rule", hint: "list each model once")
                    continue
                }
                checkModel(model, at: modelPath, knownModels: knownModels)
                fallbacks.append(model)
            }
        }

        let strategy = strategy(fields["strategy"], at: Self.join(path, "strategy")) ?? .ordered
        var settings = json(fields["settings"], at: Self.join(path, "settings"), expected: "an object") ?? [:]
        checkBackgroundCeiling(in: fields["settings"], at: Self.join(path, "settings"))
        if let classes = stringList(fields["classes"], at: Self.join(path, "classes")) {
            settings[RouteRule.SettingsKey.classes] = .array(classes.map { .string($0) })
        }
        let withoutAffinityPath = Self.join(path, "strategy_without_affinity")
        if let other = self.strategy(fields["strategy_without_affinity"], at: withoutAffinityPath) {
            if other == .hash {
                problem(
                    withoutAffinityPath, "cannot be \"hash\": it is for jobs that have no affinity key",
                    hint: "use ordered, least_busy, cheapest, …")
            } else if strategy != .hash {
                problem(
                    withoutAffinityPath, "only applies when \"strategy\" is \"hash\"",
                    hint: "remove it, or set strategy to hash")
            }
            settings[RouteRule.SettingsKey.strategyWithoutAffinity] = .string(other.rawValue)
        }
        if let epsilon = double(fields["load_epsilon"], at: Self.join(path, "load_epsilon"), range: 0.01...10) {
            if strategy != .hash {
                // The bound on a model's share of the load applies to consistent hashing only. A
                // warning, not a refusal: rules stored before this check export it, and must
                // import back.
                warning(
                    Self.join(path, "load_epsilon"), "only applies when \"strategy\" is \"hash\"; ignored",
                    hint: "remove it, or set strategy to hash")
            }
            settings[RouteRule.SettingsKey.loadEpsilon] = .number(epsilon)
        }
        if let description = string(fields["description"], at: Self.join(path, "description")) {
            settings[RouteRule.SettingsKey.description] = .string(description)
        }
        let rule = RouteRule(
            taskClass: name, primary: primary ?? "", fallbacks: fallbacks, strategy: strategy,
            maxCostPer1K: decimal(fields["max_cost_per_1k"], at: Self.join(path, "max_cost_per_1k")),
            maxLatencyMS: integer(
                fields["max_latency_ms"], at: Self.join(path, "max_latency_ms"), range: 1...3_600_000, unit: " ms"),
            qualityFloor: integer(fields["quality_floor"], at: Self.join(path, "quality_floor"), range: 0...100),
            settings: settings
        )
        return problems.count == before ? rule : nil
    }

    private mutating func strategy(_ node: JSONNode?, at path: String) -> RoutingStrategy? {
        guard let text = string(node, at: path) else { return nil }
        if let strategy = RoutingStrategy(rawValue: text) { return strategy }
        let names = RoutingStrategy.allCases.map(\.rawValue)
        // LiteLLM's routing_strategy values got no suggestion (its field names did).
        let liteLLM = Self.liteLLMStrategies[text].map { " (LiteLLM's; the nearest here is \"\($0.rawValue)\")" }
        problem(
            path, "unknown strategy \"\(text)\"\(liteLLM ?? CatalogProblem.didYouMean(text, among: names))",
            hint: "use one of \(names.joined(separator: ", "))"
        )
        return nil
    }

    /// LiteLLM's `routing_strategy` values, and the strategy here that does the most alike.
    static let liteLLMStrategies: [String: RoutingStrategy] = [
        "simple-shuffle": .weighted, "least-busy": .leastBusy, "latency-based-routing": .lowestLatency,
        "usage-based-routing": .leastBusy, "usage-based-routing-v2": .leastBusy, "cost-based-routing": .cheapest,
    ]

    /// A rule's `settings.background_max_cost_per_1k` is a price, read as `max_cost_per_1k` is:
    /// the claim's gate (`switchyard.background_gate`) ignores one that is not a number
    /// (`sql/0011`), so a typo would lift the ceiling unnoticed; import refuses it instead.
    private mutating func checkBackgroundCeiling(in settings: JSONNode?, at path: String) {
        let key = RouteRule.SettingsKey.backgroundMaxCostPer1K
        // The last of duplicated keys, as the stored settings keep it.
        guard let node = settings?.members?.last(where: { $0.key == key })?.value else { return }
        let ceilingPath = Self.join(path, key)
        switch node {
        case .null:
            return
        case .number:
            _ = decimal(node, at: ceilingPath)
        default:
            problem(
                ceilingPath, "expected a number, got \(node.typeName)",
                hint: "write the most this rule's background jobs may pay per 1K tokens as a number without quotes, "
                    + "e.g. 0.001, or remove it to use the global ceiling (dispatcher background ceiling)"
            )
        }
    }

    private mutating func checkModel(_ name: String, at path: String, knownModels: Set<String>) {
        guard !knownModels.contains(name) else { return }
        if replacedModels.contains(name) {
            return problem(
                path,
                "model \"\(name)\" is in the database but not in this file's \"models\" section, which replaces the "
                    + "catalog's models",
                hint: "add \"\(name)\" to the file's models section, or import with --merge to keep the database's models")
        }
        problem(
            path, "unknown model \"\(name)\"\(CatalogProblem.didYouMean(name, among: knownModels))",
            hint: knownModels.isEmpty
                ? "add a \"models\" section that defines it (the catalog has no models yet)"
                : "define it in the \"models\" section, or name a model the catalog has"
        )
    }

    /// Each task class is served by at most one rule: by the rule's name or by its `classes`.
    private mutating func checkClasses(
        _ declared: [(rule: String, classes: [String])], ruleNames: [String], at path: String
    ) {
        var servedBy: [String: String] = [:]
        for name in ruleNames { servedBy[name] = name }
        for (rule, classes) in declared {
            for (index, taskClass) in classes.enumerated() {
                let classPath = "\(Self.join(Self.join(path, rule), "classes"))[\(index)]"
                if let other = servedBy[taskClass], other != rule {
                    problem(
                        classPath, "class \"\(taskClass)\" is already served by rule \"\(other)\"",
                        hint: "a class goes to one rule; remove it from one of them"
                    )
                } else {
                    servedBy[taskClass] = rule
                }
            }
        }
    }
}
