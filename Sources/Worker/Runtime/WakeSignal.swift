import Foundation
import Synchronization

/// Why the claim loop woke up.
struct WakeReasons: OptionSet, Sendable {
    let rawValue: Int
    /// A NOTIFY said new jobs arrived (or the listener reconnected and may have missed some).
    static let notified = WakeReasons(rawValue: 1)
    /// A job finished and freed a slot.
    static let slotFreed = WakeReasons(rawValue: 2)
    /// The slow poll timer ran out.
    static let timer = WakeReasons(rawValue: 4)
    /// Shutdown began.
    static let stopping = WakeReasons(rawValue: 8)
    /// A job of a capped tenant (`sql/0096`) was written back: its tenant may start another
    /// now, which a claim that came back short (as one at the cap does) would not try until the
    /// poll timer.
    static let capFreed = WakeReasons(rawValue: 16)
}

/// A coalescing wake-up: any number of signals while the loop is busy become one wake, carrying
/// every reason.
final class WakeSignal: Sendable {
    private struct State {
        var pending: WakeReasons = []
        var waiter: CheckedContinuation<WakeReasons, Never>?
    }

    private let state = Mutex(State())

    func signal(_ reason: WakeReasons) {
        let waiter: CheckedContinuation<WakeReasons, Never>? = state.withLock { state in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending.insert(reason)
            return nil
        }
        waiter?.resume(returning: reason)
    }

    /// Waits for a signal, or until `timeout` passes (reason `.timer`).
    func wait(timeout: Duration) async -> WakeReasons {
        let ready: WakeReasons? = state.withLock { state in
            guard !state.pending.isEmpty else { return nil }
            defer { state.pending = [] }
            return state.pending
        }
        if let ready { return ready }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { self?.signal(.timer) }
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            let immediate: WakeReasons? = state.withLock { state in
                if !state.pending.isEmpty {
                    defer { state.pending = [] }
                    return state.pending
                }
                state.waiter = continuation
                return nil
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }
}
