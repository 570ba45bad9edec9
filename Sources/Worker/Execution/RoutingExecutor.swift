import Foundation
import QueueModel

/// Runs a job the way the catalog says: plans the attempts with the router, calls each model in
/// turn within its tier's time budget, and falls back by the provider error taxonomy (retry after
/// `retry-after`, next candidate, a larger context window, or stop when the request is at fault).
/// Every call's outcome feeds the fleet's breakers, the worker's metrics and a log line that names
/// the job, the model and the attempt (prompts and answers only at trace level).
struct RoutingExecutor: JobExecutor {
    let fleet: FleetState
    let providers: ProviderFactory
    let worker: String
    /// How often one model is retried after a 429 with `retry-after` before moving on.
    var sameModelRetries = 2
    var now: @Sendable () -> Date = { Date() }
    var logger = Logger(label: "worker")
    /// Counts calls by model and outcome, and times them (nil: not counted).
    var metrics: WorkerMetrics?

    /// Why the plan left out the model a request named, in the router's words (`context window
    /// 16385 < 100008 tokens needed`): planned again with its explanation, only in this case (the
    /// hot path plans without one). A Python walkthrough's result said "breaker open, over the
    /// job's ceiling, or outside its tiers" of a model too small for the request, and sent the
    /// submitter to `route --explain`, an operator's command.
    static func whyLeftOut(
        _ requested: String, job: Job, rule: RouteRule?, escalated: Bool, planner: OffPeakPlanner, state: RoutingState,
        at instant: Date
    ) -> String {
        let request = RoutingRequest(job: job)
        let planned = escalated ? request : planner.constrained(request, rule: rule, now: instant) ?? request
        let explained = planner.router.plan(for: planned, state: state, explain: true)
        let left = explained.explanation.candidates.first { $0.model == requested && $0.position == nil }
        let reasons = left?.dropReasons ?? []
        return reasons.isEmpty ? "it is not usable now" : "it was left out: " + reasons.joined(separator: "; ")
    }

    func execute(_ job: Job) async -> JobOutcome {
        await execute(job, heldFor: 0)
    }

    /// How long a job whose models are all paused for a moment is held in its slot and planned
    /// again, rather than put back: a soak's models paused for a second at a time by 429s put
    /// 40,000 jobs back 156,530 times (a write-back, a claim and two log lines each), where
    /// LiteLLM waits out a short `retry-after` in process.
    static let holdInSlot = Duration.seconds(2)

