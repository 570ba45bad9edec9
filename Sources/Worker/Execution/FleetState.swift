import Foundation
import Postgres
import QueueModel
import Synchronization

/// What this worker knows about the models: the catalog's router, the fleet's breakers, its own
/// calls in flight, and its share of each model's rate budget.
///
/// The catalog reloads on `switchyard_catalog` (or, for a `--poll-only` worker, every 10 s),
/// breakers refresh on `switchyard_health` and on a slow timer, and this worker's own outcomes
/// are reported in batches (every 250 ms) and applied locally at once, so a model failing here is
/// avoided here before the NOTIFY comes back.
final class FleetState: Sendable {
    private struct State {
        var router = Router(catalog: .empty)
        var schedules: [String: PriceSchedule] = [:]
        /// Each model's average price per 1K now, when a window changes it; recomputed each minute
        /// (windows have minute granularity), not per job.
        var offPeakPrices: [String: Decimal] = [:]
        var pricesComputedFor: Int64 = -1
        var policy = BackgroundPolicy()
        var planner = OffPeakPlanner(router: Router(catalog: .empty), policy: BackgroundPolicy(), schedules: [:])
        var breakers: [String: RoutingState.ModelState] = [:]
        var liveWorkers = 1
        /// `breaker_consecutive_failures`, and this worker's own failures in a row per model
        /// since its last success: at the limit it stops calling the model at once, as it does
        /// after a failed probe, rather than failing job after job until its report (every 250 ms)
        /// comes back with the fleet's breaker open.
        var consecutiveFailureLimit = 5
        var runs: [String: FailureRun] = [:]
        var inFlight: [String: Int] = [:]
        var budgets: [String: RateBudget] = [:]
        var pending: [String: HealthReport] = [:]
        /// Models this worker cannot call though the fleet can, by name: the catalog entry it
        /// failed with (a changed entry is tried again), why, and until when (nil: for good).
        var skippedHere: [String: (model: ModelSpec, reason: String, until: Date?)] = [:]
        /// `breaker_open_seconds`: how long a model that refused this worker is skipped here.
        var breakerOpenSeconds: TimeInterval = 30
        /// The other live workers, and how many of them skip each model: whether a job this
        /// worker cannot run may be run by another now.
        var others = HealthStore.OtherWorkers()
        /// Models whose refusal here has run out, with the one call that tries them again in
        /// flight: the others wait for its answer (a burst after the skip ran out sent a refused
        /// call from every free slot at once).
        var refusalProbes: Set<String> = []
        /// Jobs this worker passed on to the others (`passOn`), and until when its claims pass
        /// them over.
        var passedOn = PassedOnJobs()
        /// A reload that failed (the database away for a moment) is tried again at the next
        /// refresh, not left until the next notification: a stale policy would have every
        /// postponement it decides sent back at once (`complete()` keeps none decided under an
        /// older policy), job after job.
        var reloadFailed = false
        /// Policy reads started, and the latest one applied: reloads run from more than one task
        /// (a notification, a reconnect, the retry above), and an older read that finishes last
        /// must not put back the policy a newer one replaced.
        var policyReadsStarted = 0
        var policyReadApplied = 0
        /// The same for the catalog: reads run from the gate, the reload-failed retry and
        /// `--poll-only`'s timer, and one started earlier must not put back an older catalog.
        var catalogReadsStarted = 0
        var catalogReadApplied = 0

        /// Why this worker skips `model` now, or nil: for good, until its refusal runs out, and
        /// then while the call that tries it again is in flight.
        func skippedHere(_ model: String, at now: Date) -> String? {
            guard let skip = skippedHere[model],
                skip.until.map({ $0 > now || refusalProbes.contains(model) }) ?? true
            else { return nil }
            return skip.reason
        }

