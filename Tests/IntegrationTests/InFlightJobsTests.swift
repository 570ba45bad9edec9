import Foundation
import QueueModel
import Testing

@testable import Worker

/// The worker's table of running jobs, held by attempt: a job can be claimed again (its retry)
/// before the writer has freed the slot of the attempt before.
@Suite("In-flight jobs: one entry per attempt")
struct InFlightJobsTests {
    static func job(_ id: Int64, attempt: Int, _ priority: Priority = .background) -> Job {
        Job(id: id, priority: priority, request: [:], attempt: attempt)
    }

    @Test("freeing an attempt's slot leaves the next attempt of the same job held, counted and stoppable")
    func attemptsOfOneJob() {
        let inFlight = InFlightJobs()
        let written = Self.job(7, attempt: 2)
        let again = Self.job(7, attempt: 3)
        inFlight.add(written)
        inFlight.handOver(written)
        inFlight.add(again)  // claimed again before the writer told the worker attempt 2 was written
        #expect(inFlight.count == 2)
        #expect(inFlight.backgroundCount == 2)

        inFlight.remove(written)
        #expect(inFlight.count == 1)
        #expect(inFlight.backgroundCount == 1)
        #expect(inFlight.held.map(\.attempt) == [3])
        #expect(!inFlight.isHandedOver(InFlightJobs.Key(again)))
        #expect(inFlight.isHandedOver(InFlightJobs.Key(written)))  // gone: its outcome was written

        // A stop meant for the written attempt does not reach the running one.
        inFlight.stop(InFlightJobs.Key(written), reason: .leaseLost)
        #expect(inFlight.stopReason(of: again) == nil)
        inFlight.stop(InFlightJobs.Key(again), reason: .cancelRequested)
        #expect(inFlight.stopReason(of: again) == .cancelRequested)
        inFlight.remove(again)
        #expect(inFlight.count == 0)
        #expect(inFlight.backgroundCount == 0)
    }
}
