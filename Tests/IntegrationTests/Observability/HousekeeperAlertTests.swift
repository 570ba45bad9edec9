import Foundation
import Postgres
import QueueModel
import Testing

@testable import Dispatcher
@testable import Worker

/// The elected housekeeper evaluates alerts every round and logs each event.
@Suite("Housekeeper: alerts each round")
struct HousekeeperAlertTests {
    @Test("a breach is raised by the running worker's housekeeper, logged with the model (numbers as numbers in JSON lines), and counted")
    func housekeeperRaisesAndLogs() async throws {
        try await AlertTests.withCatalog { pool in
            let now = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(
                AlertTests.calls("flaky", count: 60, failing: 6, end: now, firstJob: 1), into: pool)
            let capture = LogCapture()
            let metrics = WorkerMetrics()
            let service = WorkerService(
                configuration: WorkerServiceTests.configuration(concurrency: 2), pool: pool, executor: GatedExecutor(),
                logger: capture.logger(level: .info, format: .json), metrics: metrics)
            let running = Task { try await service.run() }
            let line = try await capture.waitFor { $0.contains("alert raised") }
            // The alert opened flaky's breaker: said as a worker's report opening one is (its
            // closing was logged with no opening before it).
            let opened = try await capture.waitFor { $0.contains("model breaker open") }
            service.shutdown()
            try await running.value
            let breaker = try JSONValue(parsing: try #require(opened, "\(capture.all)"))
            #expect(breaker["level"] == "warning" && breaker["model"] == "flaky", "\(breaker)")
            #expect(breaker["reason"]?.stringValue?.hasPrefix("alert: model flaky: 10.0% of 60 calls") == true, "\(breaker)")

            let raised = try JSONValue(
                parsing: try #require(line, "no alert line in:\n\(capture.all.joined(separator: "\n"))"))
            #expect(raised["level"] == "warning")
            #expect(raised["kind"] == "error_rate" && raised["model"] == "flaky")
            #expect(raised["alert"]?.doubleValue != nil, "\(raised)")
            #expect(raised["value"] == 0.1 && raised["threshold"] == 0.02, "\(raised)")
            #expect(metrics.alertEvents.value(["error_rate", "raised"]) == 1)
            #expect(metrics.roundTrips.value(["alerts"]) >= 1)
            #expect(try await AlertStore(pool: pool).open().map(\.subject) == ["flaky"])
            let state = try await AlertStore(pool: pool).evaluationState()
            #expect(state.evaluatedAt != nil && state.failingSince == nil && state.error == nil, "\(state)")
        }
    }
}

extension HousekeeperAlertTests {
    @Test("alerts are evaluated every 15 s, or ten times as long as an evaluation takes when that is longer")
    func alertInterval() {
        #expect(Housekeeper.alertInterval(after: .milliseconds(400)) == .seconds(15))
        #expect(Housekeeper.alertInterval(after: .milliseconds(1500)) == .seconds(15))
        #expect(Housekeeper.alertInterval(after: .seconds(3)) == .seconds(30))
    }

    /// A review's evaluations grew to 11 s, two minutes apart, with one notice at the first step.
    @Test("a slower alert evaluation is said at each doubling of the interval, and its return to 15 s")
    func alertIntervalNotices() {
        let slow = "alert evaluation is slow; evaluating less often"
        #expect(Housekeeper.intervalNotice(from: .seconds(15), to: .seconds(30)) == slow)
        #expect(Housekeeper.intervalNotice(from: .seconds(30), to: .seconds(45)) == nil)
        #expect(Housekeeper.intervalNotice(from: .seconds(45), to: .seconds(110)) == slow)
        #expect(Housekeeper.intervalNotice(from: .seconds(110), to: .seconds(15)) == "alert evaluation is quick again")
        #expect(Housekeeper.intervalNotice(from: .seconds(15), to: .seconds(15)) == nil)
        // Back from a step that said nothing (one evaluation of 2 s): nothing to take back.
        #expect(Housekeeper.intervalNotice(from: .seconds(21), to: .seconds(15), slowSaid: false) == nil)
    }
}

extension HousekeeperAlertTests {
    /// An evaluation that fails (here a lock timeout; in the field, a statement timeout after it
    /// ran long) counts as one: it used to be retried at full cost every 200 ms round.
    @Test("a failed alert evaluation waits for the next interval like a finished one")
    func failedEvaluation() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let database = try await pool.query("SELECT current_database()").scalar(String.self)
            try await pool.query("ALTER DATABASE \(database) SET lock_timeout = '50ms'")  // for new connections
            try await pool.withConnection { blocker in
                try await blocker.query("BEGIN")
                try await blocker.query("LOCK TABLE switchyard.alerts IN ACCESS EXCLUSIVE MODE")
                let capture = LogCapture()
                let metrics = WorkerMetrics()
                let service = WorkerService(
                    configuration: WorkerServiceTests.configuration(concurrency: 1), pool: pool,
                    executor: GatedExecutor(), logger: capture.logger(level: .info), metrics: metrics)
                let startedAt = ContinuousClock.now
                let running = Task { try await service.run() }
                try await waitUntil("an evaluation has failed") { metrics.databaseErrors.value(["alerts"]) >= 1 }
                let rounds = metrics.roundTrips.value(["rescue"])
                try await waitUntil("five more housekeeping rounds") { metrics.roundTrips.value(["rescue"]) >= rounds + 5 }
                service.shutdown()
                try await running.value
                // One evaluation per 15 s interval at most (a loaded machine may take that long
                // over five rounds); every round used to evaluate.
                let intervals = Int((ContinuousClock.now - startedAt) / Housekeeper.alertInterval)
                try await blocker.query("ROLLBACK")
                let evaluations = Int(metrics.roundTrips.value(["alerts"]))
                #expect(evaluations >= 1 && evaluations <= 1 + intervals, "\(evaluations) evaluations")
                // (One cut short by the stop counts as a round trip but is not logged.)
                let logged = capture.all.filter { $0.contains("could not evaluate alerts") }.count
                #expect(logged >= 1 && logged <= evaluations)
                #expect(!capture.all.contains { $0.contains("housekeeping failed") })
                // Said where status reads it: a log line every 15 s was the only sign, and status
                // showed "none open".
                let state = try await AlertStore(pool: pool).evaluationState()
                #expect(state.evaluatedAt == nil && state.failingSince != nil, "\(state)")
                #expect(state.error?.contains("lock timeout") == true, "\(state)")
                let report = await StatusReport.load(StatusContext(pool: pool, window: .seconds(60), at: nil))
                let screen = report.lines().joined(separator: "\n")
                #expect(screen.contains("ALERTS\n  EVALUATION FAILING since "), "\(screen)")
                #expect(screen.contains("no alert raises or clears until an evaluation succeeds"), "\(screen)")
                #expect(report.json["alert_evaluation"]?["error"]?.stringValue?.contains("lock timeout") == true)
                #expect(report.json["alerts"] == [])
                // The next evaluation that succeeds clears it.
                let holder = try await pool.query("SELECT holder FROM switchyard.housekeeper").scalar(String.self)
                try await AlertStore(pool: pool).noteEvaluation(worker: holder, error: nil)
                let cleared = try await AlertStore(pool: pool).evaluationState()
                #expect(cleared.evaluatedAt != nil && cleared.failingSince == nil && cleared.error == nil, "\(cleared)")
                let after = await StatusReport.load(StatusContext(pool: pool, window: .seconds(60), at: nil))
                #expect(after.lines().joined(separator: "\n").contains("ALERTS\n  none open"))
                // No housekeeper for an hour (no worker running): said too, not "none open" alone.
                try await pool.query("UPDATE switchyard.housekeeper SET alerts_evaluated_at = now() - interval '1 hour'")
                let stale = await StatusReport.load(StatusContext(pool: pool, window: .seconds(60), at: nil))
                #expect(stale.lines().joined(separator: "\n").contains("ALERTS\n  NOT EVALUATED since "), "\(stale.lines())")
                #expect(stale.lines().joined(separator: "\n").contains("(60.0 min ago): no worker is keeping house, or"))
            }
        }
    }
}

