import Foundation
import QueueModel

/// Small catalogs and requests for the routing tests.
enum RoutingFixtures {
    static func model(
        _ name: String, price: String = "0.001", context: Int = 128_000, scores: [String: Int] = [:],
        weight: Double = 1,
        enabled: Bool = true, maxConcurrency: Int? = nil
    ) -> ModelSpec {
        ModelSpec(
            name: name, provider: .simulated, tier: "standard", pricePer1KInput: Decimal(string: price)!,
            pricePer1KOutput: Decimal(string: price)!, contextWindow: context, capabilities: scores, weight: weight,
            maxConcurrency: maxConcurrency, enabled: enabled
        )
    }

    /// A catalog with one rule `r` over the given models, in order.
    static func catalog(
        _ models: [ModelSpec], strategy: RoutingStrategy = .ordered, maxCost: String? = nil, qualityFloor: Int? = nil,
        maxLatencyMS: Int? = nil, settings: JSONValue = [:]
    ) -> Catalog {
        let rule = RouteRule(
            taskClass: "r", primary: models[0].name, fallbacks: models.dropFirst().map(\.name), strategy: strategy,
            maxCostPer1K: maxCost.flatMap { Decimal(string: $0) }, maxLatencyMS: maxLatencyMS,
            qualityFloor: qualityFloor,
            settings: settings
        )
        return Catalog(models: models, rules: [rule])
    }

    /// A request routed to rule `r` (its class names the rule).
    static func request(_ prompt: String = "hello", affinity: String? = nil, maxTokens: Int? = nil) -> RoutingRequest {
        var body: JSONValue = ["messages": [["role": "user", "content": .string(prompt)]]]
        if let maxTokens { body["max_tokens"] = .number(Double(maxTokens)) }
        return RoutingRequest(body: body, taskClass: "r", affinityKey: affinity)
    }

    /// The plan's models, in order.
    static func order(_ router: Router, _ request: RoutingRequest, _ state: RoutingState = RoutingState()) -> [String] {
        router.plan(for: request, state: state).attempts.map(\.model.name)
    }

    /// The text of the example catalog shipped in `examples/catalog.json`.
    static var exampleCatalogData: Data {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return FileManager.default.contents(atPath: root.appendingPathComponent("examples/catalog.json").path) ?? Data()
    }
}
