import Foundation
import QueueModel
import Testing

@Suite("Routing filters and plans")
struct RouterPlanTests {
    typealias F = RoutingFixtures

    @Test("tiers by position; the rule's max_latency_ms replaces only the primary's target")
    func tiersAndTimeouts() {
        let models = ["a", "b", "c", "d"].map { F.model($0) }
        let plan = Router(catalog: F.catalog(models, maxLatencyMS: 5000)).plan(for: F.request(), state: RoutingState())
        #expect(plan.attempts.map(\.tier) == [.primary, .secondary, .tertiary, .tertiary])
        #expect(plan.attempts.map(\.timeout) == [.milliseconds(5000), .seconds(3), .seconds(10), .seconds(10)])
        let defaults = Router(catalog: F.catalog(models)).plan(for: F.request(), state: RoutingState())
        #expect(defaults.attempts.map(\.timeoutMS) == [1500, 3000, 10_000, 10_000])
    }

    @Test("every filter drops its model and says why; the rest keep their order")
    func filters() {
        let models = [
            F.model("disabled", enabled: false),
            F.model("broken"),
            F.model("small", context: 1000),
            F.model("dear", price: "0.05"),
            F.model("weak", scores: ["r": 40]),
            F.model("throttled"),
            F.model("full", maxConcurrency: 2),
            F.model("fine", scores: ["r": 90]),
            F.model("probing", scores: ["r": 80]),
        ].map { model -> ModelSpec in
            var model = model
            if model.capabilities.isEmpty { model.capabilities = ["r": 70] }
            return model
        }
        var state = RoutingState()
        state["broken"].breaker = .open
        state["throttled"].requestsRemaining = 0
        state["full"].inFlight = 2
        state["probing"].breaker = .halfOpen
        let router = Router(catalog: F.catalog(models, maxCost: "0.01", qualityFloor: 50))
        let plan = router.plan(for: F.request(String(repeating: "x", count: 4000), maxTokens: 200), state: state)
        #expect(plan.attempts.map(\.model.name) == ["fine", "probing"])
        let dropped = Dictionary(
            uniqueKeysWithValues: plan.explanation.candidates.filter { !$0.isKept }.map { ($0.model, $0.dropReasons) })
        #expect(dropped["disabled"] == ["disabled in the catalog"])
        #expect(dropped["broken"] == ["breaker open (unhealthy)"])
        #expect(dropped["small"] == ["context window 1000 < 1204 tokens needed (≈ 1004 prompt + 200 output)"])
        #expect(dropped["dear"] == ["$0.05/1K is over the cost ceiling $0.01/1K"])
        #expect(dropped["weak"] == ["r score 40 < quality floor 50"])
        #expect(dropped["throttled"] == ["requests-per-minute budget spent"])
        // A provider's pause (a 429's retry-after) says so, not "budget spent".
        var paused = RoutingState()
        paused["fine"].pausedUntil = Date(timeIntervalSince1970: 1_800_000_000)
        paused["fine"].requestsRemaining = 0
        paused["fine"].tokensRemaining = 0
        let pausedPlan = Router(catalog: F.catalog([models[7]])).plan(for: F.request(), state: paused)
        #expect(pausedPlan.explanation.candidates.first?.dropReasons
            == ["paused by the provider until 2027-01-15T08:00:00.000000Z"])
        #expect(paused.soonestPauseEnd(of: ["fine", "other"], after: Date(timeIntervalSince1970: 0))
            == Date(timeIntervalSince1970: 1_800_000_000))
        #expect(dropped["full"] == ["at max_concurrency (2 of 2 in flight)"])
        #expect(
            plan.explanation.candidates.first { $0.model == "probing" }?.facts.contains("breaker half-open (probing)")
                == true)
    }

    /// A walkthrough's worker without a model's key was told every model was "unhealthy, busy, out
    /// of rate budget or priced over the ceiling right now", and to retry later.
    @Test("models this worker cannot call (a missing key) get their own hint, not a wait for health or prices")
    func unavailableHereHint() {
        let catalog = F.catalog([F.model("keyed", price: "0.001"), F.model("other", price: "0.001")])
        var state = RoutingState()
        state["keyed"].unavailableHere = "its API key variable K is not set in this worker's environment"
        state["other"].unavailableHere = "its API key variable K is not set in this worker's environment"
        let plan = Router(catalog: catalog).plan(for: F.request(), state: state)
        #expect(plan.unroutable?.isTransient == true)
        #expect(plan.unroutable?.hint.hasPrefix("this worker cannot call them for the reasons given") == true,
                "\(String(describing: plan.unroutable))")
        // One of them merely open: the general hint.
        state["other"].unavailableHere = nil
        state["other"].breaker = .open
        #expect(Router(catalog: catalog).plan(for: F.request(), state: state).unroutable?.hint.hasPrefix("every model is unhealthy") == true)
    }

    @Test("over the ceiling: transient only when a window can bring the model within it; a surcharge is no off-peak price")
    func ceilingAndWindows() throws {
        func model(_ name: String, windows: JSONValue) -> ModelSpec {
            var model = F.model(name, price: "0.01")
            model.priceWindows = windows
            return model
        }
        let surcharge = model("surcharged", windows: [["start": "00:00", "end": "24:00", "multiplier": 2]])
        let halfOff = model("half-off", windows: [["start": "00:00", "end": "06:00", "multiplier": 0.5]])
        // Half price for input only: 0.0075 on average, still over 0.005.
        let inputOff = model("input-off", windows: [["start": "00:00", "end": "06:00", "input_multiplier": 0.5, "output_multiplier": 1]])
        func unroutable(_ model: ModelSpec, offPeak: Decimal? = nil) -> RoutePlan.Unroutable? {
            var state = RoutingState()
            state[model.name].averagePricePer1K = offPeak
            return Router(catalog: F.catalog([model], maxCost: "0.005")).plan(for: F.request(), state: state).unroutable
        }
        #expect(unroutable(surcharge, offPeak: 0.02)?.isTransient == false)
        #expect(unroutable(inputOff)?.isTransient == false)
        #expect(unroutable(inputOff)?.hint == "raise the rule's max_cost_per_1k, or add a model that fits to the rule")
        #expect(unroutable(halfOff)?.isTransient == true)

        var state = RoutingState()
        state["surcharged"].averagePricePer1K = 0.02
        let explained = Router(catalog: F.catalog([surcharge], maxCost: "0.005")).plan(for: F.request(), state: state)
        #expect(explained.explanation.candidates[0].dropReasons == ["$0.02/1K surcharged is over the cost ceiling $0.005/1K"])
    }

    @Test("background work leaves interactive work its share of a model's max_concurrency and rate budget")
    func interactiveReserve() {
        let limited = F.model("limited", maxConcurrency: 2)
        let single = F.model("single", maxConcurrency: 1)
        let router = Router(catalog: F.catalog([limited, single]))
        func plan(_ priority: Priority, _ configure: (inout RoutingState) -> Void) -> [String] {
            var state = RoutingState(interactiveReserve: 0.25)
            configure(&state)
            var request = F.request()
            request.priority = priority
            return router.plan(for: request, state: state).attempts.map(\.model.name)
        }
        // One of two calls in flight: the other is kept for interactive work. A model limited to
        // one call keeps none (background work would never get it).
        #expect(plan(.background) { $0["limited"].inFlight = 1 } == ["single"])
        #expect(plan(.interactive) { $0["limited"].inFlight = 1 } == ["limited", "single"])
        #expect(plan(.background) { $0["limited"].inFlight = 0 } == ["limited", "single"])
        // The budget's last requests and tokens, likewise.
        let budget: (inout RoutingState) -> Void = {
            $0["limited"].requestsRemaining = 2
            $0["limited"].requestsReserved = 2
            $0["single"].tokensRemaining = 1000
            $0["single"].tokensReserved = 995
            $0["single"].tokensCapacity = 4000
        }
        #expect(plan(.background, budget) == [])
        #expect(plan(.interactive, budget) == ["limited", "single"])
        // A job larger than what background work may spend (≈ 1,204 tokens of 1,300, 325 kept)
        // runs on a full budget, and waits for it to refill otherwise (before, it never ran).
        var large = F.request(String(repeating: "x", count: 4000), maxTokens: 200)
        large.priority = .background
        func largePlan(tokens: Int) -> [String] {
            var state = RoutingState(interactiveReserve: 0.25)
            state["limited"].requestsRemaining = 0
            state["single"].tokensRemaining = tokens
            state["single"].tokensReserved = 325
            state["single"].tokensCapacity = 1300
            return router.plan(for: large, state: state).attempts.map(\.model.name)
        }
        #expect(largePlan(tokens: 1300) == ["single"])
        #expect(largePlan(tokens: 1250) == [])
        // A context-length fallback outside the rule keeps to the reserve too.
        let small = F.model("small", context: 2000)
        let big = F.model("big", context: 200_000, maxConcurrency: 2)
        let escalating = Router(catalog: Catalog(models: [small, big], rules: [RouteRule(taskClass: "r", primary: "small")]))
        var busyBig = RoutingState(interactiveReserve: 0.25)
        busyBig["big"].inFlight = 1
        for (priority, expected) in [(Priority.background, nil), (.interactive, "big")] as [(Priority, String?)] {
            var request = F.request()
            request.priority = priority
            let plan = escalating.plan(for: request, state: busyBig)
            #expect(escalating.largerContextAttempt(than: 2000, after: plan, position: 0, state: busyBig)?.model.name == expected)
        }

        // Dropped only for being busy: worth waiting for, however long the job has waited.
        var busyState = RoutingState(interactiveReserve: 0.25)
        busyState["limited"].inFlight = 2
        busyState["single"].inFlight = 1
        #expect(router.plan(for: large, state: busyState).unroutable?.isBusy == true)
        busyState["single"].breaker = .open
        busyState["limited"].breaker = .open
        #expect(router.plan(for: large, state: busyState).unroutable?.isBusy == false)
        // Nothing kept without a share.
        var request = F.request()
        request.priority = .background
        var unreserved = RoutingState()
        unreserved["limited"].inFlight = 1
        #expect(router.plan(for: request, state: unreserved).attempts.map(\.model.name) == ["limited", "single"])
        #expect(RoutingState.reserved(of: 2, share: 0.25) == 1 && RoutingState.reserved(of: 1, share: 0.25) == 0)
        #expect(RoutingState.reserved(of: 100, share: 0.25) == 25 && RoutingState.reserved(of: 4, share: 0) == 0)
    }

    @Test("a model the rule names but the catalog lacks is dropped, not fatal; a token budget counts the whole request")
    func missingModelAndTokenBudget() {
        let rule = RouteRule(taskClass: "r", primary: "ghost", fallbacks: ["a", "b"])
        let router = Router(catalog: Catalog(models: [F.model("a"), F.model("b")], rules: [rule]))
        var state = RoutingState()
        state["a"].tokensRemaining = 100
        let plan = router.plan(for: F.request(maxTokens: 500), state: state)
        #expect(plan.attempts.map(\.model.name) == ["b"])
        #expect(plan.explanation.candidates.map(\.model) == ["b", "ghost", "a"])
        #expect(plan.explanation.candidates[1].dropReasons == ["not in the catalog"])
        #expect(plan.explanation.candidates[2].dropReasons == ["tokens-per-minute budget: 100 left < 506 needed"])
    }

    @Test("the job's own price ceiling applies when it is lower than the rule's")
    func jobCeiling() {
        let router = Router(
            catalog: F.catalog([F.model("dear", price: "0.01"), F.model("cheap", price: "0.001")], maxCost: "0.05"))
        var request = F.request()
        #expect(F.order(router, request) == ["dear", "cheap"])
        request.maxCostPer1K = Decimal(string: "0.005")
        #expect(F.order(router, request) == ["cheap"])
    }

    /// route --explain planned an Anthropic model for `n = 2`, and the worker refused the call.
    @Test("an Anthropic model is left out of a plan for what the request asks and Anthropic cannot give")
    func anthropicLimits() {
        var claude = F.model("claude")
        claude.provider = .anthropic
        let router = Router(catalog: F.catalog([claude, F.model("gpt")]))
        var body = F.request().body.objectValue ?? [:]
        body["n"] = 2
        let plan = router.plan(for: RoutingRequest(body: .object(body), taskClass: "r"), state: RoutingState())
        #expect(plan.attempts.map(\.model.name) == ["gpt"])
        let dropped = plan.explanation.candidates.first { $0.model == "claude" }
        #expect(dropped?.dropReasons == ["Anthropic models have no equivalent of n = 2"])
        // Alone in its rule: unroutable for good, with the fix that applies.
        let alone = Router(catalog: F.catalog([claude])).plan(for: RoutingRequest(body: .object(body), taskClass: "r"), state: RoutingState())
        #expect(alone.unroutable?.isTransient == false)
        #expect(alone.unroutable?.hint.hasPrefix("submit it without what Anthropic models cannot take") == true)
        // Without it, planned as usual.
        #expect(router.plan(for: F.request(), state: RoutingState()).attempts.map(\.model.name) == ["claude", "gpt"])
    }

    /// An operator's walkthrough could not say a model takes no tools or images: such requests were
    /// planned onto it first, and only its refusal at the call moved them on.
    @Test("a model the catalog says cannot take tools, images or JSON output is left out of plans that ask for them")
    func unsupportedFeatures() throws {
        var text = F.model("text-only")
        text.unsupported = [.tools, .images, .jsonOutput]
        let router = Router(catalog: F.catalog([text, F.model("full")]))
        let tool: JSONValue = [["type": "function", "function": ["name": "weather", "parameters": ["type": "object"]]]]
        let image: JSONValue = ["messages": [["role": "user", "content": [
            ["type": "text", "text": "what is this?"], ["type": "image_url", "image_url": ["url": "https://x/y.png"]],
        ]]]]
        var withTools = F.request().body.objectValue ?? [:]
        withTools["tools"] = tool
        var json = F.request().body.objectValue ?? [:]
        json["response_format"] = ["type": "json_object"]
        for body in [JSONValue.object(withTools), image, .object(json)] {
            let plan = router.plan(for: RoutingRequest(body: body, taskClass: "r"), state: RoutingState())
            #expect(plan.attempts.map(\.model.name) == ["full"], "\(body)")
            let dropped = plan.explanation.candidates.first { $0.model == "text-only" }
            #expect(dropped?.dropReasons.first?.hasPrefix("the catalog says it cannot take ") == true, "\(String(describing: dropped))")
        }
        #expect(router.plan(for: RoutingRequest(body: .object(withTools), taskClass: "r"), state: RoutingState())
            .explanation.candidates.first { $0.model == "text-only" }?.dropReasons == ["the catalog says it cannot take tools (supports)"])
        // A plain request, or a text response_format, goes to it as before.
        var plainFormat = F.request().body.objectValue ?? [:]
        plainFormat["response_format"] = ["type": "text"]
        #expect(F.order(router, F.request()) == ["text-only", "full"])
        #expect(F.order(router, RoutingRequest(body: .object(plainFormat), taskClass: "r")) == ["text-only", "full"])
        // No model of the catalog takes it: the request's doing, unsupported_request, with the fix.
        let alone = Router(catalog: F.catalog([text])).plan(for: RoutingRequest(body: image, taskClass: "r"), state: RoutingState())
        #expect(alone.unroutable?.isRequestsFault == true && alone.unroutable?.isTooLarge == false)
        #expect(alone.unroutable?.hint.hasPrefix("submit it without what its models cannot take") == true, "\(String(describing: alone.unroutable))")
        // Another model of the catalog takes it: the rule's doing (unroutable), which adding it fixes.
        let elsewhere = Router(catalog: Catalog(models: [text, F.model("full")], rules: F.catalog([text]).rules))
            .plan(for: RoutingRequest(body: image, taskClass: "r"), state: RoutingState())
        #expect(elsewhere.unroutable?.isRequestsFault == false)
    }

    @Test("no model left: transient when some model is kept out only by health, budgets or concurrency")
    func unroutable() throws {
        let router = Router(catalog: F.catalog([F.model("a"), F.model("b", context: 100)]))
        var state = RoutingState()
        state["a"].breaker = .open
        let plan = router.plan(for: F.request(), state: state)
        #expect(plan.attempts.isEmpty)
        // b will never fit, but a may recover: waiting may help.
        #expect(plan.unroutable?.isTransient == true)
        let tooSmall = Router(catalog: F.catalog([F.model("b", context: 100)]))
        #expect(tooSmall.plan(for: F.request(), state: state).unroutable?.isTransient == false)
        // Only what applies: the rule has no ceiling or floor to change (a walkthrough was told both).
        #expect(tooSmall.plan(for: F.request(), state: state).unroutable?.hint
            == "shorten the request or lower its max_tokens, or add a model that fits to the rule")
        // Too long for every model: the request's fault (the job fails context_length_exceeded, which
        // the job-failure alert leaves out); a rule kept out by anything else is the catalog's.
        let tooLarge = try #require(tooSmall.plan(for: F.request(), state: state).unroutable)
        #expect(tooLarge.isTooLarge && tooLarge.isRequestsFault)
        let disabled = Router(catalog: F.catalog([F.model("b", context: 100), F.model("c", enabled: false)]))
        let mixed = try #require(disabled.plan(for: F.request(), state: state).unroutable)
        #expect(!mixed.isTooLarge && !mixed.isRequestsFault && !mixed.isTransient)
        // Too long for the rule's models but not for another of the catalog's: the rule is too small.
        let narrow = F.catalog([F.model("b", context: 100)])
        let wider = Catalog(models: narrow.models + [F.model("big")], rules: narrow.rules)
        let undersized = try #require(Router(catalog: wider).plan(for: F.request(), state: state).unroutable)
        #expect(!undersized.isTooLarge && !undersized.isRequestsFault && !undersized.isTransient)
        // Too long for one, and asking `n` = 2 of the other (Anthropic), with nothing else in the
        // catalog: the request's fault (a review's case; "the rest of the catalog" must judge what
        // the request itself keeps out, not the context window alone).
        var claude = F.model("claude")
        claude.provider = .anthropic
        var twice = F.request()
        twice.body["n"] = 2
        let nowhere = Router(catalog: Catalog(models: narrow.models + [claude], rules: [
            RouteRule(taskClass: "r", primary: "b", fallbacks: ["claude"])]))
        let refused = try #require(nowhere.plan(for: twice, state: state).unroutable)
        #expect(refused.isRequestsFault && !refused.isTooLarge, "\(refused)")
        // A model of the catalog outside the rule would take it: the rule's fault.
        let elsewhere = Router(catalog: Catalog(models: narrow.models + [claude, F.model("big")], rules: [
            RouteRule(taskClass: "r", primary: "b", fallbacks: ["claude"])]))
        #expect(elsewhere.plan(for: twice, state: state).unroutable?.isRequestsFault == false)
        let both = Router(catalog: F.catalog([F.model("a"), F.model("b")]))
        state["b"].requestsRemaining = 0
        let later = both.plan(for: F.request(), state: state)
        #expect(later.unroutable?.isTransient == true)
        #expect(
            later.error?.message.contains("a: breaker open (unhealthy) | b: requests-per-minute budget spent") == true)
    }

    @Test("a context-length failure moves to a larger window: first in the plan, then anywhere in the catalog")
    func largerContext() {
        let models = [
            F.model("small", context: 8000, scores: ["r": 80]), F.model("medium", context: 32_000, scores: ["r": 80]),
            F.model("large", context: 128_000, scores: ["r": 80]),
            F.model("huge", price: "0.002", context: 1_000_000, scores: ["r": 80]),
            F.model("huger-but-dearer", price: "0.01", context: 1_000_000, scores: ["r": 80]),
            F.model("weak-giant", context: 2_000_000, scores: ["r": 10]),
        ]
        let rule = RouteRule(taskClass: "r", primary: "small", fallbacks: ["medium", "large"], qualityFloor: 50)
        let router = Router(catalog: Catalog(models: models, rules: [rule]))
        let state = RoutingState()
        let plan = router.plan(for: F.request(), state: state)
        #expect(plan.nextAttempt(withContextLargerThan: 8000, after: 0)?.model.name == "medium")
        #expect(plan.nextAttempt(withContextLargerThan: 40_000, after: 0)?.model.name == "large")
        #expect(router.largerContextAttempt(than: 8000, after: plan, position: 0, state: state)?.model.name == "medium")
        let beyond = router.largerContextAttempt(than: 128_000, after: plan, position: 2, state: state)
        #expect(beyond?.model.name == "huge")
        #expect(beyond?.position == 3)
        var sick = state
        sick["huge"].breaker = .open
        #expect(
            router.largerContextAttempt(than: 128_000, after: plan, position: 2, state: sick)?.model.name
                == "huger-but-dearer")
        #expect(router.largerContextAttempt(than: 1_000_000, after: plan, position: 2, state: state) == nil)

        // An Anthropic model past the plan is left out for what the request asks that it cannot
        // give, as the plan leaves it out (it was chosen, and its adapter refused the call).
        var claude = F.model("claude-huge", price: "0.001", context: 1_000_000, scores: ["r": 80])
        claude.provider = .anthropic
        let withClaude = Router(catalog: Catalog(models: models + [claude], rules: [rule]))
        var twice = F.request()
        twice.body["n"] = 2
        let planned = withClaude.plan(for: twice, state: state)
        #expect(withClaude.largerContextAttempt(than: 128_000, after: planned, position: 2, state: state)?.model.name
            == "claude-huge")
        #expect(withClaude.largerContextAttempt(
            than: 128_000, after: planned, position: 2, state: state, request: twice.body)?.model.name == "huge")

        // A job held to its own ceiling (background work) keeps to it past its plan.
        var held = F.request()
        held.maxCostPer1K = Decimal(string: "0.005")
        let heldPlan = router.plan(for: held, state: state)
        #expect(
            router.largerContextAttempt(than: 128_000, after: heldPlan, position: 2, state: sick) == nil,
            "huger-but-dearer is over the job's ceiling")
    }

    @Test("the explanation names the class, the rule and every candidate, for people and as JSON")
    func explanation() throws {
        let catalog = try CatalogDocument(parsing: F.exampleCatalogData).applied(to: .empty)
        var state = RoutingState()
        state["gpt-4"].breaker = .open
        let request = RoutingRequest(body: ["messages": [["role": "user", "content": "Why is the sky blue?"]]])
        let plan = Router(catalog: catalog).plan(for: request, state: state)
        #expect(plan.attempts.map(\.model.name) == ["claude-opus"])
        #expect(plan.attempts.first?.timeoutMS == 5000)
        let text = plan.explanationText(for: request)
        #expect(text.contains("class     reasoning — heuristic: asks to reason (\"why\")"))
        #expect(text.contains("rule      complex_reasoning — alias reasoning → complex_reasoning; max latency 5000 ms"))
        #expect(text.contains("-  dropped    gpt-4        breaker open (unhealthy)"))
        #expect(text.contains("plan      claude-opus (primary, 5000 ms)"))
        #expect(plan.json["attempts"]?[0]?["model"] == "claude-opus")
        #expect(plan.json["candidates"]?[1]?["drop_reasons"] == ["breaker open (unhealthy)"])
    }
}

