import Foundation
import Synchronization
@testable import Worker

/// A clock for tests: `sleep` returns at once and moves `now` forward by the time asked, and
/// every sleep is recorded, so tests of simulated latency and outage windows take no real time.
final class ManualProviderClock: ProviderClock {
    private let state: Mutex<(now: Date, sleeps: [Duration])>

    /// A clock that reads `start` until something sleeps or `advance` is called.
    init(start: Date = Date(timeIntervalSince1970: 1_750_000_000)) {
        state = Mutex((start, []))
    }

    func now() -> Date { state.withLock { $0.now } }

    func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        state.withLock { state in
            state.sleeps.append(duration)
            state.now += Self.seconds(duration)
        }
    }

    /// Moves `now` forward without recording a sleep.
    func advance(by duration: Duration) {
        state.withLock { $0.now += Self.seconds(duration) }
    }

    /// Every sleep so far, in order.
    var sleeps: [Duration] { state.withLock { $0.sleeps } }

    static func seconds(_ duration: Duration) -> TimeInterval {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// A `ContinuousClock` instant for tests that moves only when told: a test of time windows reads
/// it instead of sleeping (a loaded machine's sleep of 4 s overshot by 8).
final class ManualInstant: Sendable {
    private let instant = Mutex(ContinuousClock.now)

    @Sendable func now() -> ContinuousClock.Instant { instant.withLock { $0 } }

    func advance(by duration: Duration) {
        instant.withLock { $0 += duration }
    }
}
