import Foundation
import QueueModel
import Synchronization

/// Why a running job's task was cancelled, which decides what is written back for it.
enum StopReason: Sendable {
    /// The user cancelled the job: write a `cancelled` result.
    case cancelRequested
    /// The lease was taken away (expired and rescued): write nothing, it is not ours any more.
    case leaseLost
    /// The worker is shutting down: release the job to the queue without spending the attempt.
    case shutdown
}

/// The jobs this worker is running, with their tasks, for heartbeats, cancellation and shutdown.
///
/// Held by attempt, not by job: a job whose retry (or postponement) is being written can be
/// claimed again by this worker before the writer has freed the earlier attempt's slot, and each
/// attempt keeps its own slot, lease and stop reason until then.
final class InFlightJobs: Sendable {
    struct Key: Hashable, Sendable {
        var id: Int64
        var attempt: Int

        init(id: Int64, attempt: Int) {
            self.id = id
            self.attempt = attempt
        }

        init(_ job: Job) {
            self.init(id: job.id, attempt: job.attempt)
        }
    }

    struct Entry: Sendable {
        var job: Job
        var task: Task<Void, Never>?
        var stopReason: StopReason?
        /// Its outcome is with the writer: a heartbeat that no longer finds the job has met the
        /// write-back, not a lost lease.
        var handedOver = false
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var backgroundCount = 0
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.entries.count } }
    var backgroundCount: Int { state.withLock { $0.backgroundCount } }

    /// The jobs held, with their attempts, for the heartbeat.
    var held: [(id: Int64, attempt: Int)] {
        state.withLock { $0.entries.values.map { ($0.job.id, $0.job.attempt) } }
    }

    func add(_ job: Job) {
        state.withLock { state in
            state.entries[Key(job)] = Entry(job: job)
            if job.priority == .background { state.backgroundCount += 1 }
        }
    }

    /// Attaches the job's task. If a stop was asked for before the task existed, cancels it now.
    func attach(_ task: Task<Void, Never>, to job: Job) {
        let key = Key(job)
        let cancelNow = state.withLock { state -> Bool in
            state.entries[key]?.task = task
            return state.entries[key]?.stopReason != nil
        }
        if cancelNow { task.cancel() }
    }

    func remove(_ job: Job) {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { state in
            if let entry = state.entries.removeValue(forKey: Key(job)), entry.job.priority == .background {
                state.backgroundCount -= 1
            }
            guard state.entries.isEmpty else { return [] }
            defer { state.emptyWaiters = [] }
            return state.emptyWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Asks a job's task to stop. The first reason given wins.
    func stop(_ key: Key, reason: StopReason) {
        let task: Task<Void, Never>? = state.withLock { state in
            guard var entry = state.entries[key], entry.stopReason == nil else { return nil }
            entry.stopReason = reason
            state.entries[key] = entry
            return entry.task
        }
        task?.cancel()
    }

    /// Asks every job's task to stop.
    func stopAll(reason: StopReason) {
        for key in state.withLock({ Array($0.entries.keys) }) { stop(key, reason: reason) }
    }

    /// Marks the job's outcome as handed to the writer.
    func handOver(_ job: Job) {
        state.withLock { $0.entries[Key(job)]?.handedOver = true }
    }

    /// True also once the attempt is gone: its outcome was written.
    func isHandedOver(_ key: Key) -> Bool {
        state.withLock { $0.entries[key]?.handedOver ?? true }
    }

    func stopReason(of job: Job) -> StopReason? {
        state.withLock { $0.entries[Key(job)]?.stopReason }
    }

    /// Returns when no job is running (at once if none is).
    func waitUntilEmpty() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.entries.isEmpty { return true }
                state.emptyWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
