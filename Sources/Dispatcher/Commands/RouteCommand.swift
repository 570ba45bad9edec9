import Foundation
import Postgres
import QueueModel

/// `dispatcher route --explain`: the plan for a request, and why, without running it.
enum RouteCommand {
    static let usage = """
        usage: dispatcher route --explain (--prompt TEXT | --file REQUEST.json) [options]

        Prints the plan the workers would make for a request — its class and how it was decided,
        the rule, the strategy, every candidate model with why it was kept or dropped, and the
        attempts in order with their tiers and timeouts — without running it.

          --prompt TEXT        a one-message request
          --file FILE          an OpenAI chat request, or a job envelope
                               ({"request": {...}, "task_class": …, "affinity_key": …, "priority": …}); - for stdin
          --class NAME         the job's task class (default: classify the request)
          --affinity KEY       the job's affinity key; repeat it for one plan per key
          --priority P         interactive (default) or background
          --max-tokens N       the request's max_tokens
          --sequence N         the round_robin/weighted sequence number (default 0)
          --catalog FILE       route with this catalog document instead of the database's
                               (no database needed; every model counts as healthy)
          --json               machine-readable output (an array when --affinity is repeated)

        With the database's catalog, breaker states and latencies come from switchyard.fleet_health,
        and a background request is planned within the background ceiling and tiers
        (dispatcher background ceiling), as a worker plans it now.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher route",
            options: [
                "prompt", "file", "class", "affinity", "priority", "max-tokens", "sequence", "catalog", "database-url",
            ],
            flags: ["explain", "json"], takesWords: false, repeatable: ["affinity"]
        )
        if arguments.flag("help") {
            print(usage)
            return 0
        }
        guard arguments.flag("explain") else {
            throw QueueError(
                .invalidInput, "dispatcher route only explains a plan (workers do the routing)",
                hint: "Add --explain, e.g. `dispatcher route --explain --prompt \"Why is the sky blue?\"`."
            )
        }
        var request = try request(from: arguments)
        let (catalog, unpriced, policy) = try await catalogAndState(arguments)
        // Refused as submission refuses it (sql/0002's check): a walkthrough's plan for a request
        // naming a model not in the catalog read as if the request could run.
        if let model = request.body["model"]?.stringValue, !model.isEmpty, model != "auto",
            catalog.model(named: model) == nil
        {
            throw QueueError(
                .invalidInput,
                "request.model names a model the catalog lacks: '\(StatusFormat.printable(String(model.prefix(100))))'",
                hint: "Submission refuses a request naming a model its database's catalog lacks: leave \"model\" out "
                    + "to let Switchyard route the request, or name a model from the catalog (dispatcher models list).")
        }
        let router = Router(catalog: catalog)
        let planner = OffPeakPlanner(router: router, policy: policy)
        let now = Date()
        // Prices as a worker routes by them now: a window open now changes a model's.
        var state = unpriced
        for (model, price) in PriceSchedule.offPeakPrices(catalog.models.map(PriceSchedule.init), at: now) {
            state[model].averagePricePer1K = price
        }
        // As a submission takes them: blank is no key, and one over 500 characters is refused (a
        // walkthrough's '   ' got a home model here, which no job could have).
        func asSubmitted(_ key: String?) -> String? {
            key.flatMap { $0.unicodeScalars.allSatisfy { " \t\n\r\u{0B}\u{0C}".unicodeScalars.contains($0) } ? nil : $0 }
        }
        request.affinityKey = asSubmitted(request.affinityKey)
        let keys = arguments.values("affinity")
        for key in keys + [request.affinityKey].compactMap({ $0 }) {
            if key.unicodeScalars.count > 500 {
                throw QueueError(
                    .invalidInput, "affinity key is \(key.unicodeScalars.count) characters, over the limit of 500",
                    hint: "Submission refuses such a key: use a shorter one (hash a long one).")
            }
        }
        let requests =
            keys.isEmpty
            ? [request]
            : keys.map { key in
                request.affinityKey = asSubmitted(key)
                return request
            }
        let plans = requests.map { explain($0, router: router, planner: planner, state: state, now: now) }
        if arguments.flag("json") {
            if keys.count > 1 {
                let entries: [JSONValue] = zip(requests, plans).map { request, plan in
                    ["affinity_key": .string(request.affinityKey ?? ""), "plan": plan.json]
                }
                print(JSONValue.array(entries).prettyText)
            } else {
                print(plans[0].json.prettyText)
            }
        } else {
            print(zip(requests, plans).map { $1.text(for: $0) }.joined(separator: "\n\n"))
        }
        return 0
    }

    /// A plan, and for a background request the background policy's part in it.
    struct Explained {
        var plan: RoutePlan
        /// The ceiling and tiers it was planned within, and what a worker would do now.
        var background: (limits: String, decision: String)?

        func text(for request: RoutingRequest) -> String {
            var text = plan.explanationText(for: request)
            if let background { text += "\n" + RoutePlan.row("policy", "background \(background.limits): \(background.decision)") }
            return text
        }

        var json: JSONValue {
            var object = plan.json
            if let background {
                object["background"] = ["limits": .string(background.limits), "decision": .string(background.decision)]
            }
            return object
        }
    }

    /// The plan a worker would make now: a background request within the background ceiling and
    /// tiers (a plan without them promised models the worker would not call).
    static func explain(
        _ request: RoutingRequest, router: Router, planner: OffPeakPlanner, state: RoutingState, now: Date
    ) -> Explained {
        let plan = router.plan(for: request, state: state)
        // Paused, no background job is claimed, whatever the price or its deadline (it said "runs
        // now"); the plan shown is the one it will have on resume, within the ceiling.
        let paused = request.priority == .background && planner.policy.paused
        let pausedDecision = "waits until dispatcher background resume (a deadline does not override a pause)"
        guard !plan.attempts.isEmpty, let constrained = planner.constrained(request, rule: plan.rule, now: now) else {
            return paused ? Explained(plan: plan, background: ("paused", pausedDecision)) : Explained(plan: plan)
        }
        let limits = [
            planner.policy.ceiling(for: plan.rule).map { "ceiling $\($0)/1K" },
            planner.policy.tiers.map { "tiers \($0.sorted().joined(separator: ", "))" },
        ].compactMap { $0 }.joined(separator: ", ")
        var bound = router.plan(for: constrained, state: state)
        if paused {
            // Nothing within the ceiling now is the policy's wait, not the rule's fault.
            if bound.attempts.isEmpty, let reason = bound.unroutable?.reason {
                bound.unroutable = .init(
                    reason: reason, hint: "it waits for resume, then for a model within the ceiling", isTransient: true)
            }
            return Explained(plan: bound, background: ("paused, " + limits, pausedDecision))
        }
        let decision: String
        // No deadline here: no escalation either.
        switch planner.decide(request, deadline: nil, maxAttempts: 3, state: state, now: now) {
        case .run: decision = "runs now"
        case .postpone(_, let reason):
            decision = "put back without spending an attempt, until a model fits"
            // Neither the request's fault nor the rule's (whose ceiling the router's hint named):
            // the background policy holds it for now.
            bound.unroutable = .init(
                reason: reason,
                hint: "it waits for a model within them (dispatcher background status shows the gate); "
                    + "dispatcher background drain --until TIME runs background work now, whatever the price",
                isTransient: true)
        }
        return Explained(plan: bound, background: (limits, decision))
    }

    private static func request(from arguments: Arguments) throws -> RoutingRequest {
        var request = RoutingRequest(body: [:])
        switch (arguments.value("prompt"), arguments.value("file")) {
        case (let prompt?, nil):
            request.body = ["messages": [["role": "user", "content": .string(prompt)]]]
        case (nil, let path?):
            let document = try JSONValue(parsing: try InputFile.read(path))
            if let body = document["request"] {
                request.body = body
                request.taskClass = document["task_class"]?.stringValue
                request.affinityKey = document["affinity_key"]?.stringValue
                if let priority = document["priority"]?.stringValue { request.priority = try parsePriority(priority) }
            } else {
                request.body = document
            }
        default:
            throw QueueError(
                .invalidInput, "give one of --prompt TEXT or --file REQUEST.json",
                hint: "Run `dispatcher route --help`.")
        }
        guard request.body["messages"]?.arrayValue?.isEmpty == false else {
            throw QueueError(
                .invalidInput, "the request has no messages",
                hint:
                    "An OpenAI chat request looks like {\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}."
            )
        }
        if let taskClass = arguments.value("class") { request.taskClass = taskClass }
        if let priority = arguments.value("priority") { request.priority = try parsePriority(priority) }
        if arguments.value("max-tokens") != nil {
            request.body["max_tokens"] = .number(
                Double(try arguments.integer("max-tokens", default: 0, range: 1...10_000_000)))
        }
        return request
    }

    private static func parsePriority(_ text: String) throws -> Priority {
        guard let priority = Priority(rawValue: text) else {
            throw QueueError(.invalidInput, "unknown priority \"\(text)\"", hint: "Use interactive or background.")
        }
        return priority
    }

    private static func catalogAndState(_ arguments: Arguments) async throws
        -> (Catalog, RoutingState, BackgroundPolicy)
    {
        let sequence = UInt64(try arguments.integer("sequence", default: 0, range: 0...Int.max))
        if let path = arguments.value("catalog") {
            let document = try CatalogDocument(parsing: try InputFile.read(path))
            return (document.applied(to: .empty), RoutingState(sequence: sequence), BackgroundPolicy())
        }
        let pool = try Database.pool(arguments, applicationName: "switchyard-route", maxConnections: 1)
        defer { Task { await pool.close() } }
        try await Migrator().requireCurrent(pool)
        let store = CatalogStore(pool: pool)
        let catalog = try await store.load()
        guard !catalog.rules.isEmpty else {
            throw QueueError(
                .invalidInput, "the database's catalog has no routing rules",
                hint: "Load one with `dispatcher models import examples/catalog.json`, or pass --catalog FILE."
            )
        }
        return (catalog, try await store.routingState(sequence: sequence), try await BackgroundPolicy.load(pool))
    }
}
