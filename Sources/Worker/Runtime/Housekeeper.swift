import Foundation
import Postgres
import QueueModel
import Synchronization

/// Queue housekeeping — rescuing expired leases, analyzing job partitions whose statistics went
/// stale, expiring overdue jobs, creating results partitions, evaluating alerts — run by one
/// worker at a time, elected for a tenure it renews every round (`switchyard.keep_house`): no
/// extra daemon to deploy. When the elected worker dies, hangs or is frozen, its tenure runs out
/// and another takes over at its next round; one that stops ends its tenure at once.
final class Housekeeper: Sendable {
    private let store: QueueStore
    private let worker: String
    /// This worker process's registration, whose own jobs the rescue leaves alone.
    private let instance: String?
    private let interval: Duration
    /// How long a tenure lasts without renewal: the worker's lease, the time after which a worker
    /// that stopped renewing loses its jobs too.
    private let tenure: Duration
    private let logger: Logger
    private let metrics: WorkerMetrics
    private let alerts: AlertStore
    /// This worker's heartbeats: after a run of failures, no rescue for a while.
    private let heartbeats: HeartbeatRecord
    /// Whether rescues are held back now (said once, when they start to be).
    private let holdingRescues = Mutex(false)
    /// When this housekeeper (this worker process) started.
    private let started = ContinuousClock.now
    /// Whether every other worker's heartbeat had lapsed at this process's first round: decided
    /// once (nil until then), it holds rescues back for the process's first tenure.
    private let startedIntoSilence = Mutex<Bool?>(nil)

    /// - Parameter instance: this worker process's registration (`WorkerIdentity.instance`): the
    ///   rescue leaves what it claimed to it. Nil: a housekeeper of no worker process (tests).
    init(
        store: QueueStore, worker: String, instance: String? = nil, interval: Duration, tenure: Duration,
        logger: Logger, metrics: WorkerMetrics = WorkerMetrics(), heartbeats: HeartbeatRecord = HeartbeatRecord()
    ) {
        self.heartbeats = heartbeats
        self.store = store
        self.worker = worker
        self.instance = instance
        self.interval = interval
        self.tenure = tenure
        self.logger = logger
        self.metrics = metrics
        self.alerts = AlertStore(pool: store.pool)
    }

    /// Logs the breakers the raised model alerts opened, as a worker's report that opens one is
    /// (`model breaker open`): the breaker's later closing was logged with no opening before it.
    /// An alert opens one unless it was open already or the model is a rule's last healthy one;
    /// the breaker's reason then is the alert's message.
    private func logBreakersOpened(by events: [AlertEvent]) async {
        let raised = events.filter { $0.event == .raised && $0.isModelAlert }
        guard !raised.isEmpty,
            let reasons = try? await HealthStore(pool: store.pool).reasons(of: raised.map(\.subject))
        else { return }
        for event in raised {
            guard let reason = reasons[event.subject], reason == String("alert: \(event.message)".prefix(300))
            else { continue }
            logger.warning("model breaker open", ["model": event.subject, "reason": reason])
        }
    }

    /// How often alerts are evaluated: they look back over minutes, and each evaluation reads
    /// every result of its window, so every few seconds would cost more than it tells.
    static let alertInterval = Duration.seconds(15)

    /// The wait before the next alert evaluation, given how long the last one took: 15 s, or ten
    /// times the evaluation when that is longer. The call-level rules read every call of their
    /// five-minute windows (about 0.4 s per 100,000 results here, more on a busy server), so at a
    /// few thousand jobs per second a fixed 15 s would keep a database core busy evaluating;
    /// this way alerts never take more than a tenth of one, and come later instead.
    static func alertInterval(after evaluation: Duration) -> Duration {
        max(alertInterval, evaluation * 10)
    }

    /// What to say when the alert interval changes: at each doubling, and on the way back once
    /// slowness was said (a review's evaluations grew to 11 s, two minutes apart, with a notice at
    /// the first step only; a chaos run's one 2 s evaluation said "quick again" alone).
    static func intervalNotice(from previous: Duration, to next: Duration, slowSaid: Bool = true) -> String? {
        if next >= previous * 2 { return "alert evaluation is slow; evaluating less often" }
        if next == alertInterval && previous > alertInterval && slowSaid { return "alert evaluation is quick again" }
        return nil
    }