        /// Whether `model` is the last healthy model of a rule: every other model the rule names
        /// disabled, or its breaker not closed (`switchyard.last_healthy_model_of`).
        func isLastHealthy(_ model: String) -> Bool {
            let catalog = router.catalog
            return catalog.rules.contains { rule in
                let names = [rule.primary] + rule.fallbacks
                return names.contains(model)
                    && !names.contains { other in
                        other != model && catalog.model(named: other)?.enabled == true
                            && (breakers[other]?.breaker ?? .closed) == .closed
                    }
            }
        }

        /// A breaker the fleet closed again (another worker's probe succeeded) starts this
        /// worker's run of failures afresh: counted on, a failure before the opening and one
        /// after reopened a model that had recovered.
        mutating func resetRunsOfClosed(_ now: [String: RoutingState.Breaker]) {
            for (model, breaker) in now where breaker == .closed && (breakers[model]?.breaker ?? .closed) != .closed {
                runs[model]?.restart()
            }
        }
    }

    private let state = Mutex(State())
    private let catalogStore: CatalogStore
    private let healthStore: HealthStore
    private let logger: Logger
    private let reportInterval: Duration
    private let refreshInterval: Duration
    /// The share of each model's max_concurrency and rate budget background work leaves to
    /// interactive work (the worker's `--reserve-interactive`).
    private let interactiveReserve: Double

    /// How often the catalog and the background settings are re-read without being told to:
    /// never for a worker that LISTENs; for a `--poll-only` worker, which hears no NOTIFY.
    private let reloadInterval: Duration?
    /// The worker's environment, where the models' API keys are read (only their variables'
    /// names are looked at here).
    private let environment: [String: String]
    /// This worker's id, in its reports: the fleet counts a provider's refusal per worker.
    private let worker: String?

    init(pool: PostgresPool, logger: Logger, reportInterval: Duration = .milliseconds(250),
         refreshInterval: Duration = .seconds(2), reloadInterval: Duration? = nil, interactiveReserve: Double = 0,
         environment: [String: String] = ProcessInfo.processInfo.environment, worker: String? = nil) {
        self.worker = worker
        self.interactiveReserve = interactiveReserve
        self.environment = environment
        self.catalogStore = CatalogStore(pool: pool)
        self.healthStore = HealthStore(pool: pool)
        self.logger = logger
        self.reportInterval = reportInterval
        self.refreshInterval = refreshInterval
        self.reloadInterval = reloadInterval
    }

    /// The NOTIFY channels this state follows.
    static let channels = [CatalogStore.channel, HealthStore.channel, FleetState.settingsChannel]
    static let settingsChannel = "switchyard_settings"

    var router: Router { state.withLock { $0.router } }
    var policy: BackgroundPolicy { state.withLock { $0.policy } }
    /// The router and the background policy together, rebuilt when either changes.
    var planner: OffPeakPlanner { state.withLock { $0.planner } }

    /// How near a background job's deadline lets it through the gate, as `switchyard.escalation_horizon`
    /// reckons it: the policy's setting, else the formula with the largest `max_latency_ms` of any rule.
    func escalationHorizon(maxAttempts: Int) -> Duration {
        let (policy, widest) = state.withLock { ($0.policy, $0.router.catalog.rules.compactMap(\.maxLatencyMS).max()) }
        return policy.escalationHorizon(maxAttempts: maxAttempts, primaryTimeoutMS: widest.map { max($0, 1500) })
    }

    /// A model's price windows, parsed once per catalog.
    func schedule(of model: ModelSpec) -> PriceSchedule {
        // The catalog may have been reloaded since `model` was planned with: price the call by the
        // same prices its base and primary costs use, or a new price list would pass for savings.
        if let cached = state.withLock({ $0.schedules[model.name] }), cached.model.samePrices(as: model) {
            return cached
        }
        return PriceSchedule(model)
    }

    // MARK: Loading

    /// Loads the catalog and the breakers (at start, on NOTIFY, and after a reconnect).
    func reload() async {
        await reloadCatalog()
        await refreshHealth()
        await reloadPolicy()
    }