    /// - Parameter heldFor: how many times the job was held in its slot for a pause already: at
    ///   most five, then it is put back as before.
    private func execute(_ job: Job, heldFor held: Int) async -> JobOutcome {
        let planner = fleet.planner
        let router = planner.router
        let instant = now()
        let plan: RoutePlan
        let escalation: String?
        // Background work runs within its price ceiling, or escalated near its deadline, or waits
        // for the next cheap window (without spending the attempt).
        let state = fleet.routingState(sequence: UInt64(bitPattern: job.id), now: instant)
        switch planner.decide(
            RoutingRequest(job: job), deadline: job.deadline, maxAttempts: job.maxAttempts, state: state, now: instant
        ) {
        case .run(let chosen, let why):
            plan = chosen
            escalation = why
        case .postpone(let until, let reason):
            return .postponed(until: until, reason: reason, policy: planner.policy.version)
        }
        let taskClass = plan.classification.taskClass.rawValue
        let logger = logger.with("job", job.id).with("attempt", job.attempt)
        logger.debug(
            "routed job",
            [
                "model": plan.attempts.first?.model.name ?? "none", "task_class": taskClass,
                "plan": plan.attempts.map(\.model.name).joined(separator: ","),
            ]
        )
        // The prompt is the caller's data: it only ever appears at trace level.
        logger.trace(
            "job request", ["model": plan.attempts.first?.model.name ?? "none", "request": job.request.jsonText])
        // Which rule routed it: the savings report prices every job at its rule's primary model.
        var routeMetadata: [String: JSONValue] = plan.rule.map { ["rule": .string($0.taskClass)] } ?? [:]
        if let escalation {
            routeMetadata["escalation"] = ["reason": .string(escalation)]
            logger.info("background job escalated past its price ceiling", ["reason": escalation])
        }
        // A request that names a model its plan does not start with (disabled, or dropped by a
        // filter since it was submitted) ran on the rule's models: the result says so.
        if let requested = Router.requestedModel(in: job.request), let first = plan.attempts.first,
            first.model.name != requested
        {
            let reason =
                switch router.catalog.model(named: requested) {
                case nil: "it is no longer in the catalog"
                case let model? where !model.enabled: "it is disabled in the catalog"
                default:
                    Self.whyLeftOut(
                        requested, job: job, rule: plan.rule, escalated: escalation != nil, planner: planner, state: state,
                        at: instant)
                }
            routeMetadata["requested_model"] = [
                "model": .string(requested), "reason": .string(reason + "; the rule's models ran instead"),
            ]
        }
        // A model of the rule kept out for its health, or because this worker cannot call it: said
        // (the model that answered read as the rule's primary, and only status told of the breaker).
        // (Looked at per job: nothing is built unless a model is missing from the plan.)
        if let rule = plan.rule, !plan.attempts.isEmpty {
            var passedOver: [JSONValue] = []
            for index in -1..<rule.fallbacks.count {
                let name = index < 0 ? rule.primary : rule.fallbacks[index]
                if plan.attempts.contains(where: { $0.model.name == name }) { continue }
                // A keyed job under a hash rule goes to its key's home: another model's breaker is
                // not this job's business (a walkthrough's jobs homed on healthy models all named
                // the one open breaker, overstating the outage's reach).
                if let home = plan.affinityHome, name != home { continue }
                guard let model = state.models[name] else { continue }
                // A provider's pause too (a 429's retry-after): a walkthrough's job ran on the
                // fallback, as if it were the rule's primary, with nothing said of why.
                let reason =
                    if let here = model.unavailableHere { "not on this worker: \(here)" }
                    else if model.breaker == .open { "its breaker is open (or a probe of it is in flight)" }
                    else if let paused = model.pausedUntil, paused > instant {
                        "paused by its provider until \(paused.postgresText) (a 429's retry-after or its rate-limit "
                            + "headers, on this worker)"
                    } else { nil as String? }
                if let reason { passedOver.append(["model": .string(name), "reason": .string(reason)]) }
            }
            if !passedOver.isEmpty { routeMetadata["passed_over"] = .array(passedOver) }
        }
        if router.isUnservedClass(plan.classification) {
            let rules = router.catalog.rules.map(\.taskClass).filter { $0 != RuleMatcher.defaultRule }
            routeMetadata["unserved_task_class"] = [
                "class": .string(taskClass),
                "reason": .string(
                    "no rule serves it, by name or in its classes; the \"\(RuleMatcher.defaultRule)\" rule routed the job"
                        + (rules.isEmpty ? "" : " (the other rules: " + rules.joined(separator: ", ") + ")")),
            ]
        }
        let primary = plan.rule.flatMap { router.catalog.model(named: $0.primary) }
        // Planned within the background ceiling: a model that has gone over it since (a price
        // window closed while an earlier model was tried, or during a retry-after wait) is not
        // called. Nil when the ceiling does not bind the job (interactive, escalated, a drain).
        let ceiling =
            job.priority == .background && escalation == nil && !planner.policy.isDraining(at: instant)
            ? planner.policy.ceiling(for: plan.rule) : nil
        var overCeiling: [String] = []
        if plan.attempts.isEmpty {
            let unroutable = plan.unroutable
            // Every model busy or unhealthy passes; a request no model can serve does not. (A job
            // held in its slot for a pause logs it at info once, then at debug each time it is
            // planned again.)
            logger.log(
                unroutable?.isTransient == true ? (held > 0 ? .debug : .info) : .warning, "job cannot be routed",
                ["model": "none", "task_class": taskClass, "reason": unroutable?.reason ?? "no attempts"]
            )
            // Every model of the rule is out for now (breakers, budgets): wait for one to come
            // back without spending an attempt, for as long as the job's priority allows. A
            // provider's pause of a second is looked at again when it ends, not in five.
            let ruleModels = plan.rule.map { [$0.primary] + $0.fallbacks } ?? []
            let pauseEnd = state.soonestPauseEnd(of: ruleModels, after: instant)
            // Every model of the rule paused for longer than the job may wait for a model is an
            // outage, not a moment's business: a single-model rule's jobs were put back for as long
            // as a provider asked. (One at its max_concurrency beside it still frees in moments.)
            let allowance = instant.addingTimeInterval(Self.longestWaitForAModel(job.priority).seconds)
            let pausedLong =
                !ruleModels.isEmpty
                && ruleModels.allSatisfy { name in
                    router.catalog.model(named: name).map { !$0.enabled } ?? true
                        || state.models[name]?.pausedUntil.map { $0 > allowance } ?? false
                }
            // A model of the rule that this worker cannot call (its key missing or refused here),
            // its breaker closed, and another live worker calls it: that worker may run the job
            // now, and this one's claims pass it over (`passOn`). (Not when none does: with the key
            // missing everywhere, a review's jobs went back every second.)
            let elsewhere = !calledElsewhere(ruleModels, state: state, router: router).isEmpty
            if unroutable?.isTransient == true, !router.catalog.models.isEmpty,
                let wait = waitForAModel(
                    job, at: instant, reason: "no model available now: \(unroutable?.reason ?? "")", planner: planner,
                    until: pauseEnd, busy: unroutable?.isBusy == true && !pausedLong, othersMayRunIt: elsewhere)
            {
                if held < 5, pauseEnd != nil, case .postponed(let until, _, _, _, false, _) = wait,
                    until.timeIntervalSince(instant) <= Self.holdInSlot.seconds
                {
                    do {
                        // With up to 100 ms of jitter: the jobs held for one pause woke together.
                        try await Task.sleep(
                            for: .seconds(max(until.timeIntervalSince(now()), 0.05) + Double.random(in: 0...0.1)))
                        return await execute(job, heldFor: held + 1)
                    } catch {
                        return wait  // cancelled (the worker stops, or the job was cancelled): put back
                    }
                }
                return wait
            }
            return .failed(
                JobFailure(
                    code: Self.unroutableCode(unroutable),
                    message: [unroutable?.reason, unroutable?.hint].compactMap { $0 }.joined(separator: "; "),
                    retryable: router.catalog.models.isEmpty || unroutable?.isTransient == true, taskClass: taskClass,
                    metadata: routeMetadata
                )
            )
        }

        var queue = plan.attempts
        // Passed on after its models here failed: those are not called again while others remain.
        if !job.failedElsewhere.isEmpty, queue.contains(where: { !job.failedElsewhere.contains($0.model.name) }) {
            queue.removeAll { job.failedElsewhere.contains($0.model.name) }
        }
        /// The key's home, for a call that went elsewhere.
        func awayFromHome(_ model: ModelSpec) -> String? { plan.affinityHome.flatMap { $0 == model.name ? nil : $0 } }
        var tried: Set<String> = []
        var trail: [AttemptRecord] = []
        var retriesOnModel = 0
        // Whether every model failed for a reason of this worker's (a key missing from its
        // environment): then the job waits for a worker that can call them, as later jobs do
        // once these models are skipped here.
        var onlySkippedHere = true
        // Every model tried refused the request as one it cannot take (`n` on Anthropic, `max_tokens`
        // on o1): a retry would meet the same refusals.
        var onlyUnsupported = true
        // A model skipped because its one probe was already out, or it was full.
        var probeBusy = false
        while let attempt = queue.first {
            let model = attempt.model
            let budget = remainingBudget(job)
            if budget <= .zero {
                return .failed(Self.deadlinePassed(job, trail: trail, taskClass: taskClass, metadata: routeMetadata))
            }
            let timeout = min(attempt.timeout, budget)
            let started = now()
            if let ceiling, case let price = fleet.schedule(of: model).averagePricePer1K(at: started), price > ceiling {
                logger.info(
                    "model skipped: over the background ceiling now",
                    ["model": model.name, "price_per_1k": "\(price)", "ceiling": "\(ceiling)"])
                overCeiling.append(model.name)
                queue.removeFirst()
                retriesOnModel = 0
                continue
            }
            guard let call = fleet.begin(model, estimatedTokens: plan.estimate.totalTokens) else {
                // Half-open with another job's probe out first, or at its max_concurrency since the
                // plan: the model is not called.
                probeBusy = true
                queue.removeFirst()
                continue
            }
            do {
                let reply = try await providers.provider(for: model)
                    .complete(ProviderCall(request: job.request, model: model, timeout: timeout))
                let latencyMS = reply.latency.seconds * 1000
                fleet.end(model, call: call, success: true, latencyMS: latencyMS, rateLimit: reply.rateLimit)
                record(model, tier: attempt.tier, outcome: "succeeded", latencyMS: latencyMS)
                logger.debug(
                    "model answered",
                    ["model": model.name, "tier": attempt.tier.rawValue, "latency_ms": Int(latencyMS.rounded())]
                )
                logger.trace("model response", ["model": model.name, "response": reply.response.jsonText])
                // An answer without usage is not a free call: priced on an estimate, and the trail says so.
                let usage =
                    reply.usageReported
                    ? reply.usage : TokenUsage.estimated(promptTokens: plan.estimate.promptTokens, response: reply.response)
                if !reply.usageReported {
                    logger.debug("answer reported no usage; tokens and cost estimated", ["model": model.name])
                }
                // The cache counts say why a cost is below tokens_in times the input price: as they
                // were priced (a provider's counts that do not add up are held within the prompt).
                let split = usage.promptSplit
                trail.append(
                    AttemptRecord(
                        attempt: job.attempt, model: model.name, provider: model.provider.rawValue,
                        tier: attempt.tier.rawValue, outcome: "succeeded", httpStatus: reply.httpStatus,
                        latencyMS: latencyMS, targetMS: attempt.targetMS, worker: worker, at: started,
                        cachedTokens: split.cached > 0 ? split.cached : nil,
                        cacheWriteTokens: split.written > 0 ? split.written : nil,
                        usageEstimated: reply.usageReported ? nil : true, affinityHome: awayFromHome(model)
                    )
                )
                // Priced at the moment of the call: an off-peak window may be open. All three costs
                // split the prompt the same way (cache reads, cache writes, the rest), so savings
                // compare like with like; the primary is priced at its own cache prices.
                let schedule = fleet.schedule(of: model)
                let baseCost = Pricing.cost(of: model, usage)
                var metadata = routeMetadata
                // The named model was tried and did not answer (a slow one within the primary's
                // budget, mostly): a walkthrough's jobs naming claude-opus were answered by another
                // model with nothing but the trail to say why.
                if let requested = Router.requestedModel(in: job.request), requested != model.name,
                    metadata["requested_model"] == nil,
                    let tried = trail.last(where: { $0.model == requested && $0.attempt == job.attempt })
                {
                    metadata["requested_model"] = [
                        "model": .string(requested),
                        "reason": .string(
                            "it was tried first and did not answer (\(tried.outcome)"
                                + (tried.error.map { ": \($0)" } ?? "") + "); the rule's models ran instead"),
                    ]
                }
                if job.priority == .background {
                    // What the ceiling compared; lets an SQL check prove no job ran above it unannounced.
                    let price = schedule.averagePricePer1K(at: started)
                    metadata["price_per_1k"] = .string(price.description)
                    // A drain sets the ceiling aside: a job run above it says so, as an escalated one does.
                    if metadata["escalation"] == nil, let drainUntil = planner.policy.drainUntil,
                        planner.policy.isDraining(at: started), let limit = planner.policy.ceiling(for: plan.rule),
                        price > limit
                    {
                        metadata["escalation"] = [
                            "reason": .string(
                                "a drain until \(drainUntil.postgresText) sets the background ceiling of $\(limit)/1K "
                                    + "aside (dispatcher background drain)")
                        ]
                    }
                }
                return .succeeded(
                    JobAnswer(
                        model: model.name, provider: model.provider.rawValue, tier: attempt.tier.rawValue,
                        taskClass: taskClass, response: reply.response, tokensIn: usage.promptTokens,
                        tokensOut: usage.completionTokens, cost: schedule.cost(usage, at: started),
                        baseCost: baseCost,
                        primaryCost: primary.map { $0.name == model.name ? baseCost : Pricing.cost(of: $0, usage) }
                            ?? baseCost,
                        trail: trail, metadata: metadata
                    )
                )
            } catch {
                let latencyMS = now().timeIntervalSince(started) * 1000
                if error is CancellationError || Task.isCancelled {
                    fleet.end(model, call: call, success: false, countsAgainstModel: false, latencyMS: nil)
                    record(model, tier: attempt.tier, outcome: "cancelled", latencyMS: nil)
                    logger.info("model call cancelled", ["model": model.name, "tier": attempt.tier.rawValue])
                    trail.append(
                        AttemptRecord(
                            attempt: job.attempt, model: model.name, provider: model.provider.rawValue,
                            tier: attempt.tier.rawValue, outcome: "cancelled", latencyMS: latencyMS, worker: worker,
                            at: started, affinityHome: awayFromHome(model)
                        )
                    )
                    return .cancelled(trail: trail)
                }
                let providerError = error as? ProviderError
                let decision = ProviderError.decision(
                    for: error, remainingBudget: min(remainingBudget(job), Self.longestSameModelWait(queue)))
                let summary = providerError?.summary ?? "\(error)"
                // Cut short by the job's deadline, the model was not given its time: a run of short
                // deadlines opened the breaker of a healthy model for every job of its rules. Only our
                // own timer's cut (not a provider's 408), and only with under half the tier's time:
                // a model that hangs still meets its breaker when jobs' deadlines leave it most of it.
                let cutByDeadline =
                    providerError?.code == .timedOut && providerError?.httpStatus == nil && timeout * 2 < attempt.timeout
                // Recorded as `deadline`, not `timeout`: an on-call walkthrough's clients with 600 ms
                // deadlines showed two healthy models at 3–6% timeouts in status, the calls counted
                // against them in every window.
                let outcome = cutByDeadline ? "deadline" : Self.outcome(of: providerError)
                trail.append(
                    AttemptRecord(
                        attempt: job.attempt, model: model.name, provider: model.provider.rawValue,
                        tier: attempt.tier.rawValue, outcome: outcome,
                        httpStatus: providerError?.httpStatus, latencyMS: latencyMS, targetMS: attempt.targetMS,
                        error: summary, worker: worker, at: started, affinityHome: awayFromHome(model)
                    )
                )
                // A deadline's cut says nothing of the model's speed: no latency observed.
                record(model, tier: attempt.tier, outcome: outcome, latencyMS: cutByDeadline ? nil : latencyMS)
                // The status a number in JSON lines, and left out when there was no answer.
                var callLogger = logger.with("model", model.name).with("tier", attempt.tier.rawValue)
                    .with("outcome", outcome)
                if let status = providerError?.httpStatus { callLogger = callLogger.with("http_status", status) }
                callLogger.info(
                    "model call failed",
                    ["latency_ms": Int(latencyMS.rounded()), "next": Self.describe(decision), "error": summary]
                )
                // Neither the request's fault nor this worker's says anything about the model's health, nor
                // does a request this model cannot take (`max_tokens` on o1, `n` on Anthropic): counted, a
                // run of them would open its breaker for the requests it can take.
                let modelAtFault =
                    !cutByDeadline
                    && ![.failJob, .largerContext, .nextCandidateAndSkipHere, .nextCandidateRefusedHere].contains(decision)
                    && providerError?.code != .unsupportedRequest
                    // A 429 that asks for a wait says "slower", not "broken": its wait and the rate
                    // budget handle it. Counted, a few percent of 429s among 128 calls in flight came
                    // back first, "in a row", opened the breaker, and a backlog the provider was
                    // serving failed. A bare 429 sets no pause: it counts, or nothing would slow it.
                    && !(providerError?.code == .rateLimited && providerError?.retryAfter != nil)
                // Only a timeout says how fast the model is (slow): a 500 in a millisecond fed the
                // latency EWMA, and a model failing at once read as the fastest to lowest_latency.
                // (Our own timer's: a provider's 408 may come back in a millisecond.)
                let timedOut = providerError?.code == .timedOut && providerError?.httpStatus == nil && !cutByDeadline
                fleet.end(
                    model, call: call, success: false, countsAgainstModel: modelAtFault,
                    latencyMS: timedOut ? latencyMS : nil, rateLimit: providerError?.rateLimit,
                    markUnhealthy: decision == .nextCandidateAndMarkUnhealthy ? summary : nil,
                    refused: decision == .nextCandidateRefusedHere
                        ? Self.refusal(summary, providerError, worker: worker) : nil,
                    hint: providerError?.hint
                )
                if providerError?.code != .unsupportedRequest { onlyUnsupported = false }
                switch decision {
                case .nextCandidateAndSkipHere:
                    fleet.skipHere(model, reason: providerError?.message ?? summary, hint: providerError?.hint)
                case .nextCandidateRefusedHere:
                    break
                default:
                    onlySkippedHere = false
                }
                switch decision {
                case .retrySameModel(let wait) where retriesOnModel < sameModelRetries:
                    retriesOnModel += 1
                    do {
                        try await Task.sleep(for: wait)
                    } catch {
                        return .cancelled(trail: trail)
                    }
                    continue
                case .retrySameModel, .nextCandidate, .nextCandidateAndMarkUnhealthy, .nextCandidateAndSkipHere,
                    .nextCandidateRefusedHere:
                    break
                case .largerContext:
                    tried.insert(model.name)
                    let needed = max(model.contextWindow, plan.estimate.totalTokens)
                    guard let larger = router.largerContextAttempt(
                        than: needed, after: plan, position: attempt.position, excluding: tried,
                        state: fleet.routingState(sequence: UInt64(bitPattern: job.id)), request: job.request
                    ) else {
                        return .failed(
                            JobFailure(
                                code: "context_length_exceeded",
                                message: "the request is too long for \(model.name) and no model with a larger "
                                    + "context window may take it (none in the catalog, or each is disabled, unhealthy, "
                                    + "over its ceiling, under its quality floor, or said not to take what it asks): "
                                    + summary,
                                retryable: false, taskClass: taskClass, trail: trail,
                                metadata: routeMetadata  // the rule, and why models were passed over
                            )
                        )
                    }
                    queue = [larger] + queue.dropFirst().filter {
                        $0.model.contextWindow > needed && $0.model.name != larger.model.name
                    }
                    retriesOnModel = 0
                    continue
                case .failJob:
                    return .failed(
                        JobFailure(
                            code: "bad_request",
                            message: "\(model.name) refused the request, and another model would too: \(summary)",
                            retryable: false, taskClass: taskClass, trail: trail,
                            metadata: routeMetadata  // the rule, and why models were passed over
                        )
                    )
                }
            }
            tried.insert(model.name)
            queue.removeFirst()
            retriesOnModel = 0
        }
        // Models left that have gone over the ceiling since the plan: the job waits for a price
        // within it, its attempt not spent (or runs escalated at its next claim if its deadline
        // is near by then), with the calls it made.
        if !overCeiling.isEmpty {
            let instant = now()
            let went = "\(overCeiling.joined(separator: ", ")) went over the ceiling since it was planned"
            switch planner.decide(
                RoutingRequest(job: job), deadline: job.deadline, maxAttempts: job.maxAttempts,
                state: fleet.routingState(sequence: UInt64(bitPattern: job.id), now: instant), now: instant)
            {
            case .postpone(let until, let reason):
                return .postponed(until: until, reason: "\(went); \(reason)", policy: planner.policy.version, trail: trail)
            case .run(_, let escalation?):
                // Its deadline is near now: planned again at once, escalated (not an attempt spent).
                return .postponed(
                    until: instant, reason: "\(went); \(escalation)", policy: planner.policy.version, trail: trail)
            case .run(_, nil):
                break  // a model of its rule is within the ceiling now: an attempt of failed models
            }
        }
        // Nothing called: every model left was half-open with its probe out, or full. Wait for one.
        if trail.isEmpty && probeBusy,
            let wait = waitForAModel(
                job, at: now(),
                // The third: a walkthrough's worker, its key refused, read "half-open" of a closed breaker.
                reason: "the plan's models are each half-open with its probe in flight, at max_concurrency, "
                    + "or refused on this worker with its one retry in flight",
                planner: planner, busy: true)
        {
            return wait
        }
        let models = Self.modelsCalled(trail)
        if onlySkippedHere && !trail.isEmpty,
            let wait = waitForAModel(
                job, at: now(), reason: "this worker cannot call any model of the plan "
                    + "(\(models.joined(separator: ", "))): \(trail.last?.error ?? "unknown error")", planner: planner,
                othersMayRunIt: models.contains(where: fleet.othersCall), trail: trail)
        {
            return wait
        }
        // The job's deadline cut its last call: said so, not "every model in the plan failed" with
        // a timeout (a walkthrough's 200 ms jobs read as if their one model had timed out).
        if trail.last?.outcome == "deadline" {
            return .failed(Self.deadlinePassed(job, trail: trail, taskClass: taskClass, metadata: routeMetadata))
        }
        // The models this worker can call failed, and a model of the rule it cannot call (its key
        // missing or refused here) another live worker calls: passed on to them, its calls kept
        // (a walkthrough's worker without the fallback's key failed a job on its primary's one 500,
        // the healthy fallback untried; with --max-attempts 1, for good). Once an attempt, before
        // any wait for a model in it (`waitingSince`, which a retry clears): two workers lacking
        // each other's key passed a job back and forth, calling its failing models each time.
        if let rule = plan.rule, !trail.isEmpty, job.waitingSince == nil,
            case let elsewhere = takersElsewhere(job, rule: rule, router: router),
            !elsewhere.isEmpty,
            let wait = waitForAModel(
                job, at: now(),
                reason: "\(models.joined(separator: ", ")) failed (last: \(trail.last?.error ?? "unknown error")); "
                    + "\(elsewhere.joined(separator: ", ")) left to the workers that can call "
                    + (elsewhere.count == 1 ? "it" : "them"),
                planner: planner, othersMayRunIt: true, trail: trail),
            case .postponed(_, _, _, _, true, _) = wait
        {
            return wait
        }
        let unsupported = onlyUnsupported && !trail.isEmpty
        let skipped =
            overCeiling.isEmpty
            ? "" : "; not called, over the background ceiling since the plan: \(overCeiling.joined(separator: ", "))"
        return .failed(
            JobFailure(
                code: unsupported ? "unsupported_request" : "all_candidates_failed",
                message: (unsupported ? "no model of the plan can take this request" : "every model in the plan failed")
                    + " (\(models.joined(separator: ", "))); last: " + (trail.last?.error ?? "unknown error") + skipped,
                retryable: !unsupported, taskClass: taskClass, trail: trail,
                metadata: routeMetadata  // the rule, and why models were passed over
            )
        )
    }

