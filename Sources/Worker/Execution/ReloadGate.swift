import Synchronization

/// Runs a reload when asked, at most once per `spacing`: asks that arrive while one runs or
/// waits are folded into one more run after it.
///
/// Workers reload on NOTIFY, and Postgres lets any session notify any channel: a submitter
/// looping `pg_notify('switchyard_catalog', …)` made each worker reload once per notification,
/// in the loop that also wakes it for new jobs. Behind a gate, a flood costs a worker a few
/// reloads a second, and the listener goes straight back to listening.
final class ReloadGate: Sendable {
    private struct State {
        var running = false
        var again = false
        var lastStart: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    private let spacing: Duration

    init(spacing: Duration = .milliseconds(250)) {
        self.spacing = spacing
    }

    /// Starts `reload` in a task of its own now (or when `spacing` since the last start has
    /// passed), unless one is running or waiting: then that one runs once more when it ends.
    func request(_ reload: @escaping @Sendable () async -> Void) {
        let start = state.withLock { state in
            if state.running {
                state.again = true
                return false
            }
            state.running = true
            return true
        }
        guard start else { return }
        Task {
            while true {
                let wait = state.withLock { state in
                    state.lastStart.map { spacing - (ContinuousClock.now - $0) } ?? .zero
                }
                if wait > .zero { try? await Task.sleep(for: wait) }
                state.withLock { state in
                    state.lastStart = ContinuousClock.now
                    state.again = false
                }
                await reload()
                let more = state.withLock { state in
                    if !state.again { state.running = false }
                    return state.again
                }
                if !more { return }
            }
        }
    }
}
