import Foundation
import Postgres
import QueueModel
import Testing

/// Quality feedback: validated ratings whose averages move the capability scores that
/// `best_quality` and `quality_floor` route by.
@Suite("Quality feedback shifts routing")
struct FeedbackRoutingTests {
    static let catalog = """
        {
          "models": {
            "alpha": {"provider": "simulated", "capabilities": {"reasoning": 80}},
            "beta":  {"provider": "simulated", "capabilities": {"reasoning": 78}}
          },
          "routing_rules": {
            "reasoning": {"primary": "alpha", "fallback": ["beta"], "strategy": "best_quality"},
            "general":   {"primary": "alpha", "fallback": ["beta"], "quality_floor": 70}
          }
        }
        """

    static func request(_ taskClass: String) -> RoutingRequest {
        RoutingRequest(body: ["messages": [["role": "user", "content": "Why is the sky blue?"]]], taskClass: taskClass)
    }

    static func order(_ pool: PostgresPool, _ taskClass: String) async throws -> [String] {
        let router = Router(catalog: try await CatalogStore(pool: pool).load())
        return router.plan(for: request(taskClass), state: RoutingState()).attempts.map(\.model.name)
    }

    @Test("users rating alpha low and beta high move best_quality to beta and drop alpha under a quality floor")
    func feedbackShiftsBestQuality() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            let now = try await ResultRow.databaseNow(pool)
            var rows: [ResultRow] = []
            for index in 0..<10 {
                for (offset, model) in [(0, "alpha"), (100, "beta")] {
                    rows.append(
                        ResultRow(
                            job: Int64(index + offset + 1), taskClass: "reasoning", model: model, latencyMS: 300,
                            finishedAt: now.addingTimeInterval(-Double(index)),
                            trail: [ResultRow.call(model, latencyMS: 300)]))
                }
            }
            try await ResultRow.insert(rows, into: pool)
            #expect(try await Self.order(pool, "reasoning") == ["alpha", "beta"])
            #expect(try await Self.order(pool, "general") == ["alpha", "beta"])

            let feedback = FeedbackStore(pool: pool)
            let notifications = try await pool.listen(on: [CatalogStore.channel])
            // Four ratings each: below feedback_min_ratings (5), nothing moves yet.
            for index in 0..<4 {
                try await feedback.rate(job: Int64(index + 1), score: 20, note: "missed the point")
                try await feedback.rate(job: Int64(index + 101), score: 95)
            }
            #expect(try await Self.order(pool, "reasoning") == ["alpha", "beta"])
            for index in 4..<10 {
                try await feedback.rate(job: Int64(index + 1), score: 20)
                try await feedback.rate(job: Int64(index + 101), score: 95)
            }
            // Workers hear about it on the catalog channel and reload.
            let notification = try #require(await firstNotification(notifications))
            #expect(notification.payload == "feedback")

            // alpha: (20 × 80 + 10 × 20) / 30 = 60; beta: (20 × 78 + 10 × 95) / 30 = 83.7 → 84.
            let blended = try await CatalogStore(pool: pool).load()
            #expect(blended.model(named: "alpha")?.capabilities["reasoning"] == 60)
            #expect(blended.model(named: "beta")?.capabilities["reasoning"] == 84)
            #expect(try await Self.order(pool, "reasoning") == ["beta", "alpha"])
            #expect(try await Self.order(pool, "general") == ["beta"])
            // The stored catalog is untouched.
            let stored = try await pool.query(
                "SELECT capabilities->>'reasoning' FROM switchyard.models WHERE name = 'alpha'"
            )
            .scalar(String.self)
            #expect(stored == "80")

            let averages = try await feedback.averages()
            #expect(averages.map(\.model) == ["alpha", "beta"])
            #expect(averages.map(\.ratings) == [10, 10])
            #expect(averages.first?.averageScore == 20)

