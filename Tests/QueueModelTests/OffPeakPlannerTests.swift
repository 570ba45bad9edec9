import Foundation
import QueueModel
import Testing

/// The background policy's decisions, at chosen instants (an injected clock): no waiting on real time.
@Suite("Off-peak planner")
struct OffPeakPlannerTests {
    static func date(_ text: String) -> Date { ISO8601Parsing.date(text)! }

    /// `premium` ($0.01/1K) and `budget` ($0.002/1K list, ×0.25 from 22:00 to 06:00 UTC → $0.0005).
    static let catalog = Catalog(
        models: [
            ModelSpec(name: "premium", provider: .simulated, tier: "premium", pricePer1KInput: 0.01, pricePer1KOutput: 0.01),
            ModelSpec(
                name: "budget", provider: .simulated, tier: "open_source", pricePer1KInput: 0.002,
                pricePer1KOutput: 0.002,
                priceWindows: [["start": "22:00", "end": "06:00", "time_zone": "UTC", "multiplier": 0.25]]
            ),
        ],
        rules: [RouteRule(taskClass: "default", primary: "premium", fallbacks: ["budget"])]
    )

    static func planner(_ policy: BackgroundPolicy) -> OffPeakPlanner {
        OffPeakPlanner(router: Router(catalog: catalog), policy: policy)
    }

    /// The routing state at an instant, with off-peak prices the way the worker computes them.
    static func state(at instant: Date) -> RoutingState {
        var state = RoutingState()
        for model in catalog.models {
            state[model.name].averagePricePer1K = PriceSchedule(model).averagePricePer1K(at: instant)
        }
        return state
    }

    static func request(_ priority: Priority) -> RoutingRequest {
        RoutingRequest(body: ["messages": [["role": "user", "content": "hi"]]], priority: priority)
    }

    static let ceiling = BackgroundPolicy(maxCostPer1K: Decimal(string: "0.001"))

