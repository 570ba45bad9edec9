import Foundation
import QueueModel
import Synchronization

@testable import Worker

/// An executor whose jobs wait until the test lets them go (or their task is cancelled), and
/// that records the order in which jobs started.
final class GatedExecutor: JobExecutor, Sendable {
    private struct State {
        var started: [Job] = []
        var released: Set<Int64> = []
        var releaseAll = false
        var waiters: [Int64: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())
    /// What `release` names: the job's id, unless the test gates by something else (its attempt).
    private let gate: @Sendable (Job) -> Int64
    /// What a released job answers.
    private let outcome: @Sendable (Job) -> JobOutcome

    init(
        gate: @escaping @Sendable (Job) -> Int64 = { $0.id },
        outcome: @escaping @Sendable (Job) -> JobOutcome = { _ in
            .succeeded(JobAnswer(model: "gated", provider: "test", tier: "primary", response: ["ok": true]))
        }
    ) {
        self.gate = gate
        self.outcome = outcome
    }

    var started: [Job] { state.withLock { $0.started } }

    func release(_ id: Int64) {
        let waiter = state.withLock { state in
            state.released.insert(id)
            return state.waiters.removeValue(forKey: id)
        }
        waiter?.resume()
    }

    func releaseAll() {
        let waiters = state.withLock { state in
            state.releaseAll = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Waits (polling lightly) until `count` jobs have started.
    func waitForStarts(_ count: Int) async throws {
        try await waitUntil("\(count) jobs have started", every: .milliseconds(5)) { started.count >= count }
    }

    func execute(_ job: Job) async -> JobOutcome {
        state.withLock { $0.started.append(job) }
        let key = gate(job)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let go = state.withLock { state -> Bool in
                    if state.releaseAll || state.released.contains(key) || Task.isCancelled { return true }
                    state.waiters[key] = continuation
                    return false
                }
                if go { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: key) }
            waiter?.resume()
        }
        if Task.isCancelled { return .cancelled(trail: []) }
        return outcome(job)
    }
}

/// An executor whose every attempt fails with a retryable error.
struct FailingExecutor: JobExecutor {
    func execute(_ job: Job) async -> JobOutcome {
        .failed(JobFailure(code: "all_candidates_failed", message: "every model answered 503", retryable: true))
    }
}

/// An executor whose calls take `duration` and answer even when cancelled: a provider's answer
/// that arrives as the worker stops.
struct LateAnswerExecutor: JobExecutor {
    let duration: Duration

    func execute(_ job: Job) async -> JobOutcome {
        // Not cancellable: an unstructured task's sleep, awaited.
        await Task.detached { [duration] in try? await Task.sleep(for: duration) }.value
        return .succeeded(JobAnswer(model: "late", provider: "test", tier: "primary", response: ["ok": true]))
    }
}
