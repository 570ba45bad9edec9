extension RouteRule {
    /// Keys of `settings` that the import document fills from a rule's own members.
    enum SettingsKey {
        static let classes = "classes"
        static let strategyWithoutAffinity = "strategy_without_affinity"
        static let loadEpsilon = "load_epsilon"
        static let description = "description"
        /// Not filled by the import: written in the rule's own `settings`, and checked there.
        static let backgroundMaxCostPer1K = "background_max_cost_per_1k"
    }

    /// The task classes this rule serves besides the one it is named after (`"classes"` in the
    /// import document, kept in `settings`), e.g. `simple_queries` serving `["simple", "factual"]`.
    public var servedClasses: [String] {
        settings[SettingsKey.classes]?.arrayValue?.compactMap(\.stringValue) ?? []
    }

    /// What a `hash` rule does with a job that has no affinity key (`ordered` unless the rule says).
    public var strategyWithoutAffinity: RoutingStrategy {
        settings[SettingsKey.strategyWithoutAffinity]?.stringValue.flatMap(RoutingStrategy.init(rawValue:))
            .flatMap { $0 == .hash ? nil : $0 } ?? .ordered
    }

    /// The bounded-load slack ε of a `hash` rule: a model already above (1 + ε) × its fair share of
    /// the in-flight requests passes its keys to the next model on the ring. Default 2.
    public var loadEpsilon: Double {
        settings[SettingsKey.loadEpsilon]?.doubleValue.flatMap { $0 > 0 ? $0 : nil } ?? Self.defaultLoadEpsilon
    }

    /// ε when a rule gives none: a model takes up to three times its share of the calls in flight
    /// before its keys spill. A hash rule is there for prompt caches, and at low load the bound is a
    /// call or two (⌈(1 + ε) × (calls in flight + 1) × share⌉): at 0.25 (the paper's and HAProxy's
    /// suggestion, for servers) a walkthrough's 500 conversations at about 10 calls in flight had 26%
    /// of their calls off their key's model and 57% of them split across models; at 2, 0.9% and 4%.
    public static let defaultLoadEpsilon = 2.0
}
