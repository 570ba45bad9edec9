import Foundation
import QueueModel
import Testing

@testable import Worker

/// The worker's table of running jobs, held by claim: a job can be claimed again (its retry, or a
/// postponed or released job with its attempt unspent) before the writer has freed the slot of
/// the claim before.
@Suite("In-flight jobs: one entry per claim")
struct InFlightJobsTests {
    @Test("freeing a claim's slot leaves the job's next claim held, counted and stoppable", arguments: [3, 2])
    func claimsOfOneJob(nextAttempt: Int) {
        let inFlight = InFlightJobs()
        let written = inFlight.add(Job(id: 7, priority: .background, request: [:], attempt: 2))
        inFlight.handOver(written)
        // Claimed again before the writer told the worker the first claim's outcome was written:
        // its retry (attempt 3), or the same attempt when the first was postponed or released.
        let again = inFlight.add(Job(id: 7, priority: .background, request: [:], attempt: nextAttempt))
        #expect(written != again)
        #expect(again.isLater(than: written))
        #expect(inFlight.count == 2)
        #expect(inFlight.backgroundCount == 2)

        inFlight.remove(written)
        #expect(inFlight.count == 1)
        #expect(inFlight.backgroundCount == 1)
        #expect(inFlight.held.map(\.ticket) == [again])
        #expect(inFlight.held.map(\.attempt) == [nextAttempt])
        #expect(!inFlight.isHandedOver(again))
        #expect(inFlight.isHandedOver(written))  // gone: its outcome was written

        // A stop meant for the first claim does not reach the running one.
        inFlight.stop(written, reason: .leaseLost)
        #expect(inFlight.stopReason(of: again) == nil)
        inFlight.stop(again, reason: .cancelRequested)
        #expect(inFlight.stopReason(of: again) == .cancelRequested)
        inFlight.remove(again)
        #expect(inFlight.count == 0)
        #expect(inFlight.backgroundCount == 0)
    }
}
