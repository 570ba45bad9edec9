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
/// Held by claim, not by job: a job whose retry, postponement or release is being written can be
/// claimed again by this worker before the writer has freed the earlier claim's slot (a
/// postponed or released job even comes back with the same attempt number), and each claim keeps
/// its own slot, lease and stop reason until then.
final class InFlightJobs: Sendable {
    /// One claim of one job, told apart from the job's other claims by when this worker made it.
    struct Ticket: Hashable, Sendable {
        var id: Int64
        fileprivate var serial: UInt64

        /// Whether this claim came after `other` (of the same job).
        func isLater(than other: Ticket) -> Bool { serial > other.serial }
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
        var entries: [Ticket: Entry] = [:]
        var nextSerial: UInt64 = 0
        var backgroundCount = 0
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.entries.count } }
    /// Claims whose outcome is with the writer, not yet written.
    var handedOverCount: Int { state.withLock { $0.entries.values.count(where: \.handedOver) } }
    var backgroundCount: Int { state.withLock { $0.backgroundCount } }

    /// The claims held, with their jobs' attempts, for the heartbeat.
    var held: [(ticket: Ticket, attempt: Int)] {
        state.withLock { $0.entries.map { ($0.key, $0.value.job.attempt) } }
    }

    func add(_ job: Job) -> Ticket {
        state.withLock { state in
            state.nextSerial += 1
            let ticket = Ticket(id: job.id, serial: state.nextSerial)
            state.entries[ticket] = Entry(job: job)
            if job.priority == .background { state.backgroundCount += 1 }
            return ticket
        }
    }

    /// Attaches the claim's task. If a stop was asked for before the task existed, cancels it now.
    func attach(_ task: Task<Void, Never>, to ticket: Ticket) {
        let cancelNow = state.withLock { state -> Bool in
            state.entries[ticket]?.task = task
            return state.entries[ticket]?.stopReason != nil
        }
        if cancelNow { task.cancel() }
    }

    func remove(_ ticket: Ticket) {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { state in
            if let entry = state.entries.removeValue(forKey: ticket), entry.job.priority == .background {
                state.backgroundCount -= 1
            }
            guard state.entries.isEmpty else { return [] }
            defer { state.emptyWaiters = [] }
            return state.emptyWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Asks a claim's task to stop. The first reason given wins.
    func stop(_ ticket: Ticket, reason: StopReason) {
        let task: Task<Void, Never>? = state.withLock { state in
            guard var entry = state.entries[ticket], entry.stopReason == nil else { return nil }
            entry.stopReason = reason
            state.entries[ticket] = entry
            return entry.task
        }
        task?.cancel()
    }

    /// Asks every claim's task to stop.
    func stopAll(reason: StopReason) {
        for ticket in state.withLock({ Array($0.entries.keys) }) { stop(ticket, reason: reason) }
    }

    /// Marks the claim's outcome as handed to the writer.
    func handOver(_ ticket: Ticket) {
        state.withLock { $0.entries[ticket]?.handedOver = true }
    }

    /// True also once the claim is gone: its outcome was written.
    func isHandedOver(_ ticket: Ticket) -> Bool {
        state.withLock { $0.entries[ticket]?.handedOver ?? true }
    }

    func stopReason(of ticket: Ticket) -> StopReason? {
        state.withLock { $0.entries[ticket]?.stopReason }
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
