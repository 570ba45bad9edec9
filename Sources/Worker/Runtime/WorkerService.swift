import Foundation
import Postgres
import QueueModel
import Synchronization

/// A worker process's service: claims jobs, runs them, renews their leases, writes outcomes back,
/// and (when elected) keeps house. `run()` returns after `shutdown()` once everything is written.
final class WorkerService: Sendable {
    let configuration: WorkerConfiguration
    let store: QueueStore
    let logger: Logger
    private let executor: any JobExecutor
    /// The catalog, breakers and budgets the executor routes by (nil when it does not route).
    private let fleet: FleetState?
    private let inFlight = InFlightJobs()
    private let wake = WakeSignal()
    private let writer: CompletionWriter
    private let housekeeper: Housekeeper
    /// This worker's runs of failed heartbeats, for the housekeeper (`HeartbeatRecord`).
    private let heartbeats: HeartbeatRecord
    /// A heartbeat failed: the claim loop looks for jobs leased to this process that it does not
    /// run, once the database answers. After a failover that lost the last seconds of the old
    /// primary, jobs whose write-back was lost were leased to their worker again, which no longer
    /// ran them (and its own housekeeper does not rescue them): a walkthrough's 31 stayed leased
    /// until the process stopped.
    private let leasesToLookAt = Mutex(false)
    private let now: @Sendable () -> Date
    private let random: @Sendable () -> Double
    /// Ends connection retries when the grace period is over; cancelled once the worker stops.
    private let graceTimer = Mutex<Task<Void, Never>?>(nil)
    /// When shutdown began (nil: running); the grace period counts from then.
    private let stopping = Mutex<ContinuousClock.Instant?>(nil)
    /// Connecting, checking the schema, registering and loading the catalog: a stop asked for
    /// meanwhile cancels it (with the database out of reach, it would wait out the connect
    /// timeout, and then fail).
    private let startup = Mutex<Task<Void, any Error>?>(nil)
    /// The series served on `/metrics` (when the worker serves them).
    let metrics: WorkerMetrics
    /// Runs before each LISTEN (tests: a change committed between the first load and LISTEN).
    private let beforeListening: (@Sendable () async -> Void)?

    init(
        configuration: WorkerConfiguration, pool: PostgresPool, executor: any JobExecutor, fleet: FleetState? = nil,
        logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        metrics: WorkerMetrics = WorkerMetrics(), beforeListening: (@Sendable () async -> Void)? = nil
    ) {
        self.configuration = configuration
        self.store = QueueStore(pool: pool)
        self.executor = executor
        self.fleet = fleet
        self.logger = logger
        self.now = now
        self.random = random
        self.metrics = metrics
        self.beforeListening = beforeListening
        self.heartbeats = HeartbeatRecord(lease: configuration.lease, interval: configuration.heartbeatInterval)
        metrics.concurrency.set(Double(configuration.concurrency))
        self.writer = CompletionWriter(
            store: store, worker: configuration.identity.id, batchLimit: configuration.completionBatchLimit,
            logger: logger, leaseLost: { metrics.leasesLost.increment() },
            wrote: { failed in metrics.roundTrip("complete", failed: failed) }
        )
        self.housekeeper = Housekeeper(
            store: store, worker: configuration.identity.id, instance: configuration.identity.instance,
            interval: configuration.housekeepingInterval, tenure: configuration.lease, logger: logger, metrics: metrics,
            heartbeats: heartbeats
        )
    }

    private var isStopping: Bool { stopping.withLock { $0 != nil } }

    /// Jobs claimed and not yet written back.
    var inFlightCount: Int { inFlight.count }

    /// Starts a graceful shutdown: no more claims; running jobs get the grace period to finish.
    func shutdown() {
        let first = stopping.withLock { stopping in
            defer { stopping = stopping ?? .now }
            return stopping == nil
        }
        guard first else { return }
        logger.notice("shutting down: no new claims", ["in_flight": inFlight.count])
        startup.withLock { $0 }?.cancel()
        wake.signal(.stopping)
        // Once the grace is over, what is left to say (a claim on its way, the last write-backs,
        // standing down, deregistering) is tried once each, not for 15 s each against a database
        // that is down: a review's worker took 86 s to stop, its supervisor allowing 40.
        let grace = configuration.shutdownGrace
        let pool = store.pool
        graceTimer.withLock {
            $0 = Task {
                try? await Task.sleep(for: grace)
                if !Task.isCancelled { pool.stopRetryingConnects() }
            }
        }
    }

