import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// A routing worker under the background policy, against a real Postgres.
@Suite("Off-peak execution: ceilings, escalation, postponement, cost")
struct OffPeakExecutionTests {
    /// `premium` ($0.01/1K, no windows) and `budget` ($0.002/1K, ×0.1 all day → $0.0002/1K).
    static let catalog = """
        {"models": {
           "premium": {"provider": "simulated", "tier": "premium", "price_per_1k_input": 0.01,
                       "price_per_1k_output": 0.01, "settings": {"mode": "instant"}},
           "budget":  {"provider": "simulated", "tier": "open_source", "price_per_1k_input": 0.002,
                       "price_per_1k_output": 0.002, "settings": {"mode": "instant"},
                       "price_windows": [{"start": "00:00", "end": "00:00", "multiplier": 0.1}]}},
         "routing_rules": {"default": {"primary": "premium", "fallback": "budget"},
                           "premium_only": {"primary": "premium"}}}
        """

    static func submit(_ store: QueueStore, _ taskClass: String?, priority: Priority, deadlineIn: TimeInterval? = nil)
        async throws -> Int64
    {
        try await store.submit(
            Submission(
                request: Submission.prompt("summarise"), priority: priority, taskClass: taskClass,
                deadline: deadlineIn.map { Date().addingTimeInterval($0) }
            )
        )
    }

    @Test("background work runs within its ceiling, escalates near its deadline (recorded), and otherwise waits")
    func ceilingsAndEscalation() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.001", in: pool)
            let store = QueueStore(pool: pool)
            let cheap = try await Self.submit(store, nil, priority: .background)
            let urgent = try await Self.submit(store, "premium_only", priority: .background, deadlineIn: 60)
            let patient = try await Self.submit(store, "premium_only", priority: .background, deadlineIn: 6 * 3600)
            let interactive = try await Self.submit(store, "premium_only", priority: .interactive)

            let logger = Logger(label: "worker", level: .error) { _ in }
            let fleet = FleetState(pool: pool, logger: logger)
            let executor = RoutingExecutor(fleet: fleet, providers: ProviderFactory(concurrency: 4), worker: "w")
            try await WorkerServiceTests.withWorker(
                pool, WorkerServiceTests.configuration(concurrency: 4), executor, fleet: fleet
            ) { _ in
                try await waitUntil("the three others have succeeded") {
                    let finished = try await store.statuses(of: [cheap, urgent, interactive])
                    return finished.values.allSatisfy({ $0 == "succeeded" }) && finished.count == 3
                }
                // The patient one was claimed, found nothing within its ceiling, and was put back
                // until its escalation point, its attempt not spent.
                try await waitUntil("the patient job is put back") {
                    try await store.status(of: patient) == "scheduled"
                }
            }

            let cheapResult = try #require(try await store.result(of: cheap))
            #expect(cheapResult["model"] == "budget")
            // 2 prompt tokens at most… exact cost: tokens × $0.002/1K × 0.1.
            let tokensIn = try #require(cheapResult["tokens_in"]?.intValue)
            let tokensOut = try #require(cheapResult["tokens_out"]?.intValue)
            let cost = try await pool.query("SELECT cost FROM switchyard.results WHERE job_id = $1", [cheap]).scalar(Decimal.self)
            #expect(cost == Decimal(tokensIn + tokensOut) * Decimal(string: "0.0002")! / 1000)
            let baseCost = try await pool.query("SELECT base_cost FROM switchyard.results WHERE job_id = $1", [cheap]).scalar(Decimal.self)
            #expect(baseCost == Decimal(tokensIn + tokensOut) * Decimal(string: "0.002")! / 1000)

            let urgentResult = try #require(try await store.result(of: urgent))
            #expect(urgentResult["model"] == "premium")
            #expect(urgentResult["metadata"]?["escalation"]?["reason"]?.stringValue?.contains("escalation horizon") == true)

            let interactiveResult = try #require(try await store.result(of: interactive))
            #expect(interactiveResult["model"] == "premium")
            #expect(interactiveResult["metadata"]?["escalation"] == nil)

            let row = try #require(try await pool.query("SELECT attempt, run_at FROM switchyard.jobs WHERE id = $1", [patient]).first)
            #expect(try row.decode("attempt", as: Int.self) == 0)
            #expect(try row.decode("run_at", as: Date.self) > Date().addingTimeInterval(3600))

            // The guarantee, as SQL: no background result ran above its ceiling without a
            // recorded escalation.
            let violations = try await pool.query(
                """
                SELECT count(*) FROM switchyard.results
                WHERE priority = 'background' AND status = 'succeeded' AND NOT metadata ? 'escalation'
                  AND (metadata->>'price_per_1k')::numeric > 0.001
                """
            ).scalar(Int.self)
            #expect(violations == 0)
            let savings = try await SavingsReport.load(pool, since: nil)
            #expect(savings.rows.last?.jobs == 3)
            #expect((savings.rows.last?.savedByCheaperModel ?? 0) > 0)
            #expect((savings.rows.last?.savedByOffPeak ?? 0) > 0)
            #expect(savings.rows.last?.escalatedJobs == 1)
        }
    }
}