    func reloadPolicy() async {
        let read = state.withLock { state in
            state.policyReadsStarted += 1
            return state.policyReadsStarted
        }
        do {
            let policy = try await BackgroundPolicy.load(healthStore.pool)
            state.withLock { state in
                guard read > state.policyReadApplied else { return }
                state.policyReadApplied = read
                guard policy != state.policy else { return }
                state.policy = policy
                state.planner = OffPeakPlanner(router: state.router, policy: policy, schedules: state.schedules)
            }
        } catch {
            if Task.isCancelled { return }
            state.withLock { $0.reloadFailed = true }
            logger.warning("could not read the background settings; trying again shortly", ["error": "\(error)"])
        }
    }

    func reloadCatalog() async {
        let read = state.withLock { state in
            state.catalogReadsStarted += 1
            return state.catalogReadsStarted
        }
        do {
            let catalog = try await catalogStore.load()
            let previous = state.withLock { $0.router.catalog }
            if catalog == previous && !catalog.models.isEmpty {
                state.withLock { $0.catalogReadApplied = max($0.catalogReadApplied, read) }
                return
            }
            let router = Router(catalog: catalog)
            let schedules = Dictionary(catalog.models.map { ($0.name, PriceSchedule($0)) }, uniquingKeysWith: { a, _ in a })
            let applied = state.withLock { state -> Bool in
                // A read that started before the one applied last is older than it.
                guard read > state.catalogReadApplied else { return false }
                state.catalogReadApplied = read
                state.router = router
                state.schedules = schedules
                state.pricesComputedFor = -1
                state.planner = OffPeakPlanner(router: router, policy: state.policy, schedules: schedules)
                state.skippedHere = state.skippedHere.filter { catalog.model(named: $0.key) == $0.value.model }
                return true
            }
            guard applied else { return }
            if catalog.models.isEmpty {
                logger.warning(
                    "the model catalog is empty: jobs cannot be routed",
                    ["hint": "import one: dispatcher models import examples/catalog.json"]
                )
            } else {
                // Each rating that moves a blended score reloads it: a soak's 0.8 ratings a second
                // logged 306 of these lines in 38 minutes per worker. Said at info when the models
                // or rules themselves come or go.
                let sameNames =
                    previous.models.map(\.name) == catalog.models.map(\.name)
                    && previous.rules.map(\.taskClass) == catalog.rules.map(\.taskClass)
                logger.log(
                    sameNames ? .debug : .info, "loaded the model catalog",
                    ["models": catalog.models.count, "rules": catalog.rules.count])
            }
            // Known at load: a worker without a model's key skips it from its first job (a job
            // routed to it recorded a failed attempt, and counted as a fallback, first).
            let keyVariables = KeyVariables(environment: environment)
            for model in catalog.models where model.enabled && model.provider != .simulated {
                if let variable = model.apiKeyEnv, let refusal = keyVariables.refusal(of: variable) {
                    skipHere(
                        model, reason: "its api_key_env is not read: \(refusal)",
                        hint: KeyVariables.hint(for: variable), everywhere: KeyVariables.refusal(of: variable) != nil)
                    continue
                }
                guard let variable = model.apiKeyEnv, !variable.isEmpty,
                    environment[variable]?.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ?? true
                else { continue }
                skipHere(
                    model,
                    reason: "its API key variable \(variable) is \(ProviderEndpoint.missing(variable, in: environment)) "
                        + "in this worker's environment",
                    hint: "set \(variable) and restart the worker, or change api_key_env in the catalog")
            }
        } catch {
            if Task.isCancelled { return }
            state.withLock { $0.reloadFailed = true }
            logger.error("could not load the model catalog; trying again shortly", ["error": "\(error)"])
        }
    }