    func run() async throws {
        logger.info("starting: connecting to the database", ["database": store.pool.configuration.description])
        let keyVariables = KeyVariables()
        if !keyVariables.malformed.isEmpty {
            logger.warning(
                "\(KeyVariables.environmentVariable) lists what is no variable's name: models naming the variables "
                    + "meant are skipped here; separate the names with commas (OPENAI_API_KEY,ANTHROPIC_API_KEY)",
                ["entries": keyVariables.malformed.joined(separator: " | ")])
        }
        let registered = Mutex(false)
        let starting = Task {
            try await Migrator().requireCurrent(store.pool)
            try await refuseTwin()
            _ = try await metrics.measure("heartbeat") {
                try await store.heartbeat(worker: configuration.identity, held: [], lease: configuration.lease)
            }
            registered.withLock { $0 = true }
            await fleet?.reload()
        }
        startup.withLock { $0 = starting }
        if isStopping { starting.cancel() }
        do {
            try await withTaskCancellationHandler { try await starting.value } onCancel: { starting.cancel() }
            startup.withLock { $0 = nil }
        } catch {
            guard isStopping else { throw error }
            if registered.withLock({ $0 }) { await deregister() }
            graceTimer.withLock { $0 }?.cancel()
            logger.notice("worker stopped before it started")
            return
        }
        let server = await serverDescription()
        logger.notice(
            "worker started",
            [
                "concurrency": configuration.concurrency, "reserved_interactive": configuration.reservedInteractiveSlots,
                "lease_s": configuration.lease.seconds, "poll_only": configuration.pollOnly, "server": server,
            ]
        )
        let writing = Task { await self.writer.run(afterEachBatch: { self.wakeIfWorthClaiming() }) }
        await withTaskGroup(of: Void.self) { background in
            background.addTask { await self.heartbeatLoop() }
            background.addTask { await self.housekeeper.run() }
            if let fleet {
                background.addTask { await fleet.run() }
            }
            if !configuration.pollOnly {
                background.addTask { await self.listenLoop() }
            }
            await claimLoop()
            await drain()
            // Every job's outcome is written by now (a slot is freed only after its write); let the
            // writer end before the heartbeat stops (never cancel it: cancelling a statement could
            // lose a batch).
            writer.finish()
            await writing.value
            background.cancelAll()
        }
        await deregister()
        graceTimer.withLock { $0 }?.cancel()
        logger.notice("worker stopped")
    }

    private func deregister() async {
        await housekeeper.standDown()
        _ = try? await metrics.measure("deregister") { try await store.deregister(configuration.identity) }
    }

    /// Refuses to start under the id of a worker that is running: the id is the lease fence, so
    /// two processes under one id would take each other's jobs for their own (and end each
    /// other's). Running means: on another host, a heartbeat younger than a lease; on this host,
    /// a process with that pid (a container restarted as the same pid, or a worker that died,
    /// is no twin).
    private func refuseTwin() async throws {
        let identity = configuration.identity
        guard let other = try await store.liveRegistration(id: identity.id, lease: configuration.lease) else { return }
        if other.hostname == identity.hostname {
            guard let pid = other.pid, pid != identity.pid, kill(pid, 0) == 0 || errno == EPERM else { return }
        }
        throw QueueError(
            .invalidInput,
            "another worker is running as --id \(identity.id) (host \(other.hostname ?? "?"), pid "
                + "\(other.pid.map(String.init) ?? "?"), last heartbeat \(Int(other.age.rounded())) s ago); "
                + "nothing was started",
            hint: "give each worker its own --id (two under one id would take and end each other's jobs); if that "
                + "one is gone, start again once its heartbeat is older than its lease (\(Int(other.lease.rounded())) s)")
    }

    // MARK: Claiming

