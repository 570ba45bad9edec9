import Foundation
import Postgres
import QueueModel
import Synchronization

/// Writes outcomes back in batches (group commit): while one batch is being written, the next
/// one collects, so a busy worker writes hundreds of results per round trip and an idle one
/// writes each result at once.
final class CompletionWriter: Sendable {
    private struct Pending {
        var completion: Completion
        /// Told what was written for the job, on the writer's task, right after its batch.
        var done: @Sendable (Completion?) -> Void
        /// How many times the database, up, failed this outcome alone and it was set aside.
        var setAside = 0
    }

    private struct State {
        var pending: [Pending] = []
        /// Outcomes the database keeps failing while it is up, each retried alone, with a growing
        /// pause, whenever nothing else is pending.
        var stuck: [Pending] = []
        var flusher: CheckedContinuation<Void, Never>?
        var finishing = false
        /// Set once the shutdown's grace period is over (see `stopRetrying`).
        var givingUp = false
        /// The pause between tries under way, and whether `finish()` ends it (a set-aside outcome's;
        /// a batch's pause between retries ends at `stopRetrying()`). A pause grows to 5 s, and the
        /// exit must not wait it out.
        var pause: (task: Task<Void, Never>, endsAtFinish: Bool)?
    }

    private let state = Mutex(State())
    /// Failed attempts at a batch, with the database up, before it is written in halves (or, for
    /// one outcome, set aside).
    static let attemptsBeforeSplitting = 3
    private let store: QueueStore
    private let worker: String
    private let batchLimit: Int
    private let logger: Logger
    private let sleep: @Sendable (Duration) async throws -> Void
    /// Told of each outcome the fence refused: its job's lease had been taken over.
    private let leaseLost: @Sendable () -> Void
    /// Told of each write-back statement, and whether it failed (the metrics' `complete`).
    private let wrote: @Sendable (_ failed: Bool) -> Void

    /// - Parameters:
    ///   - sleep: how a pause between tries is waited out (tests make it endless, to show that
    ///     stopping cuts it short).
    ///   - leaseLost: told of each outcome refused because its job's lease was taken over.
    ///   - wrote: told of each write-back statement, and whether it failed.
    init(
        store: QueueStore, worker: String, batchLimit: Int, logger: Logger,
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        leaseLost: @escaping @Sendable () -> Void = {}, wrote: @escaping @Sendable (_ failed: Bool) -> Void = { _ in }
    ) {
        self.leaseLost = leaseLost
        self.wrote = wrote
        self.store = store
        self.worker = worker
        self.batchLimit = max(1, batchLimit)
        self.logger = logger
        self.sleep = sleep
    }

    /// Queues an outcome; `done` is called with what was written for the job: the outcome, the
    /// failure that replaced it when the database refused it (see `isolate`), the cancelled
    /// result the queue wrote instead of a retry, postponement or release (the user cancelled the
    /// job while the attempt ran), or nil when nothing was: the job's lease was lost (as the
    /// fence demands) or the writer stopped before it could write. It runs on the writer's task,
    /// so it must be quick: the worker counts the outcome and frees the job's slot there (a task
    /// resumed per job cost more than the write).
    func submit(_ completion: Completion, done: @escaping @Sendable (Completion?) -> Void) {
        let flusher: CheckedContinuation<Void, Never>? = state.withLock { state in
            state.pending.append(Pending(completion: completion, done: done))
            defer { state.flusher = nil }
            return state.flusher
        }
        flusher?.resume()
    }

    /// Queues an outcome and waits until it is written; true when it (or the failure that
    /// replaced it) was written (see `submit`).
    func write(_ completion: Completion) async -> Bool {
        await withCheckedContinuation { continuation in
            submit(completion) { continuation.resume(returning: $0 != nil) }
        }
    }