    /// The models a trail called, each once, in the order first called.
    static func modelsCalled(_ trail: some Sequence<AttemptRecord>) -> [String] {
        trail.compactMap(\.model).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
    }

    /// The job's deadline came before its models were done: which call it cut, and what failed before.
    static func deadlinePassed(
        _ job: Job, trail: [AttemptRecord], taskClass: String, metadata: [String: JSONValue]
    ) -> JobFailure {
        let deadline = job.deadline.map { " (\($0.postgresText))" } ?? ""
        let cut = trail.last.flatMap { $0.outcome == "deadline" ? $0.model : nil }
        let failed = modelsCalled(trail.dropLast(cut == nil ? 0 : 1))
        let models = failed.joined(separator: ", ")
        let message =
            if let cut {
                "its deadline\(deadline) cut the call to \(cut) short, with no time left for another"
                    + (failed.isEmpty ? "" : "; before it, \(models) failed")
            } else {
                "its deadline\(deadline) passed while trying its models" + (failed.isEmpty ? "" : " (\(models) failed)")
            }
        return JobFailure(
            code: "deadline_passed", message: message, retryable: false, taskClass: taskClass, trail: trail,
            metadata: metadata)
    }

    /// Counts one call and times it (cancelled calls are counted, not timed).
    private func record(_ model: ModelSpec, tier: Tier, outcome: String, latencyMS: Double?) {
        guard let metrics else { return }
        metrics.attempts.increment([model.name, outcome])
        if let latencyMS { metrics.attemptLatency.observe(latencyMS / 1000, [model.name, tier.rawValue]) }
    }