    private func claimLoop() async {
        // Start as if notified: there may be a backlog from before this worker started.
        var queueMayHaveWork = true
        var reasons: WakeReasons = .notified
        var cursor = ClaimCursor()
        let clock = ContinuousClock()
        var cursorSince = clock.now
        var claimed = 0
        // A claim that failed may have committed before its answer was lost.
        var claimMayHaveLeased = false
        while !isStopping {
            // With --max-jobs, no claim past the limit: the last claim asks for what is left. Its
            // jobs finish however long they take (a 3-minute call cut at the shutdown grace would
            // be paid for twice): the worker stops once they are written, and only a signal
            // applies the grace.
            let left = configuration.maxJobs.map { $0 - claimed } ?? Int.max
            if left <= 0 && inFlight.count == 0 {
                shutdown()
                break
            }
            let free = min(configuration.concurrency - inFlight.count, left)
            let eager = reasons.contains(.notified) || reasons.contains(.timer) || reasons.contains(.capFreed)
            if free > 0 && (eager || (queueMayHaveWork && free >= configuration.claimThreshold)) {
                let backgroundSlots = max(
                    0, configuration.concurrency - configuration.reservedInteractiveSlots - inFlight.backgroundCount
                )
                // Every poll interval, from the head again: finds jobs that came back behind the cursor.
                if clock.now - cursorSince >= configuration.pollInterval {
                    cursor.reset()
                    cursorSince = clock.now
                }
                // Looked for apart from the claim: a failure here must not stop the worker claiming.
                if claimMayHaveLeased || leasesToLookAt.withLock({ $0 }),
                    let unheld = try? await store.unheldLeases(
                        worker: configuration.identity, holding: inFlight.held.map(\.ticket.id))
                {
                    // As many as there are free slots; the rest at the next look.
                    let adopted = unheld.prefix(free)
                    claimMayHaveLeased = adopted.count < unheld.count
                    leasesToLookAt.withLock { $0 = false }
                    if !adopted.isEmpty {
                        logger.notice(
                            "jobs leased to this worker that it was not running (a claim's answer or a write-back lost "
                                + "with the connection): running them", ["jobs": adopted.count, "left": unheld.count - adopted.count])
                        for job in adopted {
                            metrics.jobsClaimed.increment([job.priority.rawValue])
                            start(job)
                        }
                        claimed += adopted.count
                        // They took slots: count again before claiming more.
                        continue
                    }
                }
                do {
                    // Read before the claim is sent: a job passed on, and written back, in between
                    // may be claimed again once (a review saw 1 in 2,338).
                    let passedOn = fleet?.passedOn() ?? []
                    let jobs = try await metrics.measure("claim") { [cursor] in
                        try await store.claim(
                            worker: configuration.identity.id, freeSlots: free, backgroundSlots: backgroundSlots,
                            lease: configuration.lease, after: cursor, passedOn: passedOn
                        )
                    }
                    // Without the fleet's state (--simulated-latency) the settings and rules are not
                    // read: no job with a deadline moves the cursor (a review's worker stalled 10 s
                    // behind a backlog with background_escalation_seconds at an hour).
                    cursor.advance(past: jobs, deadlineHorizon: fleet?.escalationHorizon ?? ClaimCursor.anyHorizon)
                    for job in jobs {
                        metrics.jobsClaimed.increment([job.priority.rawValue])
                        start(job)
                    }
                    claimed += jobs.count
                    if let maxJobs = configuration.maxJobs, claimed >= maxJobs {
                        logger.notice(
                            "claimed --max-jobs jobs; finishing them, then stopping, to be started afresh",
                            ["max_jobs": maxJobs, "in_flight": inFlight.count])
                    }
                    queueMayHaveWork = Self.mayHaveMore(jobs, free: free, backgroundSlots: backgroundSlots)
                } catch {
                    claimMayHaveLeased = true
                    logger.error("claim failed; retrying", ["error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
            reasons = await wake.wait(timeout: configuration.pollInterval)
        }
    }

    /// Whether a claim suggests more jobs are waiting: it got all the interactive jobs it asked
    /// for, or all the background jobs it was allowed (or was allowed none, so could not tell).
    /// When neither, the queue is empty for now, and only a notification or the poll timer
    /// triggers the next claim (a freed slot alone does not).
    static func mayHaveMore(_ jobs: [Job], free: Int, backgroundSlots: Int) -> Bool {
        let interactive = jobs.count { $0.priority == .interactive }
        let backgroundAllowed = min(backgroundSlots, free - interactive)
        let background = jobs.count - interactive
        return interactive == free || backgroundAllowed <= 0 || background == backgroundAllowed
    }

    /// The failure of a job whose stored request the worker cannot read: no model could be
    /// given it, and a retry would read it the same way.
    static func unreadable(_ job: Job) -> JobOutcome? {
        job.unreadableRequest.map { reason in
            .failed(
                JobFailure(
                    code: "unreadable_request",
                    message: "the worker cannot read this job's request: \(reason) (jsonb keeps such a request, "
                        + "but a worker reads numbers as 64-bit floats and nesting to 512 levels); submit it again "
                        + "without that",
                    retryable: false))
        }
    }

    private func start(_ job: Job) {
        let ticket = inFlight.add(job)
        metrics.inFlight.add(1, [job.priority.rawValue])
        let task = Task {
            let started = ContinuousClock.now
            let outcome: JobOutcome
            if let unreadable = Self.unreadable(job) { outcome = unreadable } else { outcome = await executor.execute(job) }
            let elapsed = ContinuousClock.now - started
            let model = Self.model(of: outcome)
            let stopReason = inFlight.stopReason(of: ticket)
            guard let completion = completion(of: job, outcome, stopReason, model: model, elapsed: elapsed) else {
                release(job, ticket)
                return
            }
            // The job's latency, as its result's latency_ms: a retry or a postponement is no
            // outcome of the job (a model outage's postponements, a few ms each, read as fast jobs).
            if completion.kind == .result {
                metrics.jobLatency.observe(elapsed.seconds, [job.priority.rawValue])
            }
            // Written in the writer's next batch; the slot stays taken until then.
            inFlight.handOver(ticket)
            // The writer wakes the claim loop after the whole batch (`wakeIfWorthClaiming`).
            writer.submit(completion) { [self] written in
                // What was written: a refused outcome is counted as the failure that replaced it.
                record(written ?? completion, of: job, model: model, written: written != nil)
                release(job, ticket, wakeClaims: false)
                // Its tenant may start another now (the writer's wake after the batch is for enough free slots).
                if job.tenantCapped { wake.signal(.capFreed) }
            }
        }
        inFlight.attach(task, to: ticket)
    }

    /// Frees a claim's slot once its outcome is written (or abandoned).
    private func release(_ job: Job, _ ticket: InFlightJobs.Ticket, wakeClaims: Bool = true) {
        metrics.inFlight.add(-1, [job.priority.rawValue])
        inFlight.remove(ticket)
        if wakeClaims { wakeIfWorthClaiming() }
    }

    /// A freed slot alone leads to a claim only once enough are free (the claim threshold):
    /// waking the claim loop for each one before that costs a task switch per job for nothing,
    /// and waking it in the middle of a write-back batch's slots claims half of them.
    private func wakeIfWorthClaiming() {
        if configuration.concurrency - inFlight.count >= configuration.claimThreshold {
            wake.signal(.slotFreed)
        }
    }

    /// What the queue should record for an outcome; nil when nothing may be written (the lease
    /// was taken over).
    /// - Parameters:
    ///   - stopReason: why the claim's task was stopped, if it was.
    ///   - elapsed: from the claim to the outcome, on this worker's clock (the database's
    ///     `claimed_at` is on another host's, which may be set differently).
    private func completion(
        of job: Job, _ outcome: JobOutcome, _ stopReason: StopReason?, model: String, elapsed: Duration
    ) -> Completion? {
        let worker = configuration.identity.id
        let completion: Completion
        switch (stopReason, outcome) {
        case (.leaseLost, _):
            logger.warning(
                "abandoned job: its lease was taken over", ["job": job.id, "model": model, "attempt": job.attempt])
            return nil
        case (nil, .succeeded(let answer)), (.shutdown, .succeeded(let answer)):
            // An answer that came in as the worker stops is written, not thrown away and paid for again.
            completion = Completion(
                jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded", taskClass: answer.taskClass,
                model: answer.model, provider: answer.provider, tier: answer.tier, response: answer.response,
                trail: answer.trail, tokensIn: answer.tokensIn, tokensOut: answer.tokensOut, cost: answer.cost,
                baseCost: answer.baseCost, primaryCost: answer.primaryCost, latencyMS: elapsed.seconds * 1000,
                metadata: answer.metadata
            )
        case (.shutdown, _):
            completion = Completion(jobID: job.id, attempt: job.attempt, kind: .release)
        case (.cancelRequested, _), (_, .cancelled):
            var trail: [AttemptRecord] = []
            if case .cancelled(let calls) = outcome { trail = calls }
            if case .postponed(_, _, _, _, _, let calls) = outcome { trail = calls }
            trail.append(AttemptRecord(attempt: job.attempt, outcome: "cancelled", worker: worker, at: now()))
            completion = .cancelledWhileRunning(jobID: job.id, attempt: job.attempt, trail: trail)
        case (nil, .postponed(let until, let reason, let policy, let forModel, let passedOn, let trail)):
            // A job passed on is due at once by the database's clock (retry_at NULL): by this
            // worker's, one a second behind it stood behind the other workers' claim cursors.
            // The reason is kept on the job (jobs.waiting_reason) for its user to read.
            completion = Completion(
                jobID: job.id, attempt: job.attempt, kind: forModel ? .wait : .postpone,
                error: ["code": forModel ? "waiting_for_model" : "postponed", "message": .string(reason)], trail: trail,
                retryAt: passedOn ? nil : until, policy: policy)
            if passedOn {
                // Due at once, for the others: "waits … until" now read as if it waited.
                logger.info(
                    "job passed on to the other workers: they call models of its rule this one cannot",
                    ["job": job.id, "attempt": job.attempt, "reason": reason])
            } else {
                logger.info(
                    "job waits to run later",
                    ["job": job.id, "model": model, "attempt": job.attempt, "until": until, "reason": reason])
            }
        case (nil, .failed(let failure)):
            var error: JSONValue = ["code": .string(failure.code), "message": .string(failure.message)]
            var retry: (delay: Duration, at: Date)?
            if failure.retryable && job.attempt < job.maxAttempts {
                let delay = configuration.retryPolicy.delay(afterAttempt: job.attempt, random: random())
                retry = (delay, now().addingTimeInterval(delay.seconds))
            }
            // A retry that could only start after the deadline is not made: the job ends here, with
            // what its attempts did, rather than be requeued to expire as "not started".
            if let at = retry?.at, let deadline = job.deadline, at >= deadline {
                error = [
                    "code": "deadline_passed",
                    "message": .string(
                        "its deadline (\(deadline.postgresText)) comes before its next attempt could start (at \(at.postgresText)); "
                            + "the last one failed: \(failure.message)"),
                ]
                retry = nil
            }
            if let (delay, retryAt) = retry {
                completion = Completion(
                    jobID: job.id, attempt: job.attempt, kind: .retry, error: error, trail: trail(of: failure, job),
                    retryAt: retryAt
                )
                logger.info(
                    "attempt failed; retrying later",
                    [
                        "job": job.id, "model": model, "attempt": job.attempt, "retry_in_s": delay.loggedSeconds,
                        "error": failure.code,
                    ]
                )
            } else {
                completion = Completion(
                    jobID: job.id, attempt: job.attempt, kind: .result, status: "failed", taskClass: failure.taskClass,
                    error: error, trail: trail(of: failure, job), metadata: failure.metadata
                )
            }
        }
        return completion
    }

    /// The failure's own trail, or one entry for the attempt when the executor gave none.
    private func trail(of failure: JobFailure, _ job: Job) -> [AttemptRecord] {
        guard failure.trail.isEmpty else { return failure.trail }
        return [
            AttemptRecord(
                attempt: job.attempt, outcome: "error", error: failure.message, worker: configuration.identity.id,
                at: now()
            )
        ]
    }

    /// Waits for running jobs (and the writes of their outcomes) up to the grace period, then
    /// stops the jobs still running; they are released to the queue without spending an attempt.
    /// Past the grace period, an outcome the database cannot be reached for is given up at the
    /// next failed attempt (see `CompletionWriter.stopRetrying`): the job stays leased and is
    /// rescued when its lease expires.
    private func drain() async {
        let grace = configuration.shutdownGrace
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.inFlight.waitUntilEmpty()
                return true
            }
            // From the signal, not from here: a claim waiting on a database that is down held
            // the loop for 15 s first, and the worker outlasted its supervisor's patience.
            let deadline = (stopping.withLock { $0 } ?? .now) + grace
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            if await group.next() == false {
                // Jobs that finished but whose outcome is not written yet (the database down or
                // slow) are no "unfinished jobs": said apart. Either kind stays leased, and is
                // rescued, if the database cannot be reached before the writer gives up.
                let unwritten = inFlight.handedOverCount
                let running = inFlight.count - unwritten
                var parts: [String] = []
                if running > 0 { parts.append("stopping the jobs still running (released to the queue)") }
                if unwritten > 0 { parts.append("giving up the outcomes not yet written if the database cannot take them") }
                if parts.isEmpty { parts.append("the last jobs finished just now") }
                logger.warning(
                    "grace period over; " + parts.joined(separator: "; ")
                        + "; jobs the database cannot be told of are rescued when their leases expire",
                    ["running": running, "outcomes_unwritten": unwritten])
                // Stopping them, and not waiting on a database that is down for their outcomes,
                // is what lets the other child (waiting for empty) finish.
                inFlight.stopAll(reason: .shutdown)
                writer.stopRetrying()
            }
            group.cancelAll()
        }
    }

    // MARK: Leases

    private func heartbeatLoop() async {
        var retrySoon = false
        // What this process last noted of the models it skips, and when (nil: nothing yet, so the
        // first heartbeat's notes it, even none, over what an earlier process under this id left).
        var notedSkips: (skipped: [String: String], at: ContinuousClock.Instant)?
        var noteFailed = false
        while !isStopping || inFlight.count > 0 {
            // After a failure, one heartbeat goes a second later: a heartbeat stuck on a dead
            // connection fails after the TCP user timeout (10 s), and a full interval more let the
            // leases it meant to renew run out while the worker was back on a new connection.
            let retrying = retrySoon
            let interval = configuration.heartbeatInterval
            try? await Task.sleep(for: retrying ? min(interval, .seconds(1)) : interval)
            if Task.isCancelled { return }
            retrySoon = false
            let held = inFlight.held
            let sent = ContinuousClock.now
            do {
                let answer = try await metrics.measure("heartbeat") {
                    try await store.heartbeat(
                        worker: configuration.identity, held: held.map { ($0.ticket.id, $0.attempt) },
                        lease: configuration.lease, takeOver: false
                    )
                }
                let outage = heartbeats.succeeded()
                metrics.leaseRenewals.increment(by: Double(answer.count))
                // The answer names the jobs still leased to this worker. A job held twice (claimed
                // again before the earlier claim's slot was freed) is leased by its later claim.
                // Each claim is judged as it was sent: one made since is not in `held`.
                var latest: [Int64: InFlightJobs.Ticket] = [:]
                for (ticket, _) in held where latest[ticket.id].map(ticket.isLater) ?? true {
                    latest[ticket.id] = ticket
                }
                for (ticket, _) in held {
                    guard let cancelRequested = answer[ticket.id], latest[ticket.id] == ticket else {
                        // Written back while the heartbeat was on its way: not lost. (The
                        // write-back's own fence says whether the lease really was.)
                        if inFlight.isHandedOver(ticket) { continue }
                        // The database lost what this worker knew (a failover that lost the old
                        // primary's last seconds): its write-backs may be lost too, their jobs
                        // leased to it again (a walkthrough's one worker kept 32 for 5 minutes).
                        leasesToLookAt.withLock { $0 = true }
                        metrics.leasesLost.increment()
                        inFlight.stop(ticket, reason: .leaseLost)
                        continue
                    }
                    if cancelRequested { inFlight.stop(ticket, reason: .cancelRequested) }
                }
                // For status: a model only this worker skips (its key missing here) is said nowhere
                // else, and its jobs may wait for a worker that has the key. Noted when the set
                // changes, and once a minute (a row deleted and made again by a heartbeat has none).
                if let skipped = fleet?.skippedModels,
                    notedSkips.map({ $0.skipped != skipped || ContinuousClock.now - $0.at >= .seconds(60) }) ?? true
                {
                    do {
                        if try await store.noteSkippedModels(worker: configuration.identity, skipped) {
                            notedSkips = (skipped, ContinuousClock.now)
                        }
                        noteFailed = false
                    } catch {
                        if !noteFailed {
                            logger.warning(
                                "could not note the models this worker skips, for status; trying again at each heartbeat",
                                ["error": "\(error)"])
                        }
                        noteFailed = true
                    }
                }
                if let outage {
                    let inFlight = held.count
                    let lease = configuration.lease
                    let level = Self.heartbeatBackLevel(after: outage, lease: lease)
                    logServer {
                        self.logger.log(
                            level, "heartbeats go through again",
                            ["since_last_s": outage.seconds, "lease_s": lease.seconds, "in_flight": inFlight, "server": $0])
                    }
                }
            } catch let error as PostgresError where error.sqlState == QueueStore.idTakenOver {
                // Started under this id while this one was frozen or cut off: two processes under
                // one id take each other's jobs for their own. This one gives the id up.
                if !isStopping {
                    logger.error(
                        "another process has taken this worker's id; stopping",
                        ["error": error.message, "in_flight": held.count])
                    shutdown()
                }
            } catch {
                if Task.isCancelled { return }  // the worker is stopping, with nothing left to hold
                // The quick retry's failure is not counted: failures in a row are the housekeeper's
                // sign of an outage (`HeartbeatRecord`), and a second's retry made a 2 s blip two.
                // The time it failed at still counts, for a run that lasts.
                heartbeats.failed(counted: !retrying, sent: sent)
                leasesToLookAt.withLock { $0 = true }
                retrySoon = !retrying
                logger.error("heartbeat failed; leases not renewed", ["error": "\(error)", "in_flight": held.count])
            }
        }
    }

    /// How loud `heartbeats go through again` is: a warning when leases may have lapsed meanwhile
    /// (two-thirds of one unrenewed). A walkthrough's heartbeat waited out a 20 s restart in its
    /// connection attempt, failed none, and nothing above notice said 28.7 s of a 30 s lease went by.
    static func heartbeatBackLevel(after outage: Duration, lease: Duration) -> Logger.Level {
        outage >= lease * 2 / 3 ? .warning : .notice
    }

    /// The server the pool reaches now (`ServerIdentity`), for the log: after a failover, a worker
    /// on another timeline or system than the rest is writing to another database.
    private func serverDescription() async -> String {
        do {
            return try await ServerIdentity.read(store.pool).description
        } catch {
            return "unknown (\(error))"
        }
    }

    /// Logs with the server's description, looked up off the caller's path: in the heartbeat
    /// loop a lookup waiting out a connection attempt (15 s) would hold back the next heartbeat.
    private func logServer(_ log: @escaping @Sendable (String) -> Void) {
        Task { log(await self.serverDescription()) }
    }

    // MARK: Wake-ups

    private func listenLoop() async {
        var delay = Duration.milliseconds(200)
        let channels = ["switchyard_jobs"] + (fleet == nil ? [] : FleetState.channels)
        while !isStopping && !Task.isCancelled {
            do {
                // Wake-ups all (no payload is read): what arrives together is one per channel, so
                // a session flooding NOTIFY costs a few events per read, not one per notification.
                await beforeListening?()
                let notifications = try await store.pool.listen(on: channels, coalescing: true)
                delay = .milliseconds(200)
                // Jobs submitted, and catalog, breaker and settings changes committed, before
                // LISTEN took effect announced themselves to nobody.
                wake.signal(.notified)
                fleet?.catchUp()
                for await event in notifications {
                    switch event {
                    case .notification(let notification) where notification.channel == "switchyard_jobs":
                        wake.signal(.notified)
                    case .notification(let notification):
                        fleet?.handle(notification)
                    case .reconnected:
                        // A failover between two heartbeats fails none of them: the lost connection
                        // is the sign that write-backs may have been lost with the old primary.
                        leasesToLookAt.withLock { $0 = true }
                        logServer { self.logger.notice("the LISTEN connection is back", ["server": $0]) }
                        // Whatever was announced while disconnected is lost: catch up on all of it.
                        wake.signal(.notified)
                        fleet?.catchUp()
                    case .disconnected(let reason):
                        logger.warning("lost the LISTEN connection; polling until it is back", ["reason": reason])
                    }
                    if isStopping { break }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("could not LISTEN; polling instead", ["error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }
}
