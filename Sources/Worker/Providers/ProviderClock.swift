import Foundation

/// The time a provider adapter sees: wall-clock "now" (for outage windows and `created` stamps)
/// and sleeping (for simulated latency).
///
/// Injected so that tests of latency distributions and outage windows run instantly and
/// deterministically; production code uses `SystemProviderClock`.
public protocol ProviderClock: Sendable {
    /// The current wall-clock time.
    func now() -> Date

    /// Suspends the calling task for `duration` (never blocks a thread).
    /// - Throws: `CancellationError` when the task is cancelled while sleeping.
    func sleep(for duration: Duration) async throws
}

/// The real clock: `Date()` and `Task.sleep`.
public struct SystemProviderClock: ProviderClock {
    /// Creates the real clock.
    public init() {}

    /// The current wall-clock time.
    public func now() -> Date { Date() }

    /// Sleeps with `Task.sleep`, so a cancelled task wakes at once.
    public func sleep(for duration: Duration) async throws {
        guard duration > .zero else { return }
        try await Task.sleep(for: duration)
    }
}