    /// A provider's refusal of this worker (its key, a 401; a 403 may be its key, its address or
    /// its account), said for the fleet's breaker (the worker named: a review's fleet with one
    /// worker on a stale key lost the model with nothing in status naming that worker) and for
    /// this worker's own skip, which status shows beside its name.
    static func refusal(_ summary: String, _ error: ProviderError?, worker: String) -> (fleet: String, here: String) {
        error?.httpStatus == 401
            ? ("worker \(worker)'s key was refused: \(summary)", "its key was refused: \(summary)")
            : ("worker \(worker) was refused: \(summary)", "it was refused: \(summary)")
    }

    /// What the executor does next, for the log.
    static func describe(_ decision: FallbackDecision) -> String {
        switch decision {
        case .retrySameModel(let wait): "retry the same model after \(Int((wait.seconds * 1000).rounded())) ms"
        case .nextCandidate: "next candidate"
        case .largerContext: "a model with a larger context window"
        case .nextCandidateAndMarkUnhealthy: "next candidate; model marked unhealthy"
        case .nextCandidateAndSkipHere: "next candidate; model skipped by this worker"
        case .nextCandidateRefusedHere: "next candidate; model skipped by this worker for a while, the fleet told"
        case .failJob: "fail the job: the request is at fault"
        }
    }

