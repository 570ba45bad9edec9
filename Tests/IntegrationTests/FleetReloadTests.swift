import Foundation
import Postgres
import QueueModel
import Synchronization
import Testing

@testable import Worker

/// A `--poll-only` worker hears no NOTIFY, so its fleet state re-reads the catalog and the
/// background settings on a timer.
@Suite("Fleet state: reloading without NOTIFY, breakers between report rounds")
struct FleetReloadTests {
    static let catalog = """
        {"models": {"m": {"provider": "simulated", "price_per_1k_input": 0.001, "price_per_1k_output": 0.001}},
         "routing_rules": {"default": {"primary": "m"}}}
        """
    /// `m` with a fallback, `n`.
    static let twoModels = """
        {"models": {"m": {"provider": "simulated"}, "n": {"provider": "simulated"}},
         "routing_rules": {"default": {"primary": "m", "fallback": "n"}}}
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

    /// A review's worker, started as a catalog import committed, loaded the catalog before the
    /// import and listened after it: it routed by the old rules until the next import (243 of a
    /// rule's 300 jobs went to the default rule's model).
    @Test("a catalog change committed between a worker's first load and its LISTEN reaches it")
    func changeBeforeListening() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let catalogs = CatalogStore(pool: pool)
            _ = try await catalogs.importDocument(Data(Self.catalog.utf8))
            let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in })
            let imported = Mutex(false)
            let service = WorkerService(
                configuration: WorkerServiceTests.configuration(concurrency: 1), pool: pool,
                executor: SimulatedExecutor(), fleet: fleet, logger: Logger(label: "worker", level: .error) { _ in },
                beforeListening: {
                    // Once only: the first LISTEN, after the worker's first load.
                    guard !imported.withLock({ $0 }) else { return }
                    _ = try? await catalogs.importDocument(
                        Data(Self.catalog.replacingOccurrences(of: "\"m\"", with: "\"n\"").utf8))
                    imported.withLock { $0 = true }
                })
            let running = Task { try await service.run() }
            defer {
                service.shutdown()
                running.cancel()
            }
            try await waitUntil("the worker has the imported catalog") {
                imported.withLock { $0 } && fleet.router.catalog.models.map(\.name) == ["n"]
            }
            service.shutdown()
            try await running.value
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

    /// A soak's 0.8 ratings a second logged "loaded the model catalog" 306 times in 38 minutes per worker.
    @Test("a reload that changes no model or rule by name is logged at debug; one that does, at info")
    func reloadLogLevel() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let catalogs = CatalogStore(pool: pool)
            _ = try await catalogs.importDocument(Data(Self.catalog.utf8))
            let capture = LogCapture()
            let fleet = FleetState(pool: pool, logger: capture.logger(level: .info))
            await fleet.reload()
            #expect(capture.all.filter { $0.contains("loaded the model catalog") }.count == 1, "\(capture.all)")
            _ = try await catalogs.importDocument(
                Data(Self.catalog.replacingOccurrences(of: "\"price_per_1k_input\": 0.001", with: "\"price_per_1k_input\": 0.003").utf8))
            await fleet.reload()
            #expect(fleet.router.catalog.models.first?.pricePer1KInput == Decimal(string: "0.003"))
            #expect(capture.all.filter { $0.contains("loaded the model catalog") }.count == 1, "\(capture.all)")
            _ = try await catalogs.importDocument(Data(Self.catalog.replacingOccurrences(of: "\"m\"", with: "\"n\"").utf8))
            await fleet.reload()
            #expect(capture.all.filter { $0.contains("loaded the model catalog") }.count == 2, "\(capture.all)")
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
                let call = try #require(fleet.begin(model, estimatedTokens: 10))
                fleet.end(model, call: call, success: false, latencyMS: 12)
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
    @Test("a model whose API key variable is unset is named at catalog load, by variable only, and skipped from then")
    func missingKeyAtLoad() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data("""
                {"models": {"keyed": {"provider": "openai", "api_key_env": "SWITCHYARD_TEST_UNSET_KEY",
                                      "price_per_1k_input": 0.001, "price_per_1k_output": 0.001},
                            "local": {"provider": "openai", "base_url": "http://127.0.0.1:1/v1",
                                      "price_per_1k_input": 0.001, "price_per_1k_output": 0.001},
                            "set": {"provider": "openai", "api_key_env": "SWITCHYARD_TEST_SET_KEY",
                                    "price_per_1k_input": 0.001, "price_per_1k_output": 0.001},
                            "off": {"provider": "openai", "api_key_env": "SWITCHYARD_TEST_UNSET_KEY", "enabled": false,
                                    "price_per_1k_input": 0.001, "price_per_1k_output": 0.001}},
                 "routing_rules": {"default": {"primary": "keyed", "fallback": ["local", "set"]}}}
                """.utf8))
            let lines = Mutex<[String]>([])
            let fleet = FleetState(
                pool: pool, logger: Logger(label: "worker", level: .warning) { line in lines.withLock { $0.append(line) } },
                environment: ["SWITCHYARD_TEST_SET_KEY": "sk-r8Mw3Zq6Lx2Vn9Tp5Kd4"])
            await fleet.reload()
            await fleet.reload()
            let warnings = lines.withLock { $0 }.filter { $0.contains("model skipped by this worker") }
            #expect(warnings.count == 1, "\(lines.withLock { $0 })")
            // Its first job is not routed to it (it recorded a failed attempt there, and a fallback).
            let plan = fleet.planner.router.plan(
                for: RoutingRequest(body: ["messages": [["role": "user", "content": "hi"]]]),
                state: fleet.routingState(sequence: 0))
            #expect(plan.attempts.map(\.model.name) == ["local", "set"])
            #expect(warnings.first?.contains("model=keyed") == true && warnings.first?.contains("SWITCHYARD_TEST_UNSET_KEY") == true)
            #expect(!lines.withLock { $0 }.joined().contains("sk-r8Mw"))
        }
    }

    /// A security review's catalog had workers send their DATABASE_URL and a cloud key to its server.
    @Test("a worker skips a model whose key variable its SWITCHYARD_KEY_VARIABLES leaves out, or no catalog may name")
    func keyVariablesSkipped() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data("""
                {"models": {"listed": {"provider": "openai", "api_key_env": "SWITCHYARD_TEST_SET_KEY",
                                       "price_per_1k_input": 0.001, "price_per_1k_output": 0.001},
                            "unlisted": {"provider": "openai", "api_key_env": "AWS_SECRET_ACCESS_KEY",
                                         "price_per_1k_input": 0.001, "price_per_1k_output": 0.001},
                            "legacy": {"provider": "openai", "api_key_env": "LEGACY_KEY",
                                       "price_per_1k_input": 0.001, "price_per_1k_output": 0.001}},
                 "routing_rules": {"default": {"primary": "unlisted", "fallback": ["legacy", "listed"]}}}
                """.utf8))
            // A row from before sql/0085 that names the worker's connection.
            try await pool.query("ALTER TABLE switchyard.models DROP CONSTRAINT models_api_key_env_not_workers_check")
            try await pool.query("UPDATE switchyard.models SET api_key_env = 'PGPASSWORD' WHERE name = 'legacy'")
            let lines = Mutex<[String]>([])
            let fleet = FleetState(
                pool: pool, logger: Logger(label: "worker", level: .warning) { line in lines.withLock { $0.append(line) } },
                environment: [
                    "SWITCHYARD_TEST_SET_KEY": "sk-r8Mw3Zq6Lx2Vn9Tp5Kd4", "AWS_SECRET_ACCESS_KEY": "aws-secret",
                    "PGPASSWORD": "db-secret", "SWITCHYARD_KEY_VARIABLES": "SWITCHYARD_TEST_SET_KEY",
                ])
            await fleet.reload()
            let plan = fleet.planner.router.plan(
                for: RoutingRequest(body: ["messages": [["role": "user", "content": "hi"]]]),
                state: fleet.routingState(sequence: 0))
            #expect(plan.attempts.map(\.model.name) == ["listed"])
            let logged = lines.withLock { $0 }
            #expect(logged.contains { $0.contains("model=unlisted") && $0.contains("other workers keep using it") }, "\(logged)")
            #expect(logged.contains { $0.contains("model=legacy") && $0.contains("no worker calls it") }, "\(logged)")
            #expect(!logged.joined().contains("db-secret") && !logged.joined().contains("aws-secret"))
        }
    }

    /// The model `m`, its breaker open long enough ago to be half-open now.
    private static func halfOpenFleet(
        _ pool: PostgresPool, logger: Logger = Logger(label: "worker", level: .error) { _ in }
    ) async throws -> (FleetState, ModelSpec) {
        // With a healthy fallback: a rule's last healthy model is let back at its first probe.
        _ = try await CatalogStore(pool: pool).importDocument(Data(Self.twoModels.utf8))
        try await pool.query(
            """
            INSERT INTO switchyard.model_health (model, state, reason, opened_at, consecutive_failures)
            VALUES ('m', 'open', '5 failures in a row', now() - interval '1 hour', 5)
            """)
        // Rounds far apart: only a report sent at once reaches the fleet within the test.
        let fleet = FleetState(pool: pool, logger: logger, reportInterval: .seconds(600))
        await fleet.reload()
        let model = try #require(fleet.router.catalog.models.first)
        #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .halfOpen)
        return (fleet, model)
    }

    /// The model `m`, whose breaker opens after 3 failures in a row, and a fleet state that
    /// reports only when asked (or at once).
    /// A fleet whose breaker opens `m` after three failures in a row (`n`, its fallback, healthy:
    /// `m` is not a rule's last healthy model).
    private static func fleetOpeningAfterThree(
        _ pool: PostgresPool, logger: Logger = Logger(label: "worker", level: .error) { _ in }
    ) async throws -> (FleetState, ModelSpec) {
        _ = try await CatalogStore(pool: pool).importDocument(Data(Self.twoModels.utf8))
        try await pool.query("UPDATE switchyard.settings SET value = '3' WHERE name = 'breaker_consecutive_failures'")
        let fleet = FleetState(pool: pool, logger: logger, reportInterval: .seconds(600))
        await fleet.reload()
        return (fleet, try #require(fleet.router.catalog.models.first))
    }

    /// The fleet's breaker for `m` (nothing before its first report).
    private static func fleetBreaker(_ pool: PostgresPool) async throws -> (state: String, reason: String?) {
        guard let row = try await pool.query("SELECT state, reason FROM switchyard.fleet_health WHERE model = 'm'").first
        else { return ("none", nil) }
        return (try row.decode("state"), try row.decode("reason", as: String?.self))
    }

    /// A soak saw `claude-opus: at max_concurrency (9 of 8 in flight)`: jobs planned at once all saw
    /// room, and a fallback or retry reaches its model after the plan.
    @Test("a call past the model's max_concurrency is not begun, whatever the plan saw")
    func maxConcurrencyAtBegin() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(
                #"{"models": {"m": {"provider": "simulated", "max_concurrency": 2}}, "routing_rules": {"default": {"primary": "m"}}}"#
                    .utf8))
            let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in })
            await fleet.reload()
            let model = try #require(fleet.router.catalog.models.first)
            let first = try #require(fleet.begin(model, estimatedTokens: 10))
            _ = try #require(fleet.begin(model, estimatedTokens: 10))
            #expect(fleet.begin(model, estimatedTokens: 10) == nil)
            fleet.end(model, call: first, success: true, latencyMS: 5)
            #expect(fleet.begin(model, estimatedTokens: 10) != nil)
            #expect(fleet.routingState(sequence: 0).models["m"]?.inFlight == 2)
        }
    }

    @Test("a half-open model's failed probe shuts it here at once and reopens the fleet's breaker: the next job is no second probe")
    func failedProbe() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let (fleet, model) = try await Self.halfOpenFleet(pool)
            let probe = try #require(fleet.begin(model, estimatedTokens: 10))
            #expect(fleet.routingState(sequence: 1).models["m"]?.breaker == .open)  // the probe is in flight
            // A job planned at the same instant saw no probe out: it may not send a second one.
            #expect(fleet.begin(model, estimatedTokens: 10) == nil)
            fleet.end(model, call: probe, success: false, latencyMS: 3)
            #expect(fleet.routingState(sequence: 2).models["m"]?.breaker == .open)
            try await waitUntil("the fleet's breaker is open again") {
                try await Self.fleetBreaker(pool).state == "open"
            }
            // With the cause it was opened for (a walkthrough's breaker alert said only that a probe failed).
            #expect(try await Self.fleetBreaker(pool).reason == "a probe failed while half-open (opened for: 5 failures in a row)")
        }
    }

    /// One answered probe closed the breaker: a model failing 30% of its calls passed it seven
    /// times in ten and had its traffic back while its alert was open.
    @Test("a half-open breaker closes after breaker_half_open_successes probes answer, each reported without waiting for the round")
    func successfulProbes() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let log = LogCapture()
            let (fleet, model) = try await Self.halfOpenFleet(pool, logger: log.logger(level: .notice))
            for answered in 1...4 {
                let probe = try #require(fleet.begin(model, estimatedTokens: 10))
                fleet.end(model, call: probe, success: true, latencyMS: 3)
                try await waitUntil("probe \(answered) is counted") {
                    try await Self.fleetBreaker(pool).reason == "5 failures in a row; \(answered) of 5 probes answered"
                }
                #expect(try await Self.fleetBreaker(pool).state == "half_open")
                #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .halfOpen)  // the next probe may go
            }
            let last = try #require(fleet.begin(model, estimatedTokens: 10))
            fleet.end(model, call: last, success: true, latencyMS: 3)
            try await waitUntil("the fleet's breaker is closed") { try await Self.fleetBreaker(pool) == ("closed", nil) }
            // Logged, as its opening is: an on-call walkthrough could not tell when an incident ended.
            let line = try await log.waitFor { $0.contains("model breaker closed") }
            #expect(line?.contains("model=m") == true && line?.contains("was=half_open") == true, "\(log.all)")
            #expect(log.all.filter { $0.contains("model breaker closed") }.count == 1, "\(log.all)")
        }
    }

    @Test("a failed probe, or an alert opening the breaker again, starts the count of answered probes afresh")
    func probeCountRestarts() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.twoModels.utf8))
            try await pool.query("UPDATE switchyard.settings SET value = '3' WHERE name = 'breaker_half_open_successes'")
            let store = HealthStore(pool: pool)
            func probe(_ success: Bool) async throws -> RoutingState.Breaker? {
                var report = HealthReport(model: "m")
                report.record(success: success, latencyMS: 5)
                report.failuresInARow = success ? 0 : 1
                return try await store.report([report])["m"]
            }
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, reason, opened_at)
                VALUES ('m', 'open', 'alert: error rate 30%', now() - interval '1 hour')
                """)
            #expect(try await probe(true) == .halfOpen)
            #expect(try await probe(true) == .halfOpen)
            #expect(try await Self.fleetBreaker(pool).reason == "alert: error rate 30%; 2 of 3 probes answered")
            #expect(try await probe(false) == .open)
            #expect(try await Self.fleetBreaker(pool).reason == "a probe failed while half-open (opened for: alert: error rate 30%)")
            try await pool.query("UPDATE switchyard.model_health SET opened_at = now() - interval '1 hour'")
            #expect(try await probe(true) == .halfOpen)
            #expect(try await Self.fleetBreaker(pool).reason
                == "a probe failed while half-open (opened for: alert: error rate 30%); 1 of 3 probes answered")
            // Failing again, it keeps the first cause, not one wrapped in another.
            #expect(try await probe(false) == .open)
            #expect(try await Self.fleetBreaker(pool).reason == "a probe failed while half-open (opened for: alert: error rate 30%)")
            try await pool.query("UPDATE switchyard.model_health SET opened_at = now() - interval '1 hour'")
            #expect(try await probe(true) == .halfOpen)
            // An alert opens it again (as evaluate_alerts does): the probe before it no longer counts.
            try await pool.query(
                "UPDATE switchyard.model_health SET state = 'open', opened_at = now() - interval '1 hour', reason = 'alert: again'")
            #expect(try await probe(true) == .halfOpen)
            #expect(try await probe(true) == .halfOpen)
            #expect(try await probe(true) == .closed)
            #expect(try await Self.fleetBreaker(pool) == ("closed", nil))
            // A setting that is no count is refused when written.
            await #expect(throws: PostgresError.self) {
                try await pool.query("UPDATE switchyard.settings SET value = 'five' WHERE name = 'breaker_half_open_successes'")
            }
        }
    }

    /// The error-rate rule needed 50 calls in its minute (a model with fewer could fail 30% of
    /// them for ever) and opened on any 3 failures of 50–60 calls (a healthy model's chance).
    @Test("the error-rate rule opens on 5 failures of 20 calls, not on 3 failures of 57")
    func errorRateDefaults() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(
                """
                {"models": {"m": {"provider": "simulated"}, "n": {"provider": "simulated"}},
                 "routing_rules": {"default": {"primary": "m", "fallback": "n"}}}
                """.utf8))
            let store = HealthStore(pool: pool)
            func window(calls: Int, failing: Set<Int>) -> HealthReport {
                var report = HealthReport(model: "m")
                for index in 0..<calls { report.record(success: !failing.contains(index), latencyMS: 5) }
                report.failuresInARow = 0
                return report
            }
            #expect(try await store.report([window(calls: 57, failing: [10, 30, 50])]) == ["m": .closed])
            try await pool.query("UPDATE switchyard.model_health SET window_started_at = now() - interval '2 minutes'")
            #expect(try await store.report([window(calls: 19, failing: [2, 5, 8, 11, 14, 17])]) == ["m": .closed])
            #expect(try await store.report([window(calls: 1, failing: [])]) == ["m": .open])
            #expect(try await Self.fleetBreaker(pool).reason
                == "failure rate 30.0% over the last 20 requests (errors and timeouts; limit 2.0%)")
        }
    }

    @Test("breaker_consecutive_failures failures in a row shut the model here at once, not after the report round's worth")
    func failuresInARow() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let log = LogCapture()
            let (fleet, model) = try await Self.fleetOpeningAfterThree(pool, logger: log.logger(level: .warning))
            // A success resets the count.
            for success in [false, false, true, false, false] {
                let call = try #require(fleet.begin(model, estimatedTokens: 10))
                fleet.end(model, call: call, success: success, latencyMS: 3)
            }
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .closed)
            // A request's own fault (a 400) says nothing about the model.
            let refused = try #require(fleet.begin(model, estimatedTokens: 10))
            fleet.end(model, call: refused, success: false, countsAgainstModel: false, latencyMS: 3)
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .closed)
            let third = try #require(fleet.begin(model, estimatedTokens: 10))
            fleet.end(model, call: third, success: false, latencyMS: 3)
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .open)
            try await waitUntil("the fleet's breaker is open") { try await Self.fleetBreaker(pool).state == "open" }
            #expect(try await Self.fleetBreaker(pool).reason == "3 failures in a row")
            // The log says why, with the fleet's reason (a review read "failures=1" as an
            // opening on one failure, and the reason is gone once the breaker closes).
            let line = try await log.waitFor { $0.contains("model breaker open") }
            #expect(line?.contains(#"reason="3 failures in a row""#) == true, "\(log.all)")
        }
    }
    /// A soak's flapping model logged a warning per worker per reopening.
    @Test("a breaker's opening is logged once in the fleet, by the worker whose report opened it; a failed probe's reopening at info")
    func openingLoggedOnce() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let first = LogCapture(), second = LogCapture()
            let (opener, model) = try await Self.fleetOpeningAfterThree(pool, logger: first.logger(level: .info))
            let other = FleetState(pool: pool, logger: second.logger(level: .info), reportInterval: .seconds(600))
            await other.reload()
            func fail(_ fleet: FleetState, times: Int) throws {
                for _ in 0..<times {
                    let call = try #require(fleet.begin(model, estimatedTokens: 10))
                    fleet.end(model, call: call, success: false, latencyMS: 3)
                }
            }
            try fail(opener, times: 3)
            let opened = try await first.waitFor { $0.contains(#"msg="model breaker open""#) }
            #expect(opened?.contains("level=warning") == true, "\(first.all)")
            // The other worker's failures, reported while the breaker is open, open nothing.
            try fail(other, times: 3)
            try await waitUntil("the other worker's report has come back") {
                other.routingState(sequence: 0).models["m"]?.breaker == .open
            }
            try await Task.sleep(for: .milliseconds(200))
            #expect(!second.all.contains { $0.contains("model breaker") }, "\(second.all)")

            // Half-open again; a probe fails: the incident goes on, said at info.
            try await pool.query("UPDATE switchyard.model_health SET opened_at = now() - interval '1 hour' WHERE model = 'm'")
            await opener.reload()
            let probe = try #require(opener.begin(model, estimatedTokens: 10))
            opener.end(model, call: probe, success: false, latencyMS: 3)
            let again = try await first.waitFor { $0.contains("model breaker open again") }
            #expect(again?.contains("level=info") == true && again?.contains("a probe failed while half-open") == true,
                    "\(first.all)")
            #expect(first.all.filter { $0.contains(#"msg="model breaker open""#) }.count == 1, "\(first.all)")
        }
    }

    @Test("failures in a row count in the order calls started: a wave's fast errors are no run until the calls before them end")
    func failuresInStartOrder() {
        // 128 calls start together; 4 fail at once, the rest answer a second later.
        var wave = FailureRun()
        let calls = (0..<128).map { _ in wave.begin() }
        for call in [3, 40, 77, 120].map({ calls[$0] }) {
            #expect(wave.end(call, success: false).after == 0)  // earlier calls still in flight
        }
        var last = 0
        for call in calls where ![3, 40, 77, 120].contains(Int(call)) { last = wave.end(call, success: true).after }
        #expect(last == 0)  // each failure has an answer that started after it

        // A model that fails every call: the run grows as the calls end, in any order.
        var dead = FailureRun()
        let deadCalls = (0..<6).map { _ in dead.begin() }
        var runs: [Int] = []
        for call in deadCalls.reversed() { runs.append(dead.end(call, success: false).after) }
        #expect(runs == [0, 0, 0, 0, 0, 6])
        // A call the model is not to blame for (nil) neither breaks nor extends the run.
        let refused = dead.begin()
        #expect(dead.end(refused, success: nil).after == 6)
        let answered = dead.begin()
        #expect(dead.end(answered, success: true).after == 0)

        // The fleet closed the breaker: the run starts afresh, and a call that started before
        // the close and fails now is no part of it.
        var reopened = FailureRun()
        let before = reopened.begin()
        for _ in 0..<3 { _ = reopened.end(reopened.begin(), success: false) }
        reopened.restart()
        #expect(reopened.end(before, success: false).after == 0)
        #expect(reopened.end(reopened.begin(), success: false).after == 1)

        // A call in flight longer than the hold-back no longer holds the count back.
        var slow = FailureRun()
        let start = Date()
        _ = slow.begin(at: start)
        let quick = slow.begin(at: start)
        #expect(slow.end(quick, success: false, at: start.addingTimeInterval(1)).after == 0)
        let later = slow.begin(at: start.addingTimeInterval(40))
        #expect(slow.end(later, success: false, at: start.addingTimeInterval(41)).after == 2)
    }

    @Test("a breaker another worker's probe closed starts this worker's failures in a row afresh")
    func runRestartsWhenFleetCloses() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let (fleet, model) = try await Self.fleetOpeningAfterThree(pool)
            for _ in 0..<3 {
                let call = try #require(fleet.begin(model, estimatedTokens: 10))
                fleet.end(model, call: call, success: false, latencyMS: 3)
            }
            try await waitUntil("the fleet's breaker is open") { try await Self.fleetBreaker(pool).state == "open" }
            // Another worker's probe closes it.
            try await pool.query(
                "UPDATE switchyard.model_health SET state = 'closed', opened_at = NULL, reason = NULL, consecutive_failures = 0")
            await fleet.refreshHealth()
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .closed)
            // One failure now is one in a row, not a fourth: reported, it leaves the breaker closed.
            let call = try #require(fleet.begin(model, estimatedTokens: 10))
            fleet.end(model, call: call, success: false, latencyMS: 3)
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .closed)
            let running = Task { await fleet.run() }
            running.cancel()
            await running.value  // reports once more on the way out
            let after = try await pool.query("SELECT state, consecutive_failures FROM switchyard.model_health").first
            #expect(try after?.decode("state", as: String.self) == "closed")
            #expect(try after?.decode("consecutive_failures", as: Int.self) == 1)
        }
    }

    @Test("the error-rate rule leaves a rule's last healthy model closed; failures in a row still open it")
    func errorRateSparesLastHealthy() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))  // rule default: m alone
            let store = HealthStore(pool: pool)
            func degraded() -> HealthReport {
                var report = HealthReport(model: "m")
                for index in 0..<60 { report.record(success: index % 10 != 0, latencyMS: 5) }  // 10% fail
                report.failuresInARow = 0
                return report
            }
            #expect(try await store.report([degraded()]) == ["m": .closed])
            // With another healthy model in the rule, the same rate opens it.
            _ = try await CatalogStore(pool: pool).importDocument(Data(
                """
                {"models": {"m": {"provider": "simulated"}, "n": {"provider": "simulated"}},
                 "routing_rules": {"default": {"primary": "m", "fallback": "n"}}}
                """.utf8))
            #expect(try await store.report([degraded()]) == ["m": .open])
            #expect(try await Self.fleetBreaker(pool).reason?.hasPrefix("failure rate") == true)
        }
    }

    @Test("report_health takes a worker's failures in a row as the model's; a report without one counts as before")
    func reportedRun() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            let store = HealthStore(pool: pool)
            // Six failures in the batch, none of them a run yet: still closed.
            var wave = HealthReport(model: "m")
            for _ in 0..<6 { wave.record(success: false, latencyMS: 5) }
            wave.failuresInARow = 0
            #expect(try await store.report([wave]) == ["m": .closed])
            var run = HealthReport(model: "m")
            run.record(success: false, latencyMS: 5)
            run.failuresInARow = 5
            #expect(try await store.report([run]) == ["m": .open])
            #expect(try await Self.fleetBreaker(pool).reason
                == "5 failures in a row (7 of 7 calls failed; the last healthy model of rule default)")
        }
    }

    /// A review's rule of one model failing 30% of its calls: five in a row came every few hundred
    /// calls, the breaker opened, and the queue waited two minutes for a model that answered
    /// seven calls in ten.
    @Test("failures in a row open a rule's last healthy model only while it fails most of its calls")
    func inARowSparesLastHealthy() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))  // rule default: m alone
            let store = HealthStore(pool: pool)
            func batch(answered: Int, failed: Int, inARow: Int) -> HealthReport {
                var report = HealthReport(model: "m")
                for _ in 0..<answered { report.record(success: true, latencyMS: 5) }
                for _ in 0..<failed { report.record(success: false, latencyMS: 5) }
                report.failuresInARow = inARow
                return report
            }
            // 3 of 10 calls failed, the last 5 of them in a row (counted in the order calls started).
            #expect(try await store.report([batch(answered: 7, failed: 3, inARow: 5)]) == ["m": .closed])
            // 7 of 14: half, not most.
            #expect(try await store.report([batch(answered: 0, failed: 4, inARow: 9)]) == ["m": .closed])
            // 23 of 30: most, with 95% confidence. A model that is down opens as before.
            #expect(try await store.report([batch(answered: 0, failed: 16, inARow: 19)]) == ["m": .open])
            #expect(try await Self.fleetBreaker(pool).reason
                == "19 failures in a row (23 of 30 calls failed; the last healthy model of rule default)")
            // With a healthy fallback in the rule, five in a row open it whatever the share.
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.twoModels.utf8))
            try await pool.query(
                "UPDATE switchyard.model_health SET state = 'closed', opened_at = NULL, reason = NULL, consecutive_failures = 0")
            #expect(try await store.report([batch(answered: 20, failed: 5, inARow: 5)]) == ["m": .open])
            #expect(try await Self.fleetBreaker(pool).reason == "5 failures in a row")
            // The fallback open: m is the last healthy model again, and a run of five leaves it in.
            try await pool.query(
                """
                UPDATE switchyard.model_health SET state = 'closed', opened_at = NULL, reason = NULL, consecutive_failures = 0
                WHERE model = 'm'
                """)
            try await pool.query(
                "INSERT INTO switchyard.model_health (model, state, opened_at, reason) VALUES ('n', 'open', now(), 'down')")
            #expect(try await store.report([batch(answered: 0, failed: 5, inARow: 5)]) == ["m": .closed])
        }
    }

    /// A review's one-model rule, healthy for a minute, then dead: its failures in a row reached
    /// 329 before they outnumbered the window's answers, and 62 jobs failed.
    @Test("a rule's last healthy model that dies after a while of answers opens at four times the failures in a row")
    func lastHealthyDiesAfterAnswers() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))  // rule default: m alone
            let store = HealthStore(pool: pool)
            var answers = HealthReport(model: "m")
            for _ in 0..<200 { answers.record(success: true, latencyMS: 5) }
            answers.failuresInARow = 0
            #expect(try await store.report([answers]) == ["m": .closed])
            var failing = HealthReport(model: "m")
            for _ in 0..<19 { failing.record(success: false, latencyMS: 5) }
            failing.failuresInARow = 19
            #expect(try await store.report([failing]) == ["m": .closed])
            var dead = HealthReport(model: "m")
            dead.record(success: false, latencyMS: 5)
            dead.failuresInARow = 20
            #expect(try await store.report([dead]) == ["m": .open])
            #expect(try await Self.fleetBreaker(pool).reason
                == "20 failures in a row (20 of 220 calls failed; the last healthy model of rule default)")
            // Half-open, its window's answers do not keep it so: a failed probe opens it again (a
            // second review's workers sent 860 failed probes in 15 s).
            try await pool.query("UPDATE switchyard.model_health SET opened_at = now() - interval '1 hour'")
            var probe = HealthReport(model: "m")
            probe.record(success: false, latencyMS: 5)
            probe.failuresInARow = 21
            #expect(try await store.report([probe]) == ["m": .open])
        }
    }

    /// A second review: a rule's one model failing 45% of its calls opened in 9 fresh starts of 20
    /// on "5 failures in a row (5 of 6 calls failed)", and stayed out a minute.
    @Test("a few failures in a fresh window are not most of a rule's last healthy model's calls")
    func freshWindowIsNoMajority() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))  // rule default: m alone
            let store = HealthStore(pool: pool)
            var start = HealthReport(model: "m")
            start.record(success: true, latencyMS: 5)
            for _ in 0..<5 { start.record(success: false, latencyMS: 5) }
            start.failuresInARow = 5
            #expect(try await store.report([start]) == ["m": .closed])
            // Five of five is: a model down from the start is out at its fifth failure.
            try await pool.query("DELETE FROM switchyard.model_health")
            var down = HealthReport(model: "m")
            for _ in 0..<5 { down.record(success: false, latencyMS: 5) }
            down.failuresInARow = 5
            #expect(try await store.report([down]) == ["m": .open])
        }
    }

    /// A review's rule: its primary X failing 30% of calls, its fallback Y dead. Folded by name,
    /// X was judged (and opened by the error-rate rule) while Y still read as healthy, then Y
    /// opened too, and X's probes, five to answer in a row, kept it out for minutes.
    @Test("a batch is folded worst first, and a rule's last healthy model is let back at its first answered probe")
    func worstFirstAndStrandedProbes() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(
                """
                {"models": {"x": {"provider": "simulated"}, "y": {"provider": "simulated"}},
                 "routing_rules": {"default": {"primary": "x", "fallback": "y"}}}
                """.utf8))
            let store = HealthStore(pool: pool)
            var x = HealthReport(model: "x")
            for index in 0..<30 { x.record(success: index % 10 >= 3, latencyMS: 5) }  // 30% fail
            x.failuresInARow = 1
            var y = HealthReport(model: "y")
            for _ in 0..<8 { y.record(success: false, latencyMS: 5) }
            y.failuresInARow = 8
            #expect(try await store.report([x, y]) == ["x": .closed, "y": .open])
            // Had x been opened all the same (by the error-rate rule before y went out), it is
            // half-open now: a failed probe leaves it so, the first answered one closes it.
            try await pool.query(
                """
                UPDATE switchyard.model_health SET state = 'open', opened_at = now() - interval '1 hour',
                       reason = 'failure rate 30.0%' WHERE model = 'x'
                """)
            var failedProbe = HealthReport(model: "x")
            failedProbe.record(success: false, latencyMS: 5)
            #expect(try await store.report([failedProbe]) == ["x": .halfOpen])
            var answeredProbe = HealthReport(model: "x")
            answeredProbe.record(success: true, latencyMS: 5)
            #expect(try await store.report([answeredProbe]) == ["x": .closed])
            // y, failing every call, still needs its five: a failed probe opens it again.
            try await pool.query("UPDATE switchyard.model_health SET opened_at = now() - interval '1 hour' WHERE model = 'y'")
            var deadProbe = HealthReport(model: "y")
            deadProbe.record(success: false, latencyMS: 5)
            #expect(try await store.report([deadProbe]) == ["y": .open])
        }
    }

    @Test("a worker leaves a rule's last healthy model to the fleet at its own failures in a row")
    func workerLeavesLastHealthyToTheFleet() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))  // rule default: m alone
            try await pool.query("UPDATE switchyard.settings SET value = '3' WHERE name = 'breaker_consecutive_failures'")
            let fleet = FleetState(
                pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, reportInterval: .milliseconds(50))
            await fleet.reload()
            let model = try #require(fleet.router.catalog.models.first)
            func call(_ success: Bool) throws {
                let call = try #require(fleet.begin(model, estimatedTokens: 10))
                fleet.end(model, call: call, success: success, latencyMS: 3)
            }
            for success in [true, true, true, true, true, true, true, false, false, false] { try call(success) }
            // Its third in a row: still in this worker's plans, and reported at once.
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .closed)
            try await waitUntil("the report is in") {
                try await pool.query("SELECT consecutive_failures FROM switchyard.model_health WHERE model = 'm'")
                    .first?.decode("consecutive_failures", as: Int.self) == 3
            }
            #expect(try await Self.fleetBreaker(pool).state == "closed")
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .closed)
            // Failing most of its calls: the fleet opens it, and the report's answer shuts it here.
            let running = Task { await fleet.run() }
            for _ in 0..<10 { try call(false) }
            try await waitUntil("the fleet has it open") { try await Self.fleetBreaker(pool).state == "open" }
            try await waitUntil("this worker has it open") { fleet.routingState(sequence: 0).models["m"]?.breaker == .open }
            #expect(try await Self.fleetBreaker(pool).reason?.hasSuffix("the last healthy model of rule default)") == true)
            running.cancel()
            await running.value
        }
    }

    @Test("a worker stops calling a rule's last healthy model itself at four times its failures in a row")
    func workerShutsLastHealthyAtFourTimes() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))  // rule default: m alone
            try await pool.query("UPDATE switchyard.settings SET value = '3' WHERE name = 'breaker_consecutive_failures'")
            let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, reportInterval: .seconds(600))
            await fleet.reload()
            let model = try #require(fleet.router.catalog.models.first)
            for _ in 0..<200 {
                let call = try #require(fleet.begin(model, estimatedTokens: 10))
                fleet.end(model, call: call, success: true, latencyMS: 3)
            }
            for failure in 1...12 {
                #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .closed, "before failure \(failure)")
                let call = try #require(fleet.begin(model, estimatedTokens: 10))
                fleet.end(model, call: call, success: false, latencyMS: 3)
            }
            #expect(fleet.routingState(sequence: 0).models["m"]?.breaker == .open)
            try await waitUntil("the fleet has it open") { try await Self.fleetBreaker(pool).state == "open" }
        }
    }
}