    /// A routing walkthrough's tiers kept every model out, and the reason blamed a ceiling every
    /// model was under ("it waits until the ceiling is raised").
    @Test("a job the tiers keep out is told so, with the ceiling when both apply")
    func tiersNamed() {
        let noon = Self.date("2026-11-26T12:00:00Z")
        func reason(_ policy: BackgroundPolicy) -> String {
            guard case .postpone(_, let reason) = Self.planner(policy).decide(
                Self.request(.background), deadline: nil, maxAttempts: 3, state: Self.state(at: noon), now: noon)
            else { return "ran" }
            return reason
        }
        #expect(
            reason(BackgroundPolicy(tiers: ["cheap"])) == "no model of its rule is within the background tiers (cheap) "
                + "at any hour; it waits until the tiers change or a drain begins (dispatcher background ceiling … "
                + "--tiers | drain), looking again hourly")
        #expect(
            reason(BackgroundPolicy(maxCostPer1K: Decimal(string: "1"), tiers: ["cheap"])).hasPrefix(
                "no model of its rule is within the background ceiling of $1/1K and the background tiers (cheap) at "
                    + "any hour; it waits until the ceiling or the tiers change"))
    }

    /// A review's image job, whose rule's model in its window takes no images, waited "for a breaker
    /// or budget", put back every five minutes for good.
    @Test("a job waits only for the windows of models that can take it")
    func waitsOnlyForModelsThatTakeIt() {
        var budget = Self.catalog.model(named: "budget")!  // the one with the window
        budget.unsupported = [.images]
        let catalog = Catalog(models: [Self.catalog.model(named: "premium")!, budget], rules: Self.catalog.rules)
        let planner = OffPeakPlanner(router: Router(catalog: catalog), policy: Self.ceiling)
        let night = Self.date("2026-11-26T23:00:00Z")
        let image = RoutingRequest(
            body: ["messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": "https://x/y.png"]]]]]],
            priority: .background)
        #expect(ModelFeature.needed(by: image.body) == [.images])
        #expect(planner.router.plan(for: image, state: Self.state(at: night)).attempts.map(\.model.name) == ["premium"])
        let decision = planner.decide(image, deadline: nil, maxAttempts: 3, state: Self.state(at: night), now: night)
        guard case .postpone(_, let reason) = decision else {
            Issue.record("expected a postponement, got \(decision)")
            return
        }
        #expect(reason.hasPrefix("no model of its rule is within the background ceiling of $0.001/1K at any hour"), "\(reason)")
        // A text job runs in the window, as before.
        guard case .run(let plan, nil) = planner.decide(
            Self.request(.background), deadline: nil, maxAttempts: 3, state: Self.state(at: night), now: night)
        else {
            Issue.record("expected a run")
            return
        }
        #expect(plan.attempts.map(\.model.name) == ["budget"])
    }

    /// The planner re-derived the router's lasting drops and left out the rule's quality floor: a
    /// job waited for the window of a model under it, and in that window was looked at again every
    /// five minutes, "breaker open or rate budget spent", all night.
    @Test("a job waits only for the windows of models its rule's quality floor lets take it")
    func waitsOnlyForModelsOverTheFloor() {
        var premium = Self.catalog.model(named: "premium")!
        premium.capabilities = ["simple": 95]
        var budget = Self.catalog.model(named: "budget")!  // the one with the window
        budget.capabilities = ["simple": 40]
        let rule = RouteRule(taskClass: "default", primary: "premium", fallbacks: ["budget"], qualityFloor: 80)
        let planner = OffPeakPlanner(router: Router(catalog: Catalog(models: [premium, budget], rules: [rule])), policy: Self.ceiling)
        for instant in [Self.date("2026-11-26T12:00:00Z"), Self.date("2026-11-26T23:00:00Z")] {
            let decision = planner.decide(
                Self.request(.background), deadline: nil, maxAttempts: 3, state: Self.state(at: instant), now: instant)
            guard case .postpone(let until, let reason) = decision else {
                Issue.record("expected a postponement, got \(decision)")
                continue
            }
            #expect(reason.hasPrefix("no model of its rule is within the background ceiling of $0.001/1K at any hour"), "\(reason)")
            #expect(until == instant.addingTimeInterval(3600))
        }
    }

    @Test("outside the window, background work is postponed to the window's start")
    func waitsOutsideTheWindow() {
        let noon = Self.date("2026-11-26T12:00:00Z")
        let decision = Self.planner(Self.ceiling).decide(
            Self.request(.background), deadline: nil, maxAttempts: 3, state: Self.state(at: noon), now: noon
        )
        guard case .postpone(let until, let reason) = decision else {
            Issue.record("expected a postponement, got \(decision)")
            return
        }
        #expect(until == Self.date("2026-11-26T22:00:00Z"))
        #expect(reason == "no model is within the background ceiling of $0.001/1K until 2026-11-26 22:00:00 UTC")

        // With a deadline whose escalation point comes first: the reason says when it runs anyway.
        let soon = Self.planner(Self.ceiling).decide(
            Self.request(.background), deadline: Self.date("2026-11-26T15:00:00Z"), maxAttempts: 3,
            state: Self.state(at: noon), now: noon)
        guard case .postpone(let escalation, let why) = soon else {
            Issue.record("expected a postponement, got \(soon)")
            return
        }
        #expect(escalation < Self.date("2026-11-26T15:00:00Z"))
        #expect(
            why.hasPrefix("no model is within the background ceiling of $0.001/1K until 2026-11-26 22:00:00 UTC; "
                + "it runs above the ceiling from \(escalation.readableUTC), "), "\(why)")
        #expect(why.hasSuffix(" s before its deadline"), "\(why)")
    }

    @Test("a model within the ceiling at list price waits out a surcharge window, to its end")
    func waitsOutASurcharge() {
        let catalog = Catalog(
            models: [
                ModelSpec(
                    name: "surge", provider: .simulated, pricePer1KInput: 0.001, pricePer1KOutput: 0.001,
                    priceWindows: [["start": "11:00", "end": "12:00", "time_zone": "UTC", "multiplier": 5]])
            ],
            rules: [RouteRule(taskClass: "default", primary: "surge")])
        let planner = OffPeakPlanner(router: Router(catalog: catalog), policy: BackgroundPolicy(maxCostPer1K: 0.002))
        let schedule = PriceSchedule(catalog.models[0])
        func state(_ instant: Date) -> RoutingState {
            var state = RoutingState()
            state["surge"].averagePricePer1K = schedule.averagePricePer1K(at: instant)
            return state
        }
        let during = Self.date("2026-11-27T11:27:00Z")
        let decision = planner.decide(Self.request(.background), deadline: nil, maxAttempts: 3, state: state(during), now: during)
        guard case .postpone(let until, _) = decision else {
            Issue.record("expected a postponement during the surcharge, got \(decision)")
            return
        }
        #expect(until == Self.date("2026-11-27T12:00:00Z"))
        let after = Self.date("2026-11-27T12:00:00Z")
        guard case .run = planner.decide(Self.request(.background), deadline: nil, maxAttempts: 3, state: state(after), now: after)
        else {
            Issue.record("expected the job to run once the surcharge ends")
            return
        }
    }

    @Test("inside the window, background work runs on the model that is cheap now, and only on it")
    func runsInsideTheWindow() {
        let night = Self.date("2026-11-26T23:00:00Z")
        let decision = Self.planner(Self.ceiling).decide(
            Self.request(.background), deadline: nil, maxAttempts: 3, state: Self.state(at: night), now: night
        )
        guard case .run(let plan, let escalation) = decision else {
            Issue.record("expected a plan, got \(decision)")
            return
        }
        #expect(plan.attempts.map(\.model.name) == ["budget"])
        #expect(escalation == nil)
    }

    @Test("near its deadline, background work runs past its ceiling, cheapest model first, and says why")
    func escalatesNearTheDeadline() {
        let noon = Self.date("2026-11-26T12:00:00Z")
        let decision = Self.planner(Self.ceiling).decide(
            Self.request(.background), deadline: noon.addingTimeInterval(90), maxAttempts: 3,
            state: Self.state(at: noon), now: noon
        )
        guard case .run(let plan, let escalation) = decision else {
            Issue.record("expected a plan, got \(decision)")
            return
        }
        // The ceiling lifted as little as it can be: budget ($0.002 at noon) before premium ($0.01),
        // the rule's order for interactive work (a cost walkthrough's escalations all ran on the
        // primary, at 4.5 times the price).
        #expect(plan.attempts.map(\.model.name) == ["budget", "premium"])
        #expect(plan.attempts.map(\.tier) == [.primary, .secondary])
        #expect(escalation?.contains("within its escalation horizon of 109 s") == true)
        #expect(escalation?.contains("no model is within the background ceiling of $0.001/1K") == true)
        #expect(escalation?.hasSuffix("; its models in the order of their price now, cheapest first") == true)
        // A model the request names stays first.
        var named = Self.request(.background)
        named.body["model"] = "premium"
        guard case .run(let namedPlan, let namedWhy) = Self.planner(Self.ceiling).decide(
            named, deadline: noon.addingTimeInterval(90), maxAttempts: 3, state: Self.state(at: noon), now: noon)
        else {
            Issue.record("expected a plan")
            return
        }
        #expect(namedPlan.attempts.first?.model.name == "premium")
        #expect(namedWhy?.contains("cheapest first") == false, "\(String(describing: namedWhy))")

        // With the deadline further away, it waits — but no later than its escalation point.
        let later = Self.planner(Self.ceiling).decide(
            Self.request(.background), deadline: noon.addingTimeInterval(3600), maxAttempts: 3,
            state: Self.state(at: noon), now: noon
        )
        guard case .postpone(let until, _) = later else {
            Issue.record("expected a postponement, got \(later)")
            return
        }
        #expect(until == noon.addingTimeInterval(3600 - 109.5))
    }

    @Test("interactive work never waits for a window")
    func interactiveNeverWaits() {
        let noon = Self.date("2026-11-26T12:00:00Z")
        let decision = Self.planner(Self.ceiling).decide(
            Self.request(.interactive), deadline: nil, maxAttempts: 3, state: Self.state(at: noon), now: noon
        )
        guard case .run(let plan, nil) = decision else {
            Issue.record("expected an unconstrained plan, got \(decision)")
            return
        }
        #expect(plan.attempts.first?.model.name == "premium")
    }

    @Test("drain ignores the ceiling until its end; tiers limit background work to cheap tiers")
    func drainAndTiers() {
        let noon = Self.date("2026-11-26T12:00:00Z")
        var draining = Self.ceiling
        draining.drainUntil = noon.addingTimeInterval(600)
        guard case .run(let plan, nil) = Self.planner(draining).decide(
            Self.request(.background), deadline: nil, maxAttempts: 3, state: Self.state(at: noon), now: noon
        ) else {
            Issue.record("expected an unconstrained plan while draining")
            return
        }
        #expect(plan.attempts.first?.model.name == "premium")

        let cheapTiers = BackgroundPolicy(tiers: ["open_source"])
        guard case .run(let tiered, nil) = Self.planner(cheapTiers).decide(
            Self.request(.background), deadline: nil, maxAttempts: 3, state: Self.state(at: noon), now: noon
        ) else {
            Issue.record("expected a plan on the open-source tier")
            return
        }
        #expect(tiered.attempts.map(\.model.name) == ["budget"])
    }

    @Test("a model within the ceiling that cannot take the job now (breaker open) is looked at again in five minutes")
    func unavailableWithinTheCeiling() {
        let night = Self.date("2026-11-26T23:00:00Z")
        var state = Self.state(at: night)
        state["budget"].breaker = .open
        let decision = Self.planner(Self.ceiling).decide(
            Self.request(.background), deadline: nil, maxAttempts: 3, state: state, now: night
        )
        guard case .postpone(let until, let reason) = decision else {
            Issue.record("expected a postponement, got \(decision)")
            return
        }
        #expect(until == night.addingTimeInterval(300))
        #expect(reason.contains("cannot take it now"))

        // A list price within the ceiling, no window at all: the same.
        let cheap = ModelSpec(name: "cheap", provider: .simulated, tier: "cheap", pricePer1KInput: 0.0001, pricePer1KOutput: 0.0001)
        let planner = OffPeakPlanner(
            router: Router(catalog: Catalog(
                models: Self.catalog.models + [cheap],
                rules: [RouteRule(taskClass: "default", primary: "premium", fallbacks: ["cheap"])])),
            policy: Self.ceiling)
        var down = RoutingState()
        down["cheap"].breaker = .open
        let noon = Self.date("2026-11-26T12:00:00Z")
        guard case .postpone(let later, _) = planner.decide(
            Self.request(.background), deadline: nil, maxAttempts: 3, state: down, now: noon)
        else {
            Issue.record("expected a postponement")
            return
        }
        #expect(later == noon.addingTimeInterval(300))
    }
}