    /// How often a job with no model available looks again.
    static let recheckInterval = Duration.seconds(5)

    /// The job put back to look again in `recheckInterval` (due at once when passed on), attempt
    /// not spent, while it has not waited longer than its priority allows (nil then: it fails, and
    /// its attempts retry it).
    /// - Parameters:
    ///   - until: when a model may be back sooner than that (a provider's pause ends).
    ///   - busy: a model is only busy (calls in flight, budget): it is waited for however long the
    ///     job has waited (a background job over an hour old spent an attempt each time it met a
    ///     model at its max_concurrency).
    ///   - passedOn: another live worker calls a model this one cannot, and this one's claims pass
    ///     the job over (`FleetState.passOn`): due again at once, for the others. Put back for 5 s,
    ///     a review's stale worker's single-model jobs waited 5–25 s while the other workers had the
    ///     model; for 250 ms, the worker that put a job back claimed it again as often as the others
    ///     did, and a job went back up to six times.
    static func waitForAModel(
        _ job: Job, at instant: Date, reason: String, planner: OffPeakPlanner, until: Date? = nil, busy: Bool = false,
        passedOn: Bool = false, trail: [AttemptRecord] = []
    ) -> JobOutcome? {
        let recheck = passedOn ? instant : instant.addingTimeInterval(recheckInterval.seconds)
        // A provider's pause that ends before the next look is a blip, not an outage: waited out
        // whatever the job's age (a backlog's older jobs each spent an attempt on a 1 s pause).
        let blip = until.map { $0 <= recheck } ?? false
        let waited = instant.timeIntervalSince(waitStart(job, at: instant))
        guard blip || busy || waited < longestWaitForAModel(job.priority).seconds else {
            return nil
        }
        let soonest = until.map { max($0, instant.addingTimeInterval(0.25)) } ?? recheck
        return .postponed(
            until: min(soonest, recheck), reason: reason, policy: planner.policy.version, forModel: true,
            passedOn: passedOn, trail: trail)
    }

