import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// The elected housekeeper evaluates alerts every round and logs each event.
@Suite("Housekeeper: alerts each round")
struct HousekeeperAlertTests {
    @Test("a breach is raised by the running worker's housekeeper, logged with the model, and counted")
    func housekeeperRaisesAndLogs() async throws {
        try await AlertTests.withCatalog { pool in
            let now = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(
                AlertTests.calls("flaky", count: 60, failing: 6, end: now, firstJob: 1), into: pool)
            let capture = LogCapture()
            let metrics = WorkerMetrics()
            let service = WorkerService(
                configuration: WorkerServiceTests.configuration(concurrency: 2), pool: pool, executor: GatedExecutor(),
                logger: capture.logger(level: .info), metrics: metrics)
            let running = Task { try await service.run() }
            let line = try await capture.waitFor { $0.contains("alert raised") }
            service.shutdown()
            try await running.value

            let raised = try #require(line, "no alert line in:\n\(capture.all.joined(separator: "\n"))")
            #expect(raised.contains("level=warning"))
            #expect(raised.contains("kind=error_rate") && raised.contains("model=flaky"))
            #expect(metrics.alertEvents.value(["error_rate", "raised"]) == 1)
            #expect(metrics.roundTrips.value(["alerts"]) >= 1)
            #expect(try await AlertStore(pool: pool).open().map(\.subject) == ["flaky"])
        }
    }
}
