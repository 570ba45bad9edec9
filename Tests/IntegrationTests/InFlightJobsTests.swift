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

/// How long a job is put back to wait for a model before it fails.
@Suite("Waiting for a model: from when the job began to wait")
struct WaitForAModelTests {
    static let planner = OffPeakPlanner(router: Router(catalog: .empty), policy: BackgroundPolicy(), schedules: [:])

    static func waits(_ job: Job, at now: Date) -> Bool {
        RoutingExecutor.waitForAModel(job, at: now, reason: "breaker open", planner: planner) != nil
    }

    @Test("an interactive job waits 60 s from when it became due, through its puttings back; a background job 1 h from its first")
    func limits() {
        let now = Date()
        // Submitted two minutes ago for now: not waiting before its time.
        let scheduled = Job(id: 1, priority: .interactive, request: [:], runAt: now.addingTimeInterval(-1),
                            createdAt: now.addingTimeInterval(-120))
        #expect(Self.waits(scheduled, at: now))
        // Put back 70 s ago and since: its wait is over.
        var putBack = scheduled
        putBack.runAt = now
        putBack.waitingSince = now.addingTimeInterval(-70)
        #expect(!Self.waits(putBack, at: now))
        putBack.waitingSince = now.addingTimeInterval(-50)
        #expect(Self.waits(putBack, at: now))
        // Waited in the queue 70 s before it was claimed: a person has waited that long.
        let queued = Job(id: 2, priority: .interactive, request: [:], runAt: now.addingTimeInterval(-70),
                         createdAt: now.addingTimeInterval(-70))
        #expect(!Self.waits(queued, at: now))
        // Background: from its first putting back, not its age (held hours at the gate, it was
        // not waiting for a model).
        let old = Job(id: 3, priority: .background, request: [:], runAt: now.addingTimeInterval(-3 * 3600),
                      claimedAt: now, createdAt: now.addingTimeInterval(-3 * 3600))
        #expect(Self.waits(old, at: now))
        var waiting = Job(id: 4, priority: .background, request: [:], runAt: now.addingTimeInterval(-1),
                          claimedAt: now, createdAt: now.addingTimeInterval(-3 * 3600),
                          waitingSince: now.addingTimeInterval(-3000))
        #expect(Self.waits(waiting, at: now))
        waiting.waitingSince = now.addingTimeInterval(-3700)
        #expect(!Self.waits(waiting, at: now))
        // Due for five minutes before this claim (behind a backlog): the same wait, over.
        waiting.runAt = now.addingTimeInterval(-300)
        #expect(!Self.waits(waiting, at: now))
        // Due for two hours (the gate closed between windows): waiting afresh.
        waiting.runAt = now.addingTimeInterval(-2 * 3600)
        #expect(Self.waits(waiting, at: now))
    }

    @Test("a job waiting out a provider's pause looks again when the pause ends, not five seconds later")
    func recheckAtPauseEnd() {
        let now = Date()
        let job = Job(id: 1, priority: .interactive, request: [:], runAt: now, createdAt: now)
        func until(_ pauseEnd: Date?) -> Date? {
            guard case .postponed(let until, _, _, true, false, _)? = RoutingExecutor.waitForAModel(
                job, at: now, reason: "paused", planner: Self.planner, until: pauseEnd)
            else { return nil }
            return until
        }
        #expect(until(now.addingTimeInterval(1)) == now.addingTimeInterval(1))
        #expect(until(now.addingTimeInterval(60)) == now.addingTimeInterval(5))
        #expect(until(nil) == now.addingTimeInterval(5))
        #expect(until(now.addingTimeInterval(0.01)) == now.addingTimeInterval(0.25))
        // Waited past its limit: an outage fails the attempt, a pause ending before the next look
        // is waited out.
        let old = Job(id: 2, priority: .interactive, request: [:], runAt: now.addingTimeInterval(-90),
                      createdAt: now.addingTimeInterval(-90))
        #expect(RoutingExecutor.waitForAModel(old, at: now, reason: "down", planner: Self.planner) == nil)
        #expect(RoutingExecutor.waitForAModel(
            old, at: now, reason: "paused", planner: Self.planner, until: now.addingTimeInterval(1)) != nil)
        #expect(RoutingExecutor.waitForAModel(
            old, at: now, reason: "paused", planner: Self.planner, until: now.addingTimeInterval(30)) == nil)
        // A model merely busy (at its max_concurrency) is waited for whatever the job's age.
        let backlog = Job(id: 3, priority: .background, request: [:], runAt: now, claimedAt: now,
                          createdAt: now.addingTimeInterval(-7200), waitingSince: now.addingTimeInterval(-7200))
        #expect(RoutingExecutor.waitForAModel(backlog, at: now, reason: "busy", planner: Self.planner, busy: true) != nil)
        #expect(RoutingExecutor.waitForAModel(backlog, at: now, reason: "down", planner: Self.planner) == nil)
    }
}