    /// Of `names`, the models this worker cannot call (a key missing or refused here) that are
    /// enabled, their breakers closed, and called by another live worker: one that may run the job.
    private func calledElsewhere(_ names: [String], state: RoutingState, router: Router) -> [String] {
        names.filter { name in
            router.catalog.model(named: name)?.enabled == true
                && state.models[name].map { $0.unavailableHere != nil && $0.breaker == .closed } ?? false
                && fleet.othersCall(name)
        }
    }

    /// The models of `rule` called elsewhere (`calledElsewhere`) that would take `job` there: in
    /// its plan with this worker's state but for them (a review's: a model too small for the
    /// request, or out of its quality floor, had the job passed on to a worker whose plan left it
    /// out, and passed back).
    private func takersElsewhere(_ job: Job, rule: RouteRule, router: Router) -> [String] {
        let state = fleet.routingState(sequence: UInt64(bitPattern: job.id))
        let candidates = calledElsewhere([rule.primary] + rule.fallbacks, state: state, router: router)
        guard !candidates.isEmpty else { return [] }
        var there = state
        for name in candidates { there[name].unavailableHere = nil }
        let plan = router.plan(for: RoutingRequest(job: job), state: there, explain: false)
        return candidates.filter { name in plan.attempts.contains { $0.model.name == name } }
    }

