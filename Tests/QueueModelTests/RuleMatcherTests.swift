import QueueModel
import Testing

@Suite("Task class to rule")
struct RuleMatcherTests {
    static let catalog = Catalog(
        models: [RoutingFixtures.model("m")],
        rules: [
            RouteRule(taskClass: "simple_queries", primary: "m"),
            RouteRule(taskClass: "complex_reasoning", primary: "m"),
            RouteRule(taskClass: "code", primary: "m"),
            RouteRule(taskClass: "writing", primary: "m", settings: ["classes": ["creative"]]),
            RouteRule(taskClass: "default", primary: "m"),
        ]
    )

    @Test(
        "by name, then by classes, then by alias, then default",
        arguments: [
            ("code", "code"), ("creative", "writing"), ("simple", "simple_queries"), ("reasoning", "complex_reasoning"),
            ("multilingual", "default"), ("complex_reasoning", "complex_reasoning"), ("summarize", "default"),
        ]
    )
    func matches(taskClass: String, rule: String) {
        #expect(RuleMatcher(catalog: Self.catalog).match(TaskClass(taskClass))?.rule.taskClass == rule)
    }

    @Test("a rule named by a job is scored by the class its alias serves")
    func scoringClass() {
        let match = RuleMatcher(catalog: Self.catalog).match("complex_reasoning")
        #expect(match?.scoringClass == .reasoning)
    }

    @Test("without a default rule, unserved classes are listed and cannot be routed")
    func unserved() {
        let seedOnly = Catalog(
            models: [RoutingFixtures.model("m")],
            rules: [
                RouteRule(taskClass: "simple_queries", primary: "m"),
                RouteRule(taskClass: "complex_reasoning", primary: "m"),
            ]
        )
        let matcher = RuleMatcher(catalog: seedOnly)
        #expect(matcher.unservedClasses() == ["code", "creative", "long_context", "multilingual", "general"])
        let plan = Router(catalog: seedOnly).plan(
            for: RoutingRequest(body: ["messages": []], taskClass: "code"), state: RoutingState())
        #expect(plan.attempts.isEmpty)
        #expect(plan.unroutable?.reason == "no routing rule serves class \"code\" and there is no \"default\" rule")
        #expect(plan.unroutable?.isTransient == false)
    }
}
