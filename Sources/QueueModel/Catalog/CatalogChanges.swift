import Foundation

/// What an import changed (or, for a dry run, would change): models and rules added, changed
/// (with the fields that differ, named as in the import document) and removed.
public struct CatalogChanges: Sendable, Hashable {
    /// One changed model or rule and the fields that differ.
    public struct Change: Sendable, Hashable {
        /// The model or rule name.
        public var name: String
        /// Field names as in the import document (`price_per_1k_input`, `fallbacks`).
        public var fields: [String]

        /// A change to `name` in `fields`.
        public init(name: String, fields: [String]) {
            self.name = name
            self.fields = fields
        }
    }

    /// Models the catalog did not have.
    public var addedModels: [String] = []
    /// Models whose fields differ.
    public var changedModels: [Change] = []
    /// Models no longer in the catalog.
    public var removedModels: [String] = []
    /// Rules the catalog did not have.
    public var addedRules: [String] = []
    /// Rules whose fields differ.
    public var changedRules: [Change] = []
    /// Rules no longer in the catalog.
    public var removedRules: [String] = []

    /// The differences between two catalogs, every list sorted by name.
    public init(from old: Catalog, to new: Catalog) {
        let oldModels = Dictionary(uniqueKeysWithValues: old.models.map { ($0.name, $0) })
        let newModels = Dictionary(uniqueKeysWithValues: new.models.map { ($0.name, $0) })
        for model in new.models {
            guard let before = oldModels[model.name] else {
                addedModels.append(model.name)
                continue
            }
            let fields = Self.differences(before, model)
            if !fields.isEmpty { changedModels.append(Change(name: model.name, fields: fields)) }
        }
        removedModels = old.models.map(\.name).filter { newModels[$0] == nil }

        let oldRules = Dictionary(uniqueKeysWithValues: old.rules.map { ($0.taskClass, $0) })
        let newRules = Dictionary(uniqueKeysWithValues: new.rules.map { ($0.taskClass, $0) })
        for rule in new.rules {
            guard let before = oldRules[rule.taskClass] else {
                addedRules.append(rule.taskClass)
                continue
            }
            let fields = Self.differences(before, rule)
            if !fields.isEmpty { changedRules.append(Change(name: rule.taskClass, fields: fields)) }
        }
        removedRules = old.rules.map(\.taskClass).filter { newRules[$0] == nil }
    }

    /// True when the import changes nothing.
    public var isEmpty: Bool {
        addedModels.isEmpty && changedModels.isEmpty && removedModels.isEmpty && addedRules.isEmpty
            && changedRules.isEmpty && removedRules.isEmpty
    }

    /// Names of models to insert or update.
    var modelsToWrite: Set<String> { Set(addedModels + changedModels.map(\.name)) }
    /// Names of rules to insert or update.
    var rulesToWrite: Set<String> { Set(addedRules + changedRules.map(\.name)) }

    /// The changes for people, one line per model or rule, e.g. `~ model gpt-4: price_per_1k_input, tier`.
    public func rendered() -> String {
        guard !isEmpty else { return "no changes: the catalog already matches the file" }
        var lines: [String] = []
        lines += addedModels.map { "+ model \($0)" }
        lines += changedModels.map { "~ model \($0.name): \($0.fields.joined(separator: ", "))" }
        lines += removedModels.map { "- model \($0)" }
        lines += addedRules.map { "+ rule \($0)" }
        lines += changedRules.map { "~ rule \($0.name): \($0.fields.joined(separator: ", "))" }
        lines += removedRules.map { "- rule \($0)" }
        let models = (addedModels.count, changedModels.count, removedModels.count)
        let rules = (addedRules.count, changedRules.count, removedRules.count)
        lines.append(
            "models: \(models.0) added, \(models.1) changed, \(models.2) removed; "
                + "rules: \(rules.0) added, \(rules.1) changed, \(rules.2) removed"
        )
        return lines.joined(separator: "\n")
    }

    /// The changes as JSON (for `--json`).
    public var json: JSONValue {
        func changes(_ list: [Change]) -> JSONValue {
            .array(list.map { ["name": .string($0.name), "fields": .array($0.fields.map { .string($0) })] })
        }
        func names(_ list: [String]) -> JSONValue { .array(list.map { .string($0) }) }
        return [
            "models": [
                "added": names(addedModels), "changed": changes(changedModels), "removed": names(removedModels),
            ],
            "rules": ["added": names(addedRules), "changed": changes(changedRules), "removed": names(removedRules)],
        ]
    }

    private static func differences(_ a: ModelSpec, _ b: ModelSpec) -> [String] {
        var fields: [String] = []
        func check<T: Equatable>(_ name: String, _ path: KeyPath<ModelSpec, T>) {
            if a[keyPath: path] != b[keyPath: path] { fields.append(name) }
        }
        check("provider", \.provider)
        check("base_url", \.baseURL)
        check("api_key_env", \.apiKeyEnv)
        check("upstream_model", \.upstreamModel)
        check("tier", \.tier)
        check("price_per_1k_input", \.pricePer1KInput)
        check("price_per_1k_output", \.pricePer1KOutput)
        check("price_per_1k_cached_input", \.pricePer1KCachedInput)
        check("price_per_1k_cache_write", \.pricePer1KCacheWrite)
        check("price_windows", \.priceWindows)
        check("context_window", \.contextWindow)
        check("capabilities", \.capabilities)
        check("weight", \.weight)
        check("max_concurrency", \.maxConcurrency)
        check("requests_per_minute", \.requestsPerMinute)
        check("tokens_per_minute", \.tokensPerMinute)
        check("enabled", \.enabled)
        check("settings", \.settings)
        check("supports", \.unsupported)
        return fields
    }

    private static func differences(_ a: RouteRule, _ b: RouteRule) -> [String] {
        var fields: [String] = []
        func check<T: Equatable>(_ name: String, _ path: KeyPath<RouteRule, T>) {
            if a[keyPath: path] != b[keyPath: path] { fields.append(name) }
        }
        check("primary", \.primary)
        check("fallbacks", \.fallbacks)
        check("strategy", \.strategy)
        check("max_cost_per_1k", \.maxCostPer1K)
        check("max_latency_ms", \.maxLatencyMS)
        check("quality_floor", \.qualityFloor)
        // Rule members the document keeps in settings are reported by their own names.
        let own = [
            RouteRule.SettingsKey.classes, RouteRule.SettingsKey.strategyWithoutAffinity,
            RouteRule.SettingsKey.loadEpsilon, RouteRule.SettingsKey.description,
        ]
        for key in own where a.settings[key] != b.settings[key] { fields.append(key) }
        var restA = a.settings
        var restB = b.settings
        for key in own {
            restA[key] = nil
            restB[key] = nil
        }
        if restA != restB { fields.append("settings") }
        return fields
    }
}