    func refreshHealth() async {
        do {
            let snapshot = try await healthStore.snapshot(for: worker)
            state.withLock { state in
                state.resetRunsOfClosed(snapshot.models.mapValues(\.breaker))
                state.breakers = snapshot.models
                state.liveWorkers = snapshot.liveWorkers
                state.consecutiveFailureLimit = snapshot.consecutiveFailureLimit
                state.breakerOpenSeconds = snapshot.breakerOpenSeconds
                state.others = snapshot.others
            }
        } catch {
            if Task.isCancelled { return }
            logger.warning("could not refresh model health", ["error": "\(error)"])
        }
    }

    /// Follows NOTIFYs on `channels`: starts the reload each asks for and returns, so the
    /// listener goes on at once (see `ReloadGate`).
    func handle(_ notification: PostgresNotification) {
        switch notification.channel {
        case CatalogStore.channel: requestCatalog()
        case HealthStore.channel: gates.health.request { await self.refreshHealth() }
        case Self.settingsChannel: gates.policy.request { await self.reloadPolicy() }
        default: break
        }
    }

    /// The background policy's version covers the catalog too (sql/0063): read again with it, or
    /// every postponement after an import would carry the version before it, and be sent back.
    private func requestCatalog() {
        // The version first: an import committing between the two reads then leaves an old
        // version beside the new catalog (a postponement needlessly sent back once), not the new
        // version beside the old catalog (one wrongly kept).
        gates.catalog.request {
            await self.reloadPolicy()
            await self.reloadCatalog()
        }
    }

    /// Reads everything a notification could have announced again, through the same gates: once
    /// LISTEN takes effect (what was committed since the first load announced itself to nobody:
    /// a review's worker, started as an import committed, routed by the old rules until the next
    /// import), and after the LISTEN connection comes back.
    func catchUp() {
        requestCatalog()
        gates.health.request { await self.refreshHealth() }
    }

    /// Whether another live worker calls `model` (does not skip it), as of the last refresh of
    /// the breakers (every 2 s).
    func othersCall(_ model: String) -> Bool {
        state.withLock { $0.others.call(model) }
    }

    /// How long this worker's claims pass over a job it passed on: if the others have gone by
    /// then, it claims the job again (and puts it back for `RoutingExecutor.recheckInterval`
    /// once no live worker calls its models).
    static let passedOnFor: TimeInterval = 5
    /// How many jobs passed on the claims name at most: each candidate job of a claim is compared
    /// with them. Past it, a job is put back for `RoutingExecutor.recheckInterval` instead (a
    /// review's 1,500-job backlog filled the list in 3.3 s, and a limit that made room by naming
    /// the oldest no more had this worker claim them again as fast as the database allowed).
    static let passedOnLimit = 1_000

    /// Names a job this worker puts back for another live worker to run (it cannot call the job's
    /// models, another worker does): its claims pass it over for `passedOnFor` (sql/0098).
    /// Before, it claimed the job again as often as the others did, and put it back again.
    /// - Returns: false when `passedOnLimit` jobs are named already (the job is not).
    func passOn(_ job: Int64, now: Date = Date()) -> Bool {
        state.withLock { state in
            state.passedOn.insert(
                job, until: now.addingTimeInterval(Self.passedOnFor), limit: Self.passedOnLimit, now: now)
        }
    }

    /// The jobs this worker's next claim passes over (`passOn`).
    func passedOn(now: Date = Date()) -> [Int64] {
        state.withLock { state in
            state.passedOn.prune(at: now)
            return state.passedOn.ids
        }
    }

    /// The models this worker skips (`skipHere`), with why.
    var skippedModels: [String: String] {
        let now = Date()
        return state.withLock { state in
            state.skippedHere.keys.reduce(into: [:]) { $0[$1] = state.skippedHere($1, at: now) }
        }
    }

    /// One gate per kind of reload a notification asks for.
    private let gates = (catalog: ReloadGate(), health: ReloadGate(), policy: ReloadGate())

