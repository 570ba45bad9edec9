import Foundation
import Postgres
import QueueModel

/// `dispatcher simulate`: the off-peak lever over a simulated month, priced and reported.
enum SimulateCommand {
    static let usage = """
        usage: dispatcher simulate [--jobs N] [--days N] [--ceiling PRICE] [--tiers LIST]
                                   [--background-share F] [--catalog FILE] [--database-url URL]

        Simulates a month of traffic in simulated time (the seed's 100,000 requests a month, 60%
        simple and 40% complex) against a catalog of public list prices where one model has an
        off-peak window. Background jobs (default 30%) wait for a model within the background
        ceiling (default $0.0005 per 1K tokens), or run anyway when their deadline (24 h, or 4 h
        for 10% of them) is near. Every decision is the worker's own (the off-peak planner and
        the router); every price is the one in force at the simulated instant. The results are
        written to a private Postgres (or, with DATABASE_URL or --database-url, to that database,
        which must hold no Switchyard jobs, results or catalog yet) and reported with
        `dispatcher report savings`'s own SQL.

          --jobs N              default 100000
          --days N              default 30
          --ceiling PRICE       background ceiling per 1K tokens (default 0.0005; none for no ceiling)
          --tiers LIST          price tiers background work may use (e.g. cheap,open_source)
          --background-share F  default 0.3
          --catalog FILE        default examples/offpeak-simulation.json
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher simulate",
            options: ["jobs", "days", "ceiling", "tiers", "background-share", "catalog", "database-url"],
            takesWords: false
        )
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        var options = OffPeakSimulation.Options()
        options.jobs = try arguments.integer("jobs", default: 100_000, range: 1...10_000_000)
        options.days = try arguments.integer("days", default: 30, range: 1...366)
        if let share = arguments.value("background-share") {
            guard let value = Double(share), (0...1).contains(value) else {
                throw QueueError(.invalidInput, "--background-share must be a fraction from 0 to 1 (got \"\(share)\")")
            }
            options.backgroundShare = value
        }
        var policy = BackgroundPolicy(maxCostPer1K: Decimal(string: "0.0005"))
        if let ceiling = arguments.value("ceiling") {
            policy.maxCostPer1K = try BackgroundCommand.ceiling(ceiling, name: "--ceiling")
        }
        policy.tiers = try arguments.value("tiers").flatMap { try BackgroundCommand.tiers($0) }
        let path = arguments.value("catalog") ?? DemoCommand.exampleFile("examples/offpeak-simulation.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw QueueError(
                .invalidInput, "cannot read the catalog \(path)",
                hint: "Run from the repository (examples/offpeak-simulation.json), or pass --catalog FILE.")
        }
        let catalog = try CatalogDocument(parsing: data).applied(to: .empty)

        var cluster: PrivatePostgres?
        let configuration: PostgresConfiguration
        if let given = try Database.optionalConfiguration(arguments) {
            configuration = given
        } else {
            let private_ = try await PrivatePostgres.start()
            cluster = private_
            configuration = private_.configuration()
        }
        let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
        do {
            // The database is checked before the month is simulated, not after (minutes, wasted).
            try await Migrator().migrate(pool)
            if cluster == nil {
                try await ScratchDatabase.requireEmpty(pool, target: configuration.target, for: "the simulation")
            }
            print("simulating \(options.jobs) jobs over \(options.days) \(options.days == 1 ? "day" : "days")…")
            let clock = ContinuousClock()
            let started = clock.now
            let summary = OffPeakSimulation(catalog: catalog, policy: policy, options: options).run()
            print("  simulated in \(String(format: "%.1f", (clock.now - started).seconds)) s: "
                + "\(summary.outcomes.count) succeeded, \(summary.failed) failed on every model, "
                + "\(summary.postponements) waits for a cheaper price, largest backlog \(summary.largestBacklog)")
            let waits = summary.backgroundWaitSeconds.sorted()
            if !waits.isEmpty {
                let median = waits[waits.count / 2] / 3600
                let p95 = waits[min(waits.count - 1, waits.count * 95 / 100)] / 3600
                print("  background wait for a cheap price: median \(String(format: "%.1f", median)) h, P95 \(String(format: "%.1f", p95)) h; "
                    + "\(summary.outcomes.filter { $0.escalation != nil }.count) escalated by their deadline")
            }

            try await store(summary.outcomes, in: pool)
            print(try await SavingsReport.load(pool, since: nil).text)
            let above = try await pool.query(
                """
                SELECT count(*) FROM switchyard.results
                WHERE priority = 'background' AND metadata->>'simulated' = 'true'
                  AND NOT metadata ? 'escalation'
                  AND (metadata->>'price_per_1k')::numeric > $1::numeric
                """,
                [policy.maxCostPer1K ?? Decimal(1_000_000)]
            ).scalar(Int.self)
            print("background results above the ceiling without a recorded escalation: \(above)")
        } catch {
            await pool.close()
            try? await cluster?.stop()
            throw error
        }
        await pool.close()
        try await cluster?.stop()
        return ExitCode.success
    }

    /// Writes the simulated outcomes into switchyard.results, 5,000 per statement.
    static func store(_ outcomes: [OffPeakSimulation.Outcome], in pool: PostgresPool) async throws {
        var start = 0
        while start < outcomes.count {
            let chunk = outcomes[start..<min(start + 5000, outcomes.count)]
            let items: [JSONValue] = chunk.map { outcome in
                var metadata: [String: JSONValue] = ["simulated": true, "price_per_1k": .string(outcome.pricePer1K.description)]
                if let escalation = outcome.escalation { metadata["escalation"] = ["reason": .string(escalation)] }
                return [
                    "job_id": .number(Double(outcome.id)), "priority": .string(outcome.priority.rawValue),
                    "task_class": .string(outcome.taskClass), "model": .string(outcome.model),
                    "tier": .string(outcome.tier), "tokens_in": .number(Double(outcome.tokensIn)),
                    "tokens_out": .number(Double(outcome.tokensOut)), "cost": .string(outcome.cost.description),
                    "base_cost": .string(outcome.baseCost.description),
                    "primary_cost": .string(outcome.primaryCost.description),
                    "created_at": .string(outcome.createdAt.postgresText),
                    "finished_at": .string(outcome.finishedAt.postgresText),
                    "attempt_count": .number(Double(outcome.attempts)), "metadata": .object(metadata),
                ]
            }
            try await pool.query(
                """
                INSERT INTO switchyard.results (job_id, status, priority, task_class, model, provider, tier, request,
                    tokens_in, tokens_out, cost, base_cost, primary_cost, created_at, finished_at, attempt_count, metadata)
                SELECT x.job_id, 'succeeded', x.priority, x.task_class, x.model, 'simulated', x.tier, '{}',
                       x.tokens_in, x.tokens_out, x.cost, x.base_cost, x.primary_cost, x.created_at, x.finished_at,
                       x.attempt_count, x.metadata
                FROM jsonb_to_recordset($1::jsonb) AS x(job_id bigint, priority text, task_class text, model text,
                    tier text, tokens_in integer, tokens_out integer, cost numeric, base_cost numeric,
                    primary_cost numeric, created_at timestamptz, finished_at timestamptz, attempt_count integer,
                    metadata jsonb)
                """,
                [JSONValue.array(items).jsonText]
            )
            start += 5000
        }
    }
}