            // models export writes the stored catalog: importing it back changes nothing (it wrote
            // the blended scores, and each round trip blended the ratings in again).
            let file = try Scratch.makeDirectory("feedback-export").appendingPathComponent("catalog.json").path
            let url = pool.configuration.effectiveConnectionString
            let binary = WorkerProcess.binary("dispatcher")
            let exported = try await BlockingWork.run {
                try ChildProcess.run(binary, ["models", "export", "--file", file, "--database-url", url])
            }
            #expect(exported.status == 0, "\(exported.output)")
            let reimported = try await BlockingWork.run {
                try ChildProcess.run(binary, ["models", "import", file, "--database-url", url])
            }
            #expect(reimported.output.contains("no changes: the catalog already matches the file"), "\(reimported.output)")
            #expect(try await CatalogStore(pool: pool).load().model(named: "alpha")?.capabilities["reasoning"] == 60)
        }
    }

    @Test("a job's answer has one rating: rating it again replaces it, and workers hear of a change or a removal")
    func oneRatingPerJob() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            let now = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(
                (1...10).map { ResultRow(job: Int64($0), taskClass: "reasoning", model: "alpha", latencyMS: 300, finishedAt: now) },
                into: pool)
            let feedback = FeedbackStore(pool: pool)
            // One answer rated 0 three hundred times is one rating (each counted: alpha left the
            // quality floor's rule for every tenant).
            var ids: Set<Int64> = []
            for _ in 0..<300 { ids.insert(try await feedback.rate(job: 1, score: 0)) }
            #expect(ids.count == 1)
            #expect(try await feedback.averages().map(\.ratings) == [1])
            for job in 1...10 { try await feedback.rate(job: Int64(job), score: 20) }
            #expect(try await CatalogStore(pool: pool).load().model(named: "alpha")?.capabilities["reasoning"] == 60)

            // A rating changed moves the blend, and the workers are told.
            let changed = try await pool.listen(on: [CatalogStore.channel])
            let again = try await feedback.rate(job: 1, score: 100, note: "on reflection, right")
            #expect(ids == [again])
            #expect(try #require(await firstNotification(changed)).payload == "feedback")
            let averages = try await feedback.averages()
            #expect(averages.map(\.ratings) == [10])
            #expect(averages.first?.averageScore == 28)
            let note = try await pool.query("SELECT note FROM switchyard.feedback WHERE job_id = 1").scalar(String.self)
            #expect(note == "on reflection, right")

            // Ratings removed by an operator: the workers are told, and the catalog's score is back.
            let removed = try await pool.listen(on: [CatalogStore.channel])
            try await pool.query("DELETE FROM switchyard.feedback WHERE job_id <= 6")
            #expect(try #require(await firstNotification(removed)).payload == "feedback")
            #expect(try await CatalogStore(pool: pool).load().model(named: "alpha")?.capabilities["reasoning"] == 80)
            let truncated = try await pool.listen(on: [CatalogStore.channel])
            try await pool.query("TRUNCATE switchyard.feedback")
            #expect(try #require(await firstNotification(truncated)).payload == "feedback")
        }
    }

    @Test("a rating is refused with a clear error: out of range, unknown job, unfinished job, no answer")
    func validation() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let feedback = FeedbackStore(pool: pool)
            let now = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(
                [
                    ResultRow(job: 9001, model: "alpha", latencyMS: 10, finishedAt: now),
                    ResultRow(job: 9002, status: "failed", model: nil, provider: nil, tier: nil, finishedAt: now),
                ], into: pool)
            let queued = try await QueueStore(pool: pool).submit(
                Submission(request: ["messages": [["role": "user", "content": "hi"]]]))

            let cases: [(job: Int64, score: Double, code: QueueError.Code, message: String)] = [
                (9001, 101, .invalidInput, "score must be between 0 and 100 (got 101)"),
                (9001, -1, .invalidInput, "score must be between 0 and 100 (got -1)"),
                (424_242, 50, .notFound, "job 424242 not found"),
                (queued, 50, .invalidInput, "job \(queued) has not finished yet"),
                (9002, 50, .invalidInput, "job 9002 has no answer to rate: it ended failed"),
            ]
            for check in cases {
                do {
                    try await feedback.rate(job: check.job, score: check.score)
                    Issue.record("rating job \(check.job) with \(check.score) was accepted")
                } catch let error as QueueError {
                    #expect(error.code == check.code)
                    #expect(error.message == check.message)
                    #expect(error.hint?.isEmpty == false)
                }
            }
            // From SQL a NULL id is named as such (it was "job  not found").
            do {
                try await pool.query("SELECT switchyard.feedback(NULL, 50)")
                Issue.record("a rating of job NULL was accepted")
            } catch let error as PostgresError {
                #expect(error.message == "feedback needs a job id, got NULL")
            }
            let id = try await feedback.rate(job: 9001, score: 87.5, note: "good")
            #expect(id > 0)
            let stored = try await pool.query(
                "SELECT model || ' ' || score FROM switchyard.feedback WHERE id = $1", [id]
            )
            .scalar(String.self)
            #expect(stored == "alpha 87.50")
        }
    }
}