    /// Reports outcomes and refreshes breakers until cancelled; reports once more on the way out.
    func run() async {
        let clock = ContinuousClock()
        var lastRefresh = clock.now
        var lastReload = clock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: reportInterval)
            if Task.isCancelled { break }
            await flushReports()
            if clock.now - lastRefresh >= refreshInterval {
                await refreshHealth()
                lastRefresh = clock.now
                let retry = state.withLock { state in
                    defer { state.reloadFailed = false }
                    return state.reloadFailed
                }
                if retry {
                    await reloadCatalog()
                    await reloadPolicy()
                }
            }
            if let reloadInterval, clock.now - lastReload >= reloadInterval {
                await reloadCatalog()
                await reloadPolicy()
                lastReload = clock.now
            }
        }
        // This task is cancelled by now, and a cancelled task's statement is cancelled: the last
        // reports (the calls of the jobs finished while the worker drained) go from a task of
        // their own.
        await Task { await self.flushReports() }.value
    }

    private func flushReports() async {
        let reports = state.withLock { state in
            defer { state.pending = [:] }
            return state.pending.values.map { report in
                var report = report
                report.worker = worker
                return report
            }
        }
        guard !reports.isEmpty else { return }
        do {
            let (breakers, changed) = try await healthStore.reportChanges(reports)
            state.withLock { state in
                state.resetRunsOfClosed(breakers)
                for (model, breaker) in breakers { state.breakers[model, default: .init()].breaker = breaker }
            }
            // Each change is logged once in the fleet, by the worker whose report made it: every
            // worker that reported failures logged each opening (a soak's flapping model, a
            // warning per worker per reopening).
            // The other end of an incident: the log said when a breaker opened, and nothing when
            // the probes closed it (an on-call walkthrough could not tell when it ended).
            let closed = breakers.filter { model, breaker in breaker == .closed && changed.contains(model) }.keys.sorted()
            // Only answered probes close one (report_health), so it was half-open.
            for model in closed { logger.notice("model breaker closed", ["model": model, "was": "half_open"]) }
            // Said with the fleet's reason (it is gone from model_health once the breaker closes):
            // "failures=1" alone, a report batch's count, read as an opening on one failure.
            let opened = breakers.filter { model, breaker in breaker == .open && changed.contains(model) }.keys.sorted()
            if !opened.isEmpty {
                let reasons = (try? await healthStore.reasons(of: opened)) ?? [:]
                for model in opened {
                    let reason = reasons[model] ?? "unknown"
                    // A failed probe keeps an incident going (the breaker alert says when it lasts).
                    if reason.hasPrefix("a probe failed while half-open") {
                        logger.info("model breaker open again", ["model": model, "reason": reason])
                    } else {
                        logger.warning("model breaker open", ["model": model, "reason": reason])
                    }
                }
            }
        } catch {
            // Dropped, not kept for the next round: a statement that failed may still have been
            // applied (the connection lost after the commit), and a report the server refuses
            // would be refused again every round. The next calls report the model's health anew.
            if Task.isCancelled { return }
            logger.warning("could not report model health", ["error": "\(error)", "models": reports.count])
        }
    }

    // MARK: Routing state

    /// The state to route one job by. A half-open model gets one probe at a time from this
    /// worker: while a probe is in flight, it reads as open.
    func routingState(sequence: UInt64, now: Date = Date()) -> RoutingState {
        state.withLock { state in
            let minute = Int64(now.timeIntervalSince1970 / 60)
            if minute != state.pricesComputedFor {
                state.offPeakPrices = PriceSchedule.offPeakPrices(state.schedules.values, at: now)
                state.pricesComputedFor = minute
            }
            var models: [String: RoutingState.ModelState] = [:]
            for model in state.router.catalog.models {
                var modelState = state.breakers[model.name] ?? RoutingState.ModelState()
                let inFlight = state.inFlight[model.name] ?? 0
                modelState.inFlight = inFlight
                modelState.averagePricePer1K = state.offPeakPrices[model.name]
                modelState.unavailableHere = state.skippedHere(model.name, at: now)
                if modelState.breaker == .halfOpen && inFlight > 0 { modelState.breaker = .open }
                if var budget = state.budgets[model.name] {
                    budget.refill(now: now)
                    modelState.requestsRemaining = budget.requestsRemaining
                    modelState.tokensRemaining = budget.tokensRemaining
                    modelState.pausedUntil = budget.pausedUntil
                    modelState.requestsReserved = budget.requestCapacity.map {
                        RoutingState.reserved(of: Int($0), share: interactiveReserve)
                    }
                    modelState.tokensReserved = budget.tokenCapacity.map {
                        RoutingState.reserved(of: Int($0), share: interactiveReserve)
                    }
                    modelState.tokensCapacity = budget.tokenCapacity.map { Int($0) }
                    state.budgets[model.name] = budget
                }
                models[model.name] = modelState
            }
            return RoutingState(models: models, sequence: sequence, interactiveReserve: interactiveReserve)
        }
    }

    // MARK: Calls

    /// Notes a call starting: in flight, and spending the model's rate budget.
    /// - Returns: the call, to hand to `end`; nil when the model may not take another call now: it
    ///   is half-open and this worker's probe is already in flight, or it is at its
    ///   `max_concurrency` (jobs planned at once all saw room, and a fallback or a retry comes to
    ///   its model after the plan: a soak saw 9 of 8 in flight). Do not call it.
    func begin(_ model: ModelSpec, estimatedTokens: Int, now: Date = Date()) -> UInt64? {
        state.withLock { state in
            let inFlight = state.inFlight[model.name, default: 0]
            if state.breakers[model.name]?.breaker == .halfOpen, inFlight > 0 { return nil }
            if let limit = model.maxConcurrency, inFlight >= limit { return nil }
            // Refused here, and its skip over: one call tries it again.
            if let until = state.skippedHere[model.name]?.until {
                guard until <= now, !state.refusalProbes.contains(model.name) else { return nil }
                state.refusalProbes.insert(model.name)
            }
            state.inFlight[model.name, default: 0] += 1
            if model.requestsPerMinute != nil || model.tokensPerMinute != nil {
                var budget = state.budgets[model.name]
                    ?? RateBudget(model: model, workers: state.liveWorkers, now: now)
                budget.update(model: model, workers: state.liveWorkers)
                budget.spend(requests: 1, tokens: estimatedTokens, now: now)
                state.budgets[model.name] = budget
            }
            return state.runs[model.name, default: FailureRun()].begin(at: now)
        }
    }

    /// Notes a call's end and its outcome for the breaker.
    /// - Parameters:
    ///   - latencyMS: the call's latency for the fleet's EWMA and P95 (`lowest_latency`): an
    ///     answer's or a timeout's; nil for a failure that says nothing about speed.
    ///   - countsAgainstModel: false for failures that are the request's fault (a 400), which
    ///     say nothing about the model's health.
    ///   - markUnhealthy: a reason to open the breaker at once (quota gone, no such model).
    ///   - refused: why the provider refused this worker (a 401 or 403): it skips the model for
    ///     `breaker_open_seconds`, and the fleet opens the breaker once every live worker has been
    ///     refused. Not counted against the model.
    ///   - hint: what to do about the refusal, for the log.
    ///
    /// The breaker opens here at once, and the report goes out now rather than in the next round,
    /// when the call marks the model unhealthy, when it was a half-open model's probe and failed
    /// (the probe is the one call let through: the next job must not be the next probe), or when
    /// it is this worker's `breaker_consecutive_failures`-th failure in a row on the model. A
    /// probe that succeeded is reported at once too, so the fleet counts it toward closing the
    /// breaker (`breaker_half_open_successes`) and the next probe can go.
    func end(
        _ model: ModelSpec, call: UInt64, success: Bool, countsAgainstModel: Bool = true, latencyMS: Double?,
        rateLimit: RateLimitInfo? = nil, markUnhealthy: String? = nil, refused: (fleet: String, here: String)? = nil,
        hint: String? = nil, now: Date = Date()
    ) {
        let (flushNow, skipUntil) = state.withLock { state -> (Bool, Date?) in
            state.inFlight[model.name, default: 1] -= 1
            state.refusalProbes.remove(model.name)
            var flushNow = markUnhealthy != nil || refused != nil
            let counted = success || countsAgainstModel
            let (before, inARow) = state.runs[model.name, default: FailureRun()]
                .end(call, success: counted ? success : nil, at: now)
            if counted {
                state.pending[model.name, default: HealthReport(model: model.name)]
                    .record(success: success, latencyMS: latencyMS)
                let breaker = state.breakers[model.name]?.breaker ?? .closed
                if success {
                    flushNow = flushNow || breaker == .halfOpen
                } else if breaker == .halfOpen {
                    state.breakers[model.name, default: .init()].breaker = .open
                    flushNow = true
                } else if breaker == .closed && before < state.consecutiveFailureLimit
                    && inARow >= state.consecutiveFailureLimit
                {
                    // The last healthy model of a rule is the fleet's to open: only while it fails
                    // most of its calls (report_health; a rule's one model failing 30% of calls
                    // had five in a row every few hundred, and the queue waited with it open)…
                    if !state.isLastHealthy(model.name) { state.breakers[model.name, default: .init()].breaker = .open }
                    flushNow = true
                } else if breaker == .closed && before < state.consecutiveFailureLimit * 4
                    && inARow >= state.consecutiveFailureLimit * 4
                {
                    // …or at four times as many in a row, which the fleet opens it for too.
                    state.breakers[model.name, default: .init()].breaker = .open
                    flushNow = true
                }
            }
            state.pending[model.name]?.failuresInARow = inARow
            if let markUnhealthy {
                state.pending[model.name, default: HealthReport(model: model.name)].markUnhealthy = markUnhealthy
                // Avoid it here at once; the fleet learns from the report.
                state.breakers[model.name, default: .init()].breaker = .open
            }
            if let rateLimit {
                var budget = state.budgets[model.name] ?? RateBudget(model: model, workers: state.liveWorkers, now: now)
                budget.apply(rateLimit, workers: state.liveWorkers, now: now)
                state.budgets[model.name] = budget
            }
            if let refused {
                state.pending[model.name, default: HealthReport(model: model.name)].refused = refused.fleet
                return (flushNow, now.addingTimeInterval(state.breakerOpenSeconds))
            }
            // Answered: a refusal that skipped the model here is over.
            if success, state.skippedHere[model.name]?.until != nil { state.skippedHere[model.name] = nil }
            return (flushNow, nil)
        }
        if let refused, let skipUntil {
            let said = refused.here.hasSuffix(".") ? String(refused.here.dropLast()) : refused.here
            skipHere(
                model, reason: "\(said); it tries the model again from \(skipUntil.readableUTC)", hint: hint,
                until: skipUntil)
        }
        if flushNow { Task { await self.flushReports() } }
    }

    /// Stops routing to a model from this worker until the catalog's entry for it changes, or
    /// `until`. For a failure that is this worker's own (the model's key missing from its
    /// environment, or refused): other workers keep the model. Logged once per model (a refusal
    /// renewed after its skip ran out is not logged again).
    /// - Parameter everywhere: every worker skips it (a key variable no catalog may name), so no
    ///   other keeps it either.
    func skipHere(_ model: ModelSpec, reason: String, hint: String?, everywhere: Bool = false, until: Date? = nil) {
        let isNew = state.withLock { state in
            state.skippedHere.updateValue((model, reason, until), forKey: model.name) == nil
        }
        guard isNew else { return }
        logger.warning(
            everywhere
                ? "model skipped: no worker calls it"
                : until == nil
                    ? "model skipped by this worker; other workers keep using it"
                    : "model skipped by this worker for a while; other workers keep using it unless it refuses them too",
            ["model": model.name, "reason": reason, "hint": hint ?? "none"])
    }
}

