import Foundation
import Postgres
import QueueModel

/// Finished jobs written straight into `switchyard.results`, with the latencies, trails and finish
/// times a test chooses: a known data set for the observability views and a scripted breach for
/// the alerts.
struct ResultRow {
    var job: Int64
    var status = "succeeded"
    var priority = "interactive"
    var taskClass: String?
    var model: String?
    var provider: String? = "simulated"
    var tier: String? = "primary"
    var latencyMS: Double?
    var queueWaitMS: Double?
    var cost: Double?
    var tokensIn: Int?
    var tokensOut: Int?
    var finishedAt: Date
    var trail: [JSONValue] = []
    /// When the job was created (default: 2 s before it finished). A call whose trail says it was
    /// made earlier needs a job created before it: windows count a job created in them whole.
    var createdAt: Date?
    /// `{"code", "message"}` of a failed job.
    var error: JSONValue?

    /// One trail entry: a call to `model` as `tier`, and how it went.
    static func call(
        _ model: String, tier: String = "primary", outcome: String = "succeeded", latencyMS: Double,
        httpStatus: Int? = nil, provider: String = "simulated", targetMS: JSONValue? = nil, at: Date? = nil
    ) -> JSONValue {
        var entry: JSONValue = [
            "attempt": 1, "model": .string(model), "provider": .string(provider), "tier": .string(tier),
            "outcome": .string(outcome), "latency_ms": .number(latencyMS), "worker": "test",
        ]
        if let httpStatus { entry["http_status"] = .number(Double(httpStatus)) }
        if let targetMS { entry["target_ms"] = targetMS }
        if let at { entry["at"] = .string(at.postgresText) }
        return entry
    }

    var json: JSONValue {
        var object: [String: JSONValue] = [
            "job_id": .number(Double(job)), "status": .string(status), "priority": .string(priority),
            "finished_at": .string(finishedAt.postgresText), "attempts": .array(trail),
            "created_at": .string((createdAt ?? finishedAt.addingTimeInterval(-2)).postgresText),
        ]
        if let taskClass { object["task_class"] = .string(taskClass) }
        if let error { object["error"] = error }
        if let model { object["model"] = .string(model) }
        if let provider { object["provider"] = .string(provider) }
        if let tier { object["tier"] = .string(tier) }
        if let latencyMS { object["latency_ms"] = .number(latencyMS) }
        if let queueWaitMS { object["queue_wait_ms"] = .number(queueWaitMS) }
        if let cost { object["cost"] = .number(cost) }
        if let tokensIn { object["tokens_in"] = .number(Double(tokensIn)) }
        if let tokensOut { object["tokens_out"] = .number(Double(tokensOut)) }
        return .object(object)
    }

    /// Inserts the rows in one statement.
    static func insert(_ rows: [ResultRow], into pool: PostgresPool) async throws {
        try await pool.query(
            """
            INSERT INTO switchyard.results
                (job_id, status, priority, task_class, model, provider, tier, request, error, attempts, attempt_count,
                 latency_ms, queue_wait_ms, cost, tokens_in, tokens_out, created_at, started_at, finished_at, worker)
            SELECT x.job_id, x.status, x.priority, x.task_class, x.model, x.provider, x.tier,
                   '{"messages":[{"role":"user","content":"test"}]}', x.error, coalesce(x.attempts, '[]'), 1, x.latency_ms,
                   x.queue_wait_ms, x.cost, x.tokens_in, x.tokens_out, x.created_at,
                   x.finished_at - interval '1 second', x.finished_at, 'test'
            FROM jsonb_to_recordset($1::jsonb) AS x(
                job_id bigint, status text, priority text, task_class text, model text, provider text, tier text,
                error jsonb, attempts jsonb, latency_ms double precision, queue_wait_ms double precision, cost numeric,
                tokens_in integer, tokens_out integer, finished_at timestamptz, created_at timestamptz)
            """,
            [JSONValue.array(rows.map(\.json)).jsonText]
        )
    }

    /// The database's clock, to the second.
    static func databaseNow(_ pool: PostgresPool) async throws -> Date {
        try await pool.query("SELECT date_trunc('second', now())").scalar(Date.self)
    }
}

/// `percentile_cont`: linear interpolation between the two closest ranks.
func percentileCont(_ values: [Double], _ fraction: Double) -> Double {
    let sorted = values.sorted()
    let position = fraction * Double(sorted.count - 1)
    let lower = Int(position.rounded(.down))
    let upper = min(lower + 1, sorted.count - 1)
    return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - Double(lower))
}
