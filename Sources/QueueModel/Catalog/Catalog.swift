/// The model catalog and routing rules as one value: what `switchyard.models` and
/// `switchyard.routes` hold, or what an import document would make of them.
public struct Catalog: Sendable, Hashable {
    /// Models, sorted by name.
    public private(set) var models: [ModelSpec]
    /// Routing rules, sorted by name (`taskClass`).
    public private(set) var rules: [RouteRule]

    /// A catalog of these models and rules (each sorted by name; a later duplicate name wins).
    public init(models: [ModelSpec] = [], rules: [RouteRule] = []) {
        self.models = Self.unique(models, by: \.name)
        self.rules = Self.unique(rules, by: \.taskClass)
    }

    /// No models and no rules.
    public static let empty = Catalog()

    /// The model with this name, or nil.
    public func model(named name: String) -> ModelSpec? { models.first { $0.name == name } }

    /// The rule with this name, or nil.
    public func rule(named name: String) -> RouteRule? { rules.first { $0.taskClass == name } }

    /// Every model's name.
    public var modelNames: Set<String> { Set(models.map(\.name)) }

    private static func unique<T>(_ items: [T], by name: KeyPath<T, String>) -> [T] {
        var byName: [String: T] = [:]
        for item in items { byName[item[keyPath: name]] = item }
        return byName.keys.sorted().map { byName[$0]! }
    }
}