/// The jobs a worker passed on to the others, in the order it did: each is named for the same
/// time, so the oldest runs out first, and keeping the list costs nothing per job however long it
/// is (it is kept under the fleet state's lock, which every job's plan takes).
struct PassedOnJobs: Sendable {
    /// Each naming, oldest first, from `head` (a job named again has an entry for each).
    private var order: [(id: Int64, until: Date)] = []
    private var head = 0
    /// Until when each job is named.
    private(set) var until: [Int64: Date] = [:]

    var ids: [Int64] { Array(until.keys) }

    /// Forgets the jobs named until `now` or before.
    mutating func prune(at now: Date) {
        while head < order.count, order[head].until <= now {
            if until[order[head].id] == order[head].until { until[order[head].id] = nil }
            head += 1
        }
        if head >= 64 && head * 2 >= order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    /// Names `job` until `date`, unless `limit` jobs are named already.
    mutating func insert(_ job: Int64, until date: Date, limit: Int, now: Date) -> Bool {
        prune(at: now)
        guard until[job] != nil || until.count < limit else { return false }
        until[job] = date
        order.append((job, date))
        return true
    }
}

/// One model's calls from this worker, for its failures in a row: in the order the calls
/// started, and counting a failure only once every call that started before it has ended. With
/// many calls in flight, errors come back in milliseconds and answers in a second: counted as they
/// ended, a model failing 3% of calls showed five "in a row" in every wave of 128, and its breaker
/// opened on a model that was answering nearly every call. A model that fails every call still
/// runs up its count as fast as its calls end.
struct FailureRun: Sendable {
    /// How long a call in flight holds back the count of failures that started after it: a
    /// wave's answers come back within it; a model that is down is not kept open by one slow
    /// call of minutes.
    static let holdBack: TimeInterval = 30