    /// `waitForAModel`, the job passed on (`FleetState.passOn`) when another live worker may run
    /// it and it may still wait: named only then (named first, a job that failed instead was
    /// passed over by this worker's claims of its retry), and not past the list's limit.
    private func waitForAModel(
        _ job: Job, at instant: Date, reason: String, planner: OffPeakPlanner, until: Date? = nil,
        busy: Bool = false, othersMayRunIt: Bool = false, trail: [AttemptRecord] = []
    ) -> JobOutcome? {
        if othersMayRunIt,
            let wait = Self.waitForAModel(
                job, at: instant, reason: reason, planner: planner, until: until, busy: busy, passedOn: true,
                trail: trail),
            fleet.passOn(job.id, now: instant)
        {
            return wait
        }
        return Self.waitForAModel(
            job, at: instant, reason: reason, planner: planner, until: until, busy: busy, trail: trail)
    }

    /// When a job began to wait for a model. An interactive job: when it became due (one
    /// submitted for later is not waiting before its time: scheduled two minutes ahead, it failed
    /// at its first claim while a breaker was open), or when its putting back began
    /// (`waiting_since`, kept through each one): a person waits through all of it. A background
    /// job: at its first putting back (`waiting_since`), not at its creation (one held for hours
    /// at the background gate failed an attempt the moment its window opened on an open breaker),
    /// and afresh when it sat due for longer than `interruptedWait` before this claim (held at
    /// the closed gate between windows: it was not waiting for a model then; `complete` starts
    /// its `waiting_since` again alike, sql/0040).
    static func waitStart(_ job: Job, at instant: Date) -> Date {
        guard job.priority == .background else { return job.waitingSince ?? max(job.createdAt, job.runAt) }
        guard let since = job.waitingSince, let claimed = job.claimedAt,
            claimed.timeIntervalSince(job.runAt) <= interruptedWait.seconds
        else { return instant }
        return since
    }

