/// Finds the routing rule for a task class.
///
/// In this order:
/// 1. the rule named after the class (a rule `code` serves class `code`; a job whose task_class is
///    `simple_queries` gets that rule);
/// 2. the rule that lists the class in its `classes` (e.g. `"classes": ["simple", "factual"]`);
/// 3. the alias table, so the seed rules work as users already write them:
///    `simple` → `simple_queries`, `reasoning` → `complex_reasoning`;
/// 4. the rule named `default`.
///
/// A class none of these finds cannot be routed; an import warns about such classes.
public struct RuleMatcher: Sendable {
    /// The rule that serves every class no other rule does.
    public static let defaultRule = "default"

    /// Built-in class → rule names used when no rule is named after or lists the class.
    public static let aliases: [TaskClass: String] = [.simple: "simple_queries", .reasoning: "complex_reasoning"]

    /// A rule found for a class, and why.
    public struct Match: Sendable, Hashable {
        /// The rule found.
        public var rule: RouteRule
        /// How the rule was found, for people.
        public var reason: String
        /// The class whose capability scores measure models under this rule: the job's class,
        /// or, for a class that is a rule name (`complex_reasoning`), the built-in class the rule
        /// serves (`reasoning`).
        public var scoringClass: TaskClass
        /// Found by the last step, the `default` rule: no rule is named after the class, lists it,
        /// or is its alias.
        public var byDefault = false
    }

    private let rulesByName: [String: RouteRule]
    private let rulesByClass: [String: RouteRule]

    /// A matcher over a catalog's rules.
    public init(catalog: Catalog) {
        rulesByName = Dictionary(catalog.rules.map { ($0.taskClass, $0) }, uniquingKeysWith: { first, _ in first })
        var byClass: [String: RouteRule] = [:]
        // Rules are sorted by name, so when two list one class the first name wins, everywhere.
        for rule in catalog.rules {
            for taskClass in rule.servedClasses where byClass[taskClass] == nil { byClass[taskClass] = rule }
        }
        rulesByClass = byClass
    }

    /// The rule for a class, or nil when no rule serves it and there is no `default` rule.
    public func match(_ taskClass: TaskClass) -> Match? {
        if let rule = rulesByName[taskClass.rawValue] {
            return Match(
                rule: rule, reason: "the rule named \"\(taskClass)\"", scoringClass: scoringClass(taskClass, rule))
        }
        if let rule = rulesByClass[taskClass.rawValue] {
            return Match(
                rule: rule, reason: "rule \"\(rule.taskClass)\" lists class \"\(taskClass)\"", scoringClass: taskClass)
        }
        if let name = Self.aliases[taskClass], let rule = rulesByName[name] {
            return Match(rule: rule, reason: "alias \(taskClass) → \(name)", scoringClass: taskClass)
        }
        if let rule = rulesByName[Self.defaultRule] {
            return Match(
                rule: rule, reason: "no rule for \"\(taskClass)\": the \"\(Self.defaultRule)\" rule",
                scoringClass: taskClass, byDefault: true)
        }
        return nil
    }

    /// The built-in classes no rule would serve.
    public func unservedClasses() -> [String] {
        TaskClass.builtIn.filter { match($0) == nil }.map(\.rawValue)
    }

    private func scoringClass(_ taskClass: TaskClass, _ rule: RouteRule) -> TaskClass {
        if TaskClass.builtIn.contains(taskClass) { return taskClass }
        if let alias = Self.aliases.first(where: { $0.value == rule.taskClass })?.key { return alias }
        return rule.servedClasses.first.map(TaskClass.init(rawValue:)) ?? taskClass
    }

    /// The class the router scores the rule's models by, when it is the same for every class the
    /// rule takes (as `match` finds them: its name, the classes it lists, an alias to it); nil for
    /// the `default` rule, which takes every class no other rule does.
    public static func scoringClass(of rule: RouteRule, in catalog: Catalog) -> TaskClass? {
        let scoring = scoringClasses(of: rule, in: catalog)
        return scoring.count == 1 ? scoring.first : nil
    }

    /// Every class the router may score the rule's models by (for the classes it takes by name,
    /// by listing, by alias); empty for the `default` rule, whose classes are any others.
    public static func scoringClasses(of rule: RouteRule, in catalog: Catalog) -> Set<TaskClass> {
        guard rule.taskClass != defaultRule else { return [] }
        let matcher = RuleMatcher(catalog: catalog)
        let classes = [TaskClass(rule.taskClass)] + rule.servedClasses.map(TaskClass.init(rawValue:))
            + aliases.filter { $0.value == rule.taskClass }.map(\.key)
        return Set(classes.compactMap { taskClass in
            matcher.match(taskClass).flatMap { $0.rule.taskClass == rule.taskClass ? $0.scoringClass : nil }
        })
    }
}