    private var next: UInt64 = 0
    /// Calls in flight, with when each started.
    private var inFlight: [UInt64: Date] = [:]
    private var lastSuccess: UInt64?
    /// Failed calls that started after the last success to start (of those that succeeded).
    private var failures: [UInt64] = []

    /// A call starts; returns its number.
    mutating func begin(at instant: Date = Date()) -> UInt64 {
        defer { next += 1 }
        inFlight[next] = instant
        return next
    }

    /// Counts afresh, as if the latest call to start had succeeded (the fleet closed the breaker).
    mutating func restart() {
        failures.removeAll()
        lastSuccess = next == 0 ? nil : next - 1
    }

    /// A call ends: succeeded, failed, or (nil) neither as far as the model's health goes.
    /// - Returns: the failures in a row before and after.
    mutating func end(_ call: UInt64, success: Bool?, at instant: Date = Date()) -> (before: Int, after: Int) {
        let before = settled(at: instant)
        inFlight[call] = nil
        switch success {
        case true?:
            if lastSuccess.map({ call > $0 }) ?? true {
                lastSuccess = call
                failures.removeAll { $0 < call }
            }
        case false?:
            if lastSuccess.map({ call > $0 }) ?? true { failures.append(call) }
        case nil:
            break
        }
        return (before, settled(at: instant))
    }

    /// Failures every earlier-started call of which has ended (or has run past `holdBack`).
    private func settled(at instant: Date) -> Int {
        let cutoff = instant.addingTimeInterval(-Self.holdBack)
        guard !failures.isEmpty else { return 0 }  // the common case: nothing to count, nothing to scan
        guard let oldest = inFlight.lazy.filter({ $0.value > cutoff }).map(\.key).min() else { return failures.count }
        return failures.count { $0 < oldest }
    }
}
