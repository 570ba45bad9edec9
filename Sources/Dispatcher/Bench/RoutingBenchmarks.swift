import Foundation
import QueueModel

/// Routing decisions per second, and per-decision latency, for a 20-model catalog with
/// classification, filters (health, context, cost ceiling, quality floor, rate budget) and
/// consistent hashing on.
enum RoutingBenchmarks {
    static func catalog() -> Catalog {
        let tiers = ["premium", "standard", "cheap", "open_source"]
        var models: [ModelSpec] = []
        for index in 0..<20 {
            let price = Decimal(string: ["0.03", "0.005", "0.001", "0.0004"][index % 4])!
            models.append(
                ModelSpec(
                    name: "model-\(index)", provider: .simulated, tier: tiers[index % 4], pricePer1KInput: price,
                    pricePer1KOutput: price * 2, contextWindow: [8192, 32768, 128_000, 200_000][index % 4],
                    capabilities: [
                        "reasoning": 60 + index, "code": 90 - index, "creative": 70, "factual": 75, "multilingual": 65 + index,
                    ],
                    weight: Double(1 + index % 3), requestsPerMinute: 10_000, settings: ["mode": "instant"]
                )
            )
        }
        let names = models.map(\.name)
        let rules = [
            RouteRule(taskClass: "default", primary: names[0], fallbacks: Array(names[1..<12]), strategy: .hash,
                      maxCostPer1K: Decimal(string: "0.05"), qualityFloor: 55),
            RouteRule(taskClass: "code", primary: names[3], fallbacks: Array(names[4..<16]), strategy: .bestQuality,
                      qualityFloor: 70),
            RouteRule(taskClass: "simple_queries", primary: names[2], fallbacks: Array(names[12..<20]),
                      strategy: .cheapest, maxCostPer1K: Decimal(string: "0.002")),
        ]
        return Catalog(models: models, rules: rules)
    }

    /// Times `decisions` plans after a tenth as many to warm up, then a tenth as many with explanation.
    static func run(report: inout BenchReport, decisions: Int = 200_000) {
        let router = Router(catalog: catalog())
        let prompts = [
            "What is the capital of France?", "Explain why the sky is blue in two sentences.",
            "Write a function in Swift that reverses a linked list.\n```swift\nfunc f() {}\n```",
            "Translate 'good morning' into Japanese: おはよう", "Summarise the following notes for the team meeting.",
        ]
        let requests: [RoutingRequest] = (0..<1000).map { index in
            RoutingRequest(
                body: ["messages": [["role": "user", "content": .string(prompts[index % prompts.count])]], "max_tokens": 256],
                affinityKey: "conversation-\(index)"
            )
        }
        var state = RoutingState()
        for index in 0..<20 {
            state["model-\(index)"] = .init(inFlight: index % 5, latencyEWMAMS: Double(300 + index * 40), requestsRemaining: 500)
        }
        state["model-7"].breaker = .open
        // Warm up, then time every decision.
        let warmUp = decisions / 10
        for index in 0..<warmUp {
            state.sequence = UInt64(index)
            _ = router.plan(for: requests[index % requests.count], state: state, explain: false)
        }
        var samples = [Int64](repeating: 0, count: decisions)
        let clock = ContinuousClock()
        let started = clock.now
        var attempts = 0
        for index in 0..<decisions {
            state.sequence = UInt64(index)
            let before = clock.now
            let plan = router.plan(for: requests[index % requests.count], state: state, explain: false)
            let elapsed = clock.now - before
            samples[index] = elapsed.components.attoseconds / 1_000_000_000 + elapsed.components.seconds * 1_000_000_000
            attempts += plan.attempts.count
        }
        let total = (clock.now - started).seconds
        samples.sort()
        precondition(attempts > 0)
        report.add(Measurement(scenario: "routing", metric: "decisions per second, 1 thread", value: Double(decisions) / total, unit: "/s"))
        report.add(Measurement(scenario: "routing", metric: "decision P50", value: Double(samples[decisions / 2]) / 1000, unit: "µs"))
        report.add(
            Measurement(scenario: "routing", metric: "decision P99", value: Double(samples[decisions * 99 / 100]) / 1000, unit: "µs",
                        note: "target ≤ 20 µs")
        )
        // The same with the full explanation (what `route --explain` builds).
        let explained = clock.now
        for index in 0..<warmUp {
            state.sequence = UInt64(index)
            _ = router.plan(for: requests[index % requests.count], state: state)
        }
        report.add(
            Measurement(scenario: "routing", metric: "decisions per second, with explanation",
                        value: Double(warmUp) / (clock.now - explained).seconds, unit: "/s")
        )
    }
}