@Suite("Housekeeper: a stop mid-round")
struct HousekeeperStopTests {
    /// The worker cancels its housekeeper as it stops; a round caught mid-statement (here: alert
    /// evaluation waiting for a lock) is not a failure, and used to be logged as one at every
    /// such stop.
    @Test("a worker stopped while its housekeeper is mid-statement logs no failure")
    func stopMidRound() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.withConnection { blocker in
                try await blocker.query("BEGIN")
                try await blocker.query("LOCK TABLE switchyard.alerts IN ACCESS EXCLUSIVE MODE")
                let capture = LogCapture()
                var configuration = WorkerServiceTests.configuration(concurrency: 2)
                configuration.heartbeatInterval = .seconds(60)
                configuration.pollInterval = .seconds(60)
                let service = WorkerService(
                    configuration: configuration, pool: pool, executor: GatedExecutor(),
                    logger: capture.logger(level: .info))
                let running = Task { try await service.run() }
                try await waitUntilBlocked(
                    pool, calling: "switchyard.evaluate_alerts", "the housekeeper's alert evaluation waits for the lock")
                service.shutdown()
                try await running.value
                try await blocker.query("ROLLBACK")
                let log = capture.all
                #expect(log.contains { $0.contains("elected housekeeper") })
                #expect(log.contains { $0.contains("worker stopped") })
                let complaints = log.filter { $0.contains("level=error") || $0.contains("level=warning") }
                #expect(complaints.isEmpty, "\(complaints.joined(separator: "\n"))")
            }
        }
    }
}