    /// From now on, gives up a batch the database cannot be reached for at its next failed
    /// attempt (an attempt waits at most the pool's connect timeout), and one that fails
    /// otherwise (a deadlock, a lock timeout, a failover under way) after five attempts, as when
    /// finishing; its jobs are told nil. So the worker stops soon after its grace period even
    /// while the database is down; those jobs keep their rows and leases, and are rescued when
    /// the leases expire.
    func stopRetrying() {
        let pause = state.withLock { state in
            state.givingUp = true
            return state.pause?.task
        }
        pause?.cancel()
    }

    /// Asks `run()` to write what is pending and return.
    func finish() {
        let (flusher, pause) = state.withLock { state in
            state.finishing = true
            defer { state.flusher = nil }
            return (state.flusher, state.pause?.endsAtFinish == true ? state.pause?.task : nil)
        }
        flusher?.resume()
        pause?.cancel()
    }

    /// Waits `duration` before the next try, or less: `stopRetrying()` ends the pause, and so does
    /// `finish()` when `endsAtFinish`.
    private func pause(for duration: Duration, endsAtFinish: Bool) async {
        let sleep = self.sleep
        let pause = Task { _ = try? await sleep(duration) }
        let over = state.withLock { state in
            state.pause = (pause, endsAtFinish)
            return state.givingUp || (endsAtFinish && state.finishing)
        }
        // Already over before it began. (A stop that comes later cancels it in `state.pause`.)
        if over { pause.cancel() }
        await withTaskCancellationHandler { await pause.value } onCancel: { pause.cancel() }
        state.withLock { $0.pause = nil }
    }

    /// Writes batches until `finish()` is called and nothing is pending.
    /// - Parameter afterEachBatch: called once a batch's outcomes have all been told (the worker
    ///   wakes its claim loop there: the whole batch's slots are free by then).
    func run(afterEachBatch: @Sendable () -> Void = {}) async {
        while true {
            guard let batch = await nextBatch() else { return }
            if batch.count == 1, batch[0].setAside > 0 {
                // A pause that grows each time it is set aside (100 ms doubling to 5 s): it is
                // retried only while nothing else waits, and must not keep the database busy.
                // (None as the worker stops: then it gets its five tries at once.)
                let pause = min(.milliseconds(100) * (1 << min(batch[0].setAside - 1, 6)), Duration.seconds(5))
                await self.pause(for: pause, endsAtFinish: true)
            }
            await flush(batch, afterFailure: batch.count == 1 && batch[0].setAside > 0)
            afterEachBatch()
        }
    }

