import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// A `--poll-only` worker hears no NOTIFY, so its fleet state re-reads the catalog and the
/// background settings on a timer.
@Suite("Fleet state: reloading without NOTIFY")
struct FleetReloadTests {
    static let catalog = """
        {"models": {"m": {"provider": "simulated", "price_per_1k_input": 0.001, "price_per_1k_output": 0.001}},
         "routing_rules": {"default": {"primary": "m"}}}
        """

    @Test("with a reload interval, a catalog import and a background setting reach the worker without a NOTIFY")
    func pollOnlyReload() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let catalogs = CatalogStore(pool: pool)
            _ = try await catalogs.importDocument(Data(Self.catalog.utf8))
            let fleet = FleetState(
                pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, reloadInterval: .milliseconds(200))
            await fleet.reload()
            #expect(fleet.router.catalog.models.map(\.name) == ["m"])
            let running = Task { await fleet.run() }
            defer { running.cancel() }

            _ = try await catalogs.importDocument(Data(Self.catalog.replacingOccurrences(of: "\"m\"", with: "\"n\"").utf8))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.5", in: pool)
            try await waitUntil("the fleet has reloaded both") {
                fleet.router.catalog.models.map(\.name) == ["n"] && fleet.policy.maxCostPer1K != nil
            }
            #expect(fleet.router.catalog.models.map(\.name) == ["n"])
            #expect(fleet.policy.maxCostPer1K == Decimal(string: "0.5"))
        }
    }

    @Test("a call is priced by the catalog it was planned with, not one reloaded while it ran")
    func scheduleOfThePlannedModel() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in })
            await fleet.reload()
            let planned = try #require(fleet.router.catalog.models.first)
            #expect(fleet.schedule(of: planned).model == planned)
            // The catalog changed the price while the call ran: the planned model prices it.
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(Self.catalog.replacingOccurrences(of: "\"price_per_1k_input\": 0.001", with: "\"price_per_1k_input\": 0.003").utf8))
            await fleet.reload()
            #expect(fleet.router.catalog.models.first?.pricePer1KInput == Decimal(string: "0.003"))
            #expect(fleet.schedule(of: planned).model.pricePer1KInput == Decimal(string: "0.001"))
        }
    }

    @Test("the calls reported since the last round reach the fleet's breakers when the worker stops")
    func lastReportOnTheWayOut() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            let capture = LogCapture()
            // Rounds far apart: only the report on the way out can carry the calls.
            let fleet = FleetState(pool: pool, logger: capture.logger(level: .info), reportInterval: .seconds(60))
            await fleet.reload()
            let model = try #require(fleet.router.catalog.models.first)
            let running = Task { await fleet.run() }
            for _ in 0..<3 {
                fleet.begin(model, estimatedTokens: 10)
                fleet.end(model, success: false, latencyMS: 12)
            }
            running.cancel()
            await running.value
            let failures = try await pool.query(
                "SELECT window_failures FROM switchyard.model_health WHERE model = 'm'"
            ).scalar(Int?.self)
            #expect(failures == 3, "\(capture.all.joined(separator: "\n"))")
            #expect(!capture.all.contains { $0.contains("could not report model health") })
        }
    }

    @Test("a reload that failed is tried again at the next refresh, without a NOTIFY or a reload interval")
    func failedReloadIsRetried() async throws {
        try await TestDatabase.withMigratedPool { pool in
            // The settings cannot be read for a moment.
            try await pool.query("ALTER FUNCTION switchyard.background_policy_version() RENAME TO policy_version_away")
            let fleet = FleetState(
                pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, refreshInterval: .milliseconds(100))
            await fleet.reloadPolicy()
            #expect(fleet.planner.policy.version == nil)
            try await pool.query("ALTER FUNCTION switchyard.policy_version_away() RENAME TO background_policy_version")
            let running = Task { await fleet.run() }
            defer { running.cancel() }
            try await waitUntil("the worker has read the settings again") { fleet.planner.policy.version != nil }
        }
    }
}