@Suite("Requests that name a model")
struct RequestedModelTests {
    typealias F = RoutingFixtures

    @Test("a model named in the request goes first, the rule's models follow; unusable, it is dropped with the reason")
    func requestedModelFirst() {
        let models = [
            F.model("a", scores: ["r": 90]), F.model("b", scores: ["r": 90]), F.model("named", scores: ["r": 10]),
        ]
        let catalog = Catalog(
            models: models, rules: [RouteRule(taskClass: "r", primary: "a", fallbacks: ["b"], qualityFloor: 50)]
        )
        let router = Router(catalog: catalog)
        var request = F.request()
        request.body["model"] = "named"
        let plan = router.plan(for: request, state: RoutingState())
        // The caller chose it: the rule's quality floor does not apply to it.
        #expect(plan.attempts.map(\.model.name) == ["named", "a", "b"])
        #expect(plan.explanation.strategy.hasPrefix("the request names model \"named\": it goes first"))
        var sick = RoutingState()
        sick["named"].breaker = .open
        #expect(F.order(router, request, sick) == ["a", "b"])
        request.body["model"] = "auto"
        #expect(F.order(router, request) == ["a", "b"])
    }

    @Test("a model named in the request still keeps to the job's own limits: its ceiling and its allowed tiers")
    func requestedModelKeepsJobLimits() {
        var premium = F.model("premium")
        premium.tier = "premium"
        let catalog = Catalog(
            models: [F.model("a"), premium], rules: [RouteRule(taskClass: "r", primary: "a")])
        var request = F.request()
        request.body["model"] = "premium"
        request.allowedTiers = ["standard"]
        let plan = Router(catalog: catalog).plan(for: request, state: RoutingState())
        #expect(plan.attempts.map(\.model.name) == ["a"])
        let dropped = plan.explanation.candidates.first { $0.model == "premium" }
        #expect(dropped?.isKept == false)
    }
}