    func run() async {
        var isLeader = false
        var lastPartitionCheck: ContinuousClock.Instant?
        var lastAlertCheck: ContinuousClock.Instant?
        var alertInterval = Self.alertInterval
        var slowSaid = false
        let clock = ContinuousClock()
        while !Task.isCancelled {
            do {
                let held = try await metrics.measure("housekeeper_tenure") {
                    try await store.keepHouse(worker: worker, tenure: tenure)
                }
                // Only a tenure held is a write the database took: another's tenure in force is
                // answered by a read, which a read-only database gives too (a review's takeover
                // rescued 28 live jobs after its reads had counted as the database back).
                if held { heartbeats.databaseAnswered(within: tenure) }
                if held && !isLeader { logger.info("elected housekeeper", ["tenure_s": tenure.seconds]) }
                if !held && isLeader {
                    logger.warning("another worker keeps house now (this one did not renew its tenure in time); standing down")
                }
                isLeader = held
                if isLeader {
                    // Partitions are made days ahead; checking hourly is plenty.
                    let partitionsDue = lastPartitionCheck.map { clock.now - $0 > .seconds(3600) } ?? true
                    let alertsDue = lastAlertCheck.map { clock.now - $0 >= alertInterval } ?? true
                    if let evaluation = try await keepHouse(partitions: partitionsDue, alerts: alertsDue) {
                        let next = Self.alertInterval(after: evaluation)
                        if let notice = Self.intervalNotice(from: alertInterval, to: next, slowSaid: slowSaid) {
                            logger.notice(notice, ["took_s": evaluation.loggedSeconds, "interval_s": next.loggedSeconds])
                            slowSaid = next > Self.alertInterval
                        }
                        alertInterval = next
                    }
                    if partitionsDue { lastPartitionCheck = clock.now }
                    if alertsDue { lastAlertCheck = clock.now }
                }
            } catch {
                // Cancelled as the worker stops, mid-statement: nothing failed.
                if Task.isCancelled { return }
                logger.error("housekeeping failed", ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Notes the evaluation's outcome where `dispatcher status` reads it: a log line every 15 s
    /// was the only sign that alerts had stopped (status said "none open"). Best effort: a note
    /// that fails (the database down) is left for the next evaluation.
    private func noteEvaluation(error: String?) async {
        _ = try? await metrics.measure("alert_note") { try await alerts.noteEvaluation(worker: worker, error: error) }
    }

    /// Ends this worker's tenure, if it holds it, so another takes over at its next round (the
    /// worker stopping).
    func standDown() async {
        _ = try? await metrics.measure("stand_down") { try await store.standDown(worker: worker) }
    }

    /// One round; returns how long the alert evaluation took (or failed after), when there was one.
    private func keepHouse(partitions: Bool, alerts evaluateAlerts: Bool) async throws -> Duration? {
        // The database was out for this worker, so perhaps for every worker: their leases may
        // have lapsed with them alive. Rescued now, their answers would be thrown away.
        let outage = heartbeats.outageRecently(within: tenure)
        // A worker started as the database came back has seen no failure of its own: a review's,
        // restarted through the outage, was elected first and rescued 32 of 32 live jobs (and two
        // started together, each counting the other as alive, did the same). If half or more of
        // the workers that ran before it had let their heartbeats lapse when it started, the
        // fleet went silent together: it holds back for its first tenure, in which live ones renew
        // (a fleet that really died waits that long for its rescue).
        var silence = false
        if !outage, ContinuousClock.now - started < tenure {
            if let decided = startedIntoSilence.withLock({ $0 }) {
                silence = decided
            } else {
                silence = try await store.fleetWentSilent(except: worker, newcomer: tenure)
                startedIntoSilence.withLock { $0 = silence }
            }
        }
        let hold = outage || silence
        let changed = holdingRescues.withLock { holding in
            defer { holding = hold }
            return holding != hold
        }
        if changed {
            logger.notice(
                !hold ? "rescuing expired leases again"
                    : outage ? "holding rescues back: this worker's heartbeats failed or came late, so others' may have too"
                    : "holding rescues back: this worker has just started, and most of the fleet's heartbeats had "
                        + "lapsed (the database may just be back, or they crashed)",
                hold ? ["for_s": tenure.seconds] : [:])
        }
        // Not this process's own jobs: it is alive, and its heartbeat renews them (sql/0060).
        let rescues = hold ? [] : try await metrics.measure("rescue") {
            try await store.rescueExpired(worker: instance.map { (worker, $0) })
        }
        for rescue in rescues {
            metrics.rescues.increment([rescue.outcome])
            // The lost attempt's model is not recorded while it runs: the trail's last model is
            // an earlier attempt's, and was logged as if it were this one's.
            let message = "rescued a job whose lease expired"
            let (job, attempt, owner) = (rescue.job, rescue.attempt ?? 0, rescue.owner ?? "unknown")
            if let earlier = rescue.model {
                logger.warning(message, [
                    "job": job, "model": "unknown", "attempt": attempt, "outcome": rescue.outcome,
                    "lease_owner": owner, "earlier_attempt_model": earlier,
                ])
            } else {
                logger.warning(message, [
                    "job": job, "model": "unknown", "attempt": attempt, "outcome": rescue.outcome, "lease_owner": owner,
                ])
            }
        }
        // Only an optimisation: a failure here (a statement timeout on a large ANALYZE) must not
        // hold up the rest of the round.
        do {
            for partition in try await metrics.measure("analyze", { try await store.analyzeStalePartitions() }) {
                logger.info("analyzed a job partition whose statistics were stale", ["partition": partition])
            }
        } catch {
            if Task.isCancelled { throw error }
            logger.warning("could not analyze the job partitions", ["error": "\(error)"])
        }
        let expired = try await metrics.measure("expire") { try await store.expireOverdue() }
        metrics.expired.increment(by: Double(expired))
        if expired > 0 { logger.info("expired jobs not started by their deadline", ["count": expired]) }
        // Tenants' limits (sql/0088): the write-backs' spending added up, a tenant that spent its
        // budget held, one resumed or in a new period released. A failure (a lock it gave up on)
        // is the next round's to mend: partitions and alerts go on.
        do {
            for change in try await metrics.measure("tenant_limits", { try await TenantLimits.enforce(store.pool) }) {
                switch change.change {
                case "held":
                    logger.warning("tenant held", ["tenant": change.tenant, "jobs": change.jobs, "reason": change.reason ?? ""])
                case "released": logger.notice("tenant released", ["tenant": change.tenant, "jobs": change.jobs])
                default: logger.info("held more of a held tenant's jobs", ["tenant": change.tenant, "jobs": change.jobs])
                }
            }
        } catch {
            if Task.isCancelled { throw error }
            logger.warning("could not bring tenants in line with their limits", ["error": "\(error)"])
        }
        if partitions {
            let created = try await metrics.measure("partitions") { try await store.ensureResultPartitions() }
            if created > 0 { logger.info("created results partitions", ["count": created]) }
        }
        guard evaluateAlerts else { return nil }
        // The round so far may have taken a while (a big ANALYZE, a slow server): the evaluation,
        // the longest step, runs only while the tenure is still this worker's, renewed for it.
        guard try await metrics.measure("housekeeper_tenure", { try await store.keepHouse(worker: worker, tenure: tenure) })
        else { return nil }
        let started = ContinuousClock.now
        let events: [AlertEvent]
        do {
            events = try await metrics.measure("alerts") { try await alerts.evaluate() }
        } catch {
            // Counted as an evaluation all the same: one that fails slowly (a statement timeout)
            // must not be retried every round.
            if Task.isCancelled { throw error }
            logger.error("could not evaluate alerts", ["error": "\(error)"])
            await noteEvaluation(error: "\(error)")
            return ContinuousClock.now - started
        }
        let evaluation = ContinuousClock.now - started
        await noteEvaluation(error: nil)
        for event in events {
            metrics.alertEvents.increment([event.kind, event.event.rawValue])
            // Numbers stay numbers in JSON lines; a value there is none of is left out.
            var logger = self.logger.with("alert", event.alertID).with("kind", event.kind)
                .with("subject", event.subject)
            if let value = event.value { logger = logger.with("value", value) }
            logger = logger.with("threshold", event.threshold)
            if event.isModelAlert { logger = logger.with("model", event.subject) }
            if event.event == .raised {
                logger.warning("alert raised: \(event.message)")
            } else {
                logger.notice("alert cleared: \(event.message)")
            }
        }
        await logBreakersOpened(by: events)
        return evaluation
    }
}
