import Foundation
import QueueModel
import Testing

@Suite("Routing strategies")
struct RouterStrategyTests {
    typealias F = RoutingFixtures

    static let models = [
        F.model("alpha", price: "0.003", scores: ["reasoning": 70], weight: 1),
        F.model("bravo", price: "0.001", scores: ["reasoning": 90], weight: 3),
        F.model("charlie", price: "0.002", scores: ["reasoning": 80], weight: 0),
    ]

    private func order(_ strategy: RoutingStrategy, _ state: RoutingState = RoutingState()) -> [String] {
        F.order(Router(catalog: F.catalog(Self.models, strategy: strategy)), F.request(), state)
    }

    @Test("ordered: primary, then the fallbacks as listed")
    func ordered() {
        #expect(order(.ordered) == ["alpha", "bravo", "charlie"])
    }

    @Test("round_robin: the sequence picks where the rotation starts")
    func roundRobin() {
        #expect(order(.roundRobin, RoutingState(sequence: 0)) == ["alpha", "bravo", "charlie"])
        #expect(order(.roundRobin, RoutingState(sequence: 1)) == ["bravo", "charlie", "alpha"])
        #expect(order(.roundRobin, RoutingState(sequence: 5)) == ["charlie", "alpha", "bravo"])
        // A dropped model leaves the rotation instead of making a gap.
        var state = RoutingState(sequence: 1)
        state["bravo"] = RoutingState.ModelState(breaker: .open)
        #expect(order(.roundRobin, state) == ["charlie", "alpha"])
    }

    @Test("weighted: first picks follow the weights (±10% over 10,000 draws), and weight 0 is never first")
    func weighted() {
        var firsts: [String: Int] = [:]
        for sequence in 0..<10_000 {
            let plan = order(.weighted, RoutingState(sequence: UInt64(sequence)))
            firsts[plan[0], default: 0] += 1
            #expect(plan.count == 3)
        }
        #expect((6750...8250).contains(firsts["bravo"] ?? 0), "\(firsts)")
        #expect((2250...2750).contains(firsts["alpha"] ?? 0), "\(firsts)")
        #expect(firsts["charlie"] == nil)
        // Deterministic: the same sequence gives the same draw.
        #expect(order(.weighted, RoutingState(sequence: 77)) == order(.weighted, RoutingState(sequence: 77)))
    }

    /// A walkthrough's conversations on a weighted rule had 191 of 200 split over two or three
    /// models: each turn was a new draw.
    @Test("weighted and round_robin: a job with an affinity key draws by it, so the key keeps its model; keys spread by weight")
    func keyedDraws() {
        for strategy in [RoutingStrategy.weighted, .roundRobin] {
            let router = Router(catalog: F.catalog(Self.models, strategy: strategy))
            var firsts: [String: Int] = [:]
            for index in 0..<3000 {
                let request = F.request(affinity: "conv-\(index)")
                let plans = (0..<4).map { F.order(router, request, RoutingState(sequence: UInt64($0 * 7 + index))) }
                #expect(Set(plans.map { $0[0] }).count == 1, "\(strategy) conv-\(index): \(plans)")
                firsts[plans[0][0], default: 0] += 1
                // A model that leaves takes only its own keys along.
                var state = RoutingState()
                state["alpha"] = RoutingState.ModelState(breaker: .open)
                let without = F.order(router, request, state)
                if plans[0][0] != "alpha" { #expect(without[0] == plans[0][0]) }
            }
            if strategy == .weighted {
                #expect((2025...2475).contains(firsts["bravo"] ?? 0), "\(firsts)")
                #expect(firsts["charlie"] == nil)
            } else {
                #expect(firsts.count == 3 && firsts.values.allSatisfy { (800...1200).contains($0) }, "\(firsts)")
            }
        }
    }

    @Test("least_busy: fewest in flight first, ties in rule order")
    func leastBusy() {
        var state = RoutingState()
        state["alpha"].inFlight = 4
        state["bravo"].inFlight = 2
        state["charlie"].inFlight = 2
        #expect(order(.leastBusy, state) == ["bravo", "charlie", "alpha"])
    }

    @Test("lowest_latency: lowest EWMA first, unmeasured models first so they get measured")
    func lowestLatency() {
        var state = RoutingState()
        state["alpha"].latencyEWMAMS = 300
        state["bravo"].latencyEWMAMS = 900
        #expect(order(.lowestLatency, state) == ["charlie", "alpha", "bravo"])
        state["charlie"].latencyEWMAMS = 450
        #expect(order(.lowestLatency, state) == ["alpha", "charlie", "bravo"])
        // Called, never answered (every call failed at once): no latency, and last, not first as
        // unmeasured (a review's fast-failing model led every plan until its breaker opened).
        state["charlie"].latencyEWMAMS = nil
        state["charlie"].hasCalls = true
        #expect(order(.lowestLatency, state) == ["alpha", "bravo", "charlie"])
    }

    @Test("cheapest: lowest average price first, among models that meet the quality floor")
    func cheapest() {
        #expect(order(.cheapest) == ["bravo", "charlie", "alpha"])
        let floored = Router(catalog: F.catalog(Self.models, strategy: .cheapest, qualityFloor: 75))
        let request = RoutingRequest(body: ["messages": [["role": "user", "content": "hi"]]], taskClass: "r")
        // Rule "r" is no built-in class, so its scores are read under "r": none has one.
        #expect(F.order(floored, request).isEmpty)
        let reasoning = RouteRule(
            taskClass: "reasoning", primary: "alpha", fallbacks: ["bravo", "charlie"], strategy: .cheapest,
            qualityFloor: 75
        )
        let router = Router(catalog: Catalog(models: Self.models, rules: [reasoning]))
        #expect(
            F.order(router, RoutingRequest(body: ["messages": []], taskClass: "reasoning")) == ["bravo", "charlie"])
    }

    @Test("best_quality: highest capability score for the class first")
    func bestQuality() {
        let rule = RouteRule(
            taskClass: "reasoning", primary: "alpha", fallbacks: ["bravo", "charlie"], strategy: .bestQuality)
        let router = Router(catalog: Catalog(models: Self.models, rules: [rule]))
        #expect(
            F.order(router, RoutingRequest(body: ["messages": []], taskClass: "reasoning")) == [
                "bravo", "charlie", "alpha",
            ])
    }

    @Test("hash: the affinity key picks the model, the same every time")
    func hash() {
        let router = Router(catalog: F.catalog(Self.models, strategy: .hash))
        let first = F.order(router, F.request(affinity: "conv-9"))
        #expect(first == F.order(router, F.request(affinity: "conv-9")))
        // charlie has weight 0: no keys of its own, but still a last fallback.
        #expect(first.last == "charlie")
        let owners = Set((0..<200).map { F.order(router, F.request(affinity: "conv-\($0)"))[0] })
        #expect(owners == ["alpha", "bravo"])
    }
}