    /// How long a background job waiting for a model may sit due and unclaimed before its wait
    /// begins again (sql/0040 uses the same ten minutes). Longer than a job put back waits behind
    /// a backlog's due jobs (claimed in run_at order): with a minute, a 50,000-job backlog at 200
    /// jobs/s restarted its wait at every claim, and it never failed.
    static let interruptedWait = Duration.seconds(600)

    /// How long a job waits for a model of its rule to come back before it fails (its attempts
    /// then retry it as usual): a person waits for an interactive answer, a batch does not.
    static func longestWaitForAModel(_ priority: Priority) -> Duration {
        priority == .interactive ? .seconds(60) : .seconds(3600)
    }

    /// The most a model's `retry-after` may hold the job's slot (deadline or not): while other
    /// models remain, what they may take (their timeouts added up), so a 429 asking for a minute
    /// moves on instead of holding the slot twice while models that could answer wait; on the
    /// last model, up to a minute a wait (two at most: `sameModelRetries`; past it the job fails
    /// and is retried later, its slot freed).
    static func longestSameModelWait(_ queue: [RoutePlan.Attempt]) -> Duration {
        queue.count > 1 ? queue.dropFirst().reduce(.zero) { $0 + $1.timeout } : .seconds(60)
    }

    /// Time left before the job's deadline; a day when it has none (each attempt is still bounded
    /// by its tier's latency target).
    private func remainingBudget(_ job: Job) -> Duration {
        guard let deadline = job.deadline else { return .seconds(86_400) }
        return .milliseconds(Int64(deadline.timeIntervalSince(now()) * 1000))
    }

    /// The code of a job no model of its rule can take. Kept out by the request itself (too long
    /// for every model, or asking what none can do, with no model of the catalog that would take
    /// it), it is the request's fault, said as a provider says it: a walkthrough's client sending
    /// `max_tokens` 5,000,000 paged on-call as `unroutable`, the catalog's code.
    static func unroutableCode(_ unroutable: RoutePlan.Unroutable?) -> String {
        guard let unroutable else { return "unroutable" }
        if unroutable.isTransient { return "no_model_available" }
        if unroutable.isTooLarge { return "context_length_exceeded" }
        return unroutable.isRequestsFault ? "unsupported_request" : "unroutable"
    }

    /// The trail's outcome word for a failed call.
    static func outcome(of error: ProviderError?) -> String {
        guard let error else { return "error" }
        switch error.code {
        case .timedOut: return "timeout"
        case .rateLimited: return "rate_limited"
        case .contextLengthExceeded: return "context_length"
        // The request is not one this model takes: no error of the model's (is_model_error).
        case .unsupportedRequest: return "unsupported"
        // This worker has no key for it: no error of the model's either (it counted in the
        // fleet's error-rate alert, which can open the breaker for every worker).
        case .missingAPIKey: return "missing_api_key"
        // The provider refused this worker (401, 403: its key, its address): not the model's error
        // until every worker is refused, when the breaker opens (sql/0097). Counted, one worker on
        // a stale key raised the error-rate alert, which opened the breaker for every worker.
        case .unauthorized: return "refused"
        // Out of credit, said with a 400 or 402 as often as a 429: the model's error all the same
        // (is_model_error counts it whatever the status).
        case .quotaExhausted: return "quota_exhausted"
        default: return "error"
        }
    }
}