    private func nextBatch() async -> [Pending]? {
        while true {
            enum Step {
                case batch([Pending])
                case done
                case wait
            }
            let step: Step = state.withLock { state in
                if !state.pending.isEmpty {
                    let count = min(batchLimit, state.pending.count)
                    let batch = Array(state.pending.prefix(count))
                    state.pending.removeFirst(count)
                    return .batch(batch)
                }
                if !state.stuck.isEmpty { return .batch([state.stuck.removeFirst()]) }
                return state.finishing ? .done : .wait
            }
            switch step {
            case .batch(let batch): return batch
            case .done: return nil
            case .wait:
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = state.withLock { state -> Bool in
                        if !state.pending.isEmpty || !state.stuck.isEmpty || state.finishing { return true }
                        state.flusher = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
        }
    }

    /// How soon a job put back must fall due to be announced then (`announceWhenDue`): an idle
    /// worker looks at its poll interval (a second by default) without one.
    static let announcedWithin: TimeInterval = 1

    /// Jobs put back to run again within `announcedWithin` (a provider's pause ending) are
    /// announced on `switchyard_jobs` when the last of them falls due: the write-back's own
    /// notification comes before, and no worker looks again before its next poll (a review's
    /// put-back jobs waited about 0.75 s for an idle worker's poll). One due already as it was
    /// written (due by `sent`, before the write-back went: a time taken after it left a job due
    /// in between unannounced) was announced by the write-back.
    /// (Every write-back passes here: a loop over the batch, nothing built unless one is due soon.)
    private func announceWhenDue(_ batch: [Pending], written: [Int64: String], sent: Date) {
        var due: Date?
        for item in batch where item.completion.kind == .wait || item.completion.kind == .postpone {
            guard let at = item.completion.retryAt, at > sent, at.timeIntervalSince(sent) <= Self.announcedWithin,
                written[item.completion.jobID] != nil
            else { continue }
            due = max(due ?? at, at)
        }
        guard let due else { return }
        let store = store
        Task {
            try? await Task.sleep(for: .seconds(max(due.timeIntervalSinceNow, 0)))
            _ = try? await store.pool.query("SELECT pg_notify('switchyard_jobs', '')")
        }
    }

    /// Writes one batch, retrying while the database is unreachable. Giving up is safe: an
    /// unwritten job keeps its row in switchyard.jobs and is rescued when its lease expires.
    /// An error a retry cannot cure (the database refuses a value in the batch) is narrowed down
    /// to the outcome that causes it, which is written as failed instead: retrying the batch
    /// forever would hold every later outcome, and their leases, behind it. Anything else (the
    /// database down, restarting, out of connections, read-only after a failover) is retried;
    /// with the database up, a batch that fails three times is retried in halves, and a single
    /// outcome is set aside (see `State.stuck`).
    /// - Parameter afterFailure: a try of these outcomes failed before (the halves of a batch, an
    ///   outcome set aside): one of them may have committed.
    private func flush(_ batch: [Pending], afterFailure: Bool = false) async {
        var delay = Duration.milliseconds(100)
        var attempts = 0
        // One set aside before is set aside again at its first failure: its pause is in run().
        let triesBeforeSettingAside = batch.count == 1 && batch[0].setAside > 0 ? 1 : Self.attemptsBeforeSplitting
        while true {
            do {
                let written: [Int64: String]
                let sent = Date()
                do {
                    written = try await store.complete(worker: worker, batch.map(\.completion))
                    wrote(false)
                } catch {
                    // Counted: an outage's failed write-backs were in no metric (only in the log).
                    if !Task.isCancelled { wrote(true) }
                    throw error
                }
                // After a failed try, a job this try did not find may be one the failed try wrote
                // (it committed, and the connection went before the answer came).
                // (Looked at only then: every batch of a busy worker comes through here.)
                let retried = afterFailure || attempts > 0
                var writtenBefore: Set<Int64> = []
                if retried {
                    let missing = batch.filter { written[$0.completion.jobID] == nil }.map(\.completion)
                    if !missing.isEmpty {
                        writtenBefore = (try? await store.resultsWritten(worker: worker, missing)) ?? []
                    }
                }
                for item in batch {
                    switch written[item.completion.jobID] {
                    case nil where writtenBefore.contains(item.completion.jobID):
                        item.done(item.completion)
                    case nil where retried && item.completion.kind != .result:
                        // A requeue leaves no result to look for: the failed try may have made it.
                        logger.warning(
                            "not written again: the try before may have written it, or the job's lease was lost",
                            ["job": item.completion.jobID, "attempt": item.completion.attempt,
                             "kind": item.completion.kind.rawValue]
                        )
                        item.done(nil)
                    case nil:
                        logger.warning(
                            "result not written: this worker no longer holds the job's lease",
                            ["job": item.completion.jobID, "attempt": item.completion.attempt]
                        )
                        leaseLost()
                        item.done(nil)
                    case "cancelled" where item.completion.kind != .result:
                        item.done(item.completion.cancelledWhileRunning)
                    default:
                        item.done(item.completion)
                    }
                }
                announceWhenDue(batch, written: written, sent: sent)
                return
            } catch let error as PostgresError where error.isRefusedValue {
                await isolate(batch, error)
                return
            } catch {
                if Task.isCancelled {
                    // run() cancelled without finish(): nothing can be written from this task.
                    for item in batch { item.done(nil) }
                    return
                }
                attempts += 1
                let unreachable = (error as? PostgresError)?.isUnreachable ?? false
                let giveUp = state.withLock { state in
                    (state.givingUp && unreachable) || ((state.finishing || state.givingUp) && attempts >= 5)
                }
                if giveUp {
                    logger.error(
                        "could not write results; giving up as the worker stops (the jobs are rescued when their "
                            + "leases expire)", ["jobs": batch.count, "error": "\(error)", "attempt": attempts]
                    )
                    for item in batch { item.done(nil) }
                    return
                }
                // The database is up and keeps failing this batch (a statement timeout on a batch
                // too big for it; a lock timeout on one job's row). Retried whole, forever, it
                // would hold every later outcome (and their slots and leases) behind it: halves
                // get through, or narrow the failure down to one job, which is then set aside and
                // retried alone whenever nothing else is pending. Not once the worker is stopping:
                // then the five tries above decide.
                let stopping = state.withLock { $0.finishing || $0.givingUp }
                // A server that takes no writes now (read only, a disk full) refuses every half
                // alike: the batch waits whole, as for one that cannot be reached.
                let unavailable = (error as? PostgresError)?.isServerUnavailable ?? false
                if !unavailable && !stopping && attempts >= triesBeforeSettingAside {
                    if batch.count > 1 {
                        logger.warning(
                            "could not write results; writing the batch in halves",
                            ["jobs": batch.count, "error": "\(error)", "attempt": attempts]
                        )
                        await flush(Array(batch[..<(batch.count / 2)]), afterFailure: true)
                        await flush(Array(batch[(batch.count / 2)...]), afterFailure: true)
                    } else {
                        var item = batch[0]
                        item.setAside += 1
                        if item.setAside == 1 {
                            logger.warning(
                                "could not write a result; writing the others first",
                                ["job": item.completion.jobID, "error": "\(error)", "attempt": attempts]
                            )
                        }
                        state.withLock { $0.stuck.append(item) }
                    }
                    return
                }
                logger.error(
                    "could not write results; retrying", ["jobs": batch.count, "error": "\(error)", "attempt": attempts]
                )
                await pause(for: delay, endsAtFinish: false)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    /// Writes the halves of a batch the database refused apart, down to the one outcome it
    /// refuses, and records that job as failed with the reason: with the attempt's trail, tokens
    /// and cost (the calls were made and are billed); if that is refused too, without the costs
    /// (a price times a count past `numeric`'s column); then without anything of the attempt.
    private func isolate(_ batch: [Pending], _ error: PostgresError) async {
        if batch.count > 1 {
            await flush(Array(batch[..<(batch.count / 2)]))
            await flush(Array(batch[(batch.count / 2)...]))
            return
        }
        let item = batch[0]
        let refused = item.completion
        logger.error(
            "the database refused this job's outcome; recording the job as failed",
            ["job": refused.jobID, "model": refused.model ?? "none", "attempt": refused.attempt, "error": "\(error)"]
        )
        let replacement = refused.kind == .result && refused.status == "failed"
            && refused.error?["code"] == "outcome_not_storable"
        let costed = refused.cost != nil || refused.baseCost != nil || refused.primaryCost != nil
        let bare = replacement && refused.trail.isEmpty && !costed && refused.tokensIn == nil
        if bare {
            item.done(nil)  // even the bare record was refused: leave it to the rescue
            return
        }
        if replacement && costed {
            var uncosted = refused
            uncosted.cost = nil
            uncosted.baseCost = nil
            uncosted.primaryCost = nil
            await flush([Pending(completion: uncosted, done: item.done)])
            return
        }
        var failed = Completion(
            jobID: refused.jobID, attempt: refused.attempt, kind: .result, status: "failed", model: refused.model,
            provider: refused.provider, tier: refused.tier,
            error: replacement
                ? refused.error
                : [
                    "code": "outcome_not_storable",
                    "message": .string("the database refused this job's outcome (\(error.message)); it was not retried"),
                ]
        )
        if !replacement {
            failed.taskClass = refused.taskClass
            failed.trail = refused.trail
            failed.tokensIn = refused.tokensIn
            failed.tokensOut = refused.tokensOut
            failed.cost = refused.cost
            failed.baseCost = refused.baseCost
            failed.primaryCost = refused.primaryCost
            failed.latencyMS = refused.latencyMS
        }
        await flush([Pending(completion: failed, done: item.done)])
    }
}
