import Foundation

extension Catalog {
    /// The catalog as an import document (`models` and `routing_rules`): `dispatcher models export`
    /// writes it, and importing it back changes nothing. Fields at their defaults are left out.
    public var document: JSONValue {
        var models: [String: JSONValue] = [:]
        for model in self.models { models[model.name] = Self.document(of: model) }
        var rules: [String: JSONValue] = [:]
        for rule in self.rules { rules[rule.taskClass] = Self.document(of: rule) }
        return ["models": .object(models), "routing_rules": .object(rules)]
    }

    static func document(of model: ModelSpec) -> JSONValue {
        var fields: [String: JSONValue] = [
            "provider": .string(model.provider.rawValue), "tier": .string(model.tier),
            "price_per_1k_input": .number(model.pricePer1KInput), "price_per_1k_output": .number(model.pricePer1KOutput),
            "context_window": .number(Double(model.contextWindow)), "weight": .number(model.weight),
        ]
        if let baseURL = model.baseURL { fields["base_url"] = .string(baseURL) }
        if let variable = model.apiKeyEnv { fields["api_key_env"] = .string(variable) }
        if let upstream = model.upstreamModel { fields["upstream_model"] = .string(upstream) }
        // Left out when not given, so the model keeps following its input price.
        if let price = model.pricePer1KCachedInput { fields["price_per_1k_cached_input"] = .number(price) }
        if let price = model.pricePer1KCacheWrite { fields["price_per_1k_cache_write"] = .number(price) }
        if model.priceWindows.arrayValue?.isEmpty == false { fields["price_windows"] = model.priceWindows }
        if !model.capabilities.isEmpty {
            fields["capabilities"] = .object(model.capabilities.mapValues { .number(Double($0)) })
        }
        if let value = model.maxConcurrency { fields["max_concurrency"] = .number(Double(value)) }
        if let value = model.requestsPerMinute { fields["requests_per_minute"] = .number(Double(value)) }
        if let value = model.tokensPerMinute { fields["tokens_per_minute"] = .number(Double(value)) }
        if !model.enabled { fields["enabled"] = false }
        if model.settings.objectValue?.isEmpty == false { fields["settings"] = model.settings }
        if !model.unsupported.isEmpty {
            fields["supports"] = .object(Dictionary(uniqueKeysWithValues: model.unsupported.map { ($0.rawValue, false) }))
        }
        return .object(fields)
    }

    static func document(of rule: RouteRule) -> JSONValue {
        var fields: [String: JSONValue] = ["primary": .string(rule.primary)]
        if !rule.fallbacks.isEmpty { fields["fallbacks"] = .array(rule.fallbacks.map { .string($0) }) }
        if rule.strategy != .ordered { fields["strategy"] = .string(rule.strategy.rawValue) }
        if let value = rule.maxCostPer1K { fields["max_cost_per_1k"] = .number(value) }
        if let value = rule.maxLatencyMS { fields["max_latency_ms"] = .number(Double(value)) }
        if let value = rule.qualityFloor { fields["quality_floor"] = .number(Double(value)) }
        // The import keeps these in the rule's settings; they go back to the fields they came from.
        var settings = rule.settings.objectValue ?? [:]
        for key in [
            RouteRule.SettingsKey.classes, RouteRule.SettingsKey.strategyWithoutAffinity,
            RouteRule.SettingsKey.loadEpsilon, RouteRule.SettingsKey.description,
        ] {
            if let value = settings.removeValue(forKey: key) { fields[key] = value }
        }
        if !settings.isEmpty { fields["settings"] = .object(settings) }
        return .object(fields)
    }
}
