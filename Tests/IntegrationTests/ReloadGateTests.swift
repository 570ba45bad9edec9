import Synchronization
import Testing

@testable import Worker

/// Any session may NOTIFY a worker's channels: a flood of notifications must not become a
/// flood of reloads, and the last change must still be read.
@Suite("Reload gate: notifications folded into few reloads")
struct ReloadGateTests {
    @Test("a burst of 1,000 asks runs the reload a few times, once after the last ask")
    func burst() async throws {
        let gate = ReloadGate(spacing: .milliseconds(50))
        let runs = Mutex(0)
        let asked = Mutex(0)
        // What the last run saw: every ask made before it started.
        let seen = Mutex(0)
        for _ in 0..<1000 {
            asked.withLock { $0 += 1 }
            gate.request {
                let count = asked.withLock { $0 }
                runs.withLock { $0 += 1 }
                try? await Task.sleep(for: .milliseconds(5))
                seen.withLock { $0 = count }
            }
        }
        try await waitUntil("the last ask is read") { seen.withLock { $0 } == 1000 }
        try await Task.sleep(for: .milliseconds(200))
        #expect(runs.withLock { $0 } <= 3, "\(runs.withLock { $0 }) runs")
        #expect(seen.withLock { $0 } == 1000)

        // Idle again: the next ask runs at once (after the spacing), not folded into nothing.
        asked.withLock { $0 += 1 }
        gate.request {
            runs.withLock { $0 += 1 }
            seen.withLock { $0 = 1001 }
        }
        try await waitUntil("a lone ask runs") { seen.withLock { $0 } == 1001 }
    }
}
