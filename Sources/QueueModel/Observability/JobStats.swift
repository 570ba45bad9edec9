import Foundation
import Postgres

/// Jobs finished over a window for one slice of the fleet, as `switchyard.job_stats(window, at)`
/// reports it: the whole fleet (`total`), a priority, or the model, provider or tier that answered.
public struct JobStats: Sendable, Hashable {
    /// `total`, `priority`, `model`, `provider` or `tier`.
    public var dimension: String
    /// The slice: `all`, `interactive`, a model name, … (`(none)` for failed jobs' model).
    public var subject: String
    /// Jobs that ended (cancelled ones left out), and how.
    public var jobs: Int
    /// Jobs that ended with an answer.
    public var succeeded: Int
    /// Jobs that ended as failed.
    public var failed: Int
    /// Jobs not started before their deadline.
    public var expired: Int
    /// (failed + expired) / jobs.
    public var errorRate: Double
    /// Jobs that met a timeout on some call / jobs.
    public var timeoutRate: Double
    /// Jobs whose trail names more than one model / jobs.
    public var fallbackRate: Double
    /// Job latency percentiles (claim to result), in milliseconds.
    public var latencyP50MS: Double?
    /// The 95th percentile of job latency, in milliseconds.
    public var latencyP95MS: Double?
    /// The 99th percentile of job latency, in milliseconds.
    public var latencyP99MS: Double?
    /// Queue wait percentiles (runnable to claimed), in milliseconds.
    public var queueWaitP50MS: Double?
    /// The 95th percentile of queue wait, in milliseconds.
    public var queueWaitP95MS: Double?
    /// The 99th percentile of queue wait, in milliseconds.
    public var queueWaitP99MS: Double?
    /// What the jobs cost in total.
    public var cost: Decimal
    /// The average cost of the jobs that have one.
    public var costPerRequest: Decimal?
    /// Prompt tokens.
    public var tokensIn: Int
    /// Completion tokens.
    public var tokensOut: Int
    /// Jobs per minute over the window.
    public var jobsPerMinute: Double

    /// The `total` row of a window in which no job finished (SQL returns no row then): zero jobs,
    /// zero cost and rates, no percentiles. Its JSON has the keys a busy window's has.
    public static let emptyTotal = JobStats(
        dimension: "total", subject: "all", jobs: 0, succeeded: 0, failed: 0, expired: 0, errorRate: 0,
        timeoutRate: 0, fallbackRate: 0, cost: 0, tokensIn: 0, tokensOut: 0, jobsPerMinute: 0)

    private init(
        dimension: String, subject: String, jobs: Int, succeeded: Int, failed: Int, expired: Int, errorRate: Double,
        timeoutRate: Double, fallbackRate: Double, cost: Decimal, tokensIn: Int, tokensOut: Int, jobsPerMinute: Double
    ) {
        self.dimension = dimension
        self.subject = subject
        self.jobs = jobs
        self.succeeded = succeeded
        self.failed = failed
        self.expired = expired
        self.errorRate = errorRate
        self.timeoutRate = timeoutRate
        self.fallbackRate = fallbackRate
        self.cost = cost
        self.tokensIn = tokensIn
        self.tokensOut = tokensOut
        self.jobsPerMinute = jobsPerMinute
    }

    init(row: PostgresRow) throws {
        dimension = try row.decode("dimension")
        subject = try row.decode("subject")
        jobs = try row.decode("jobs")
        succeeded = try row.decode("succeeded")
        failed = try row.decode("failed")
        expired = try row.decode("expired")
        errorRate = try row.decode("error_rate")
        timeoutRate = try row.decode("timeout_rate")
        fallbackRate = try row.decode("fallback_rate")
        latencyP50MS = try row.decode("latency_p50_ms", as: Double?.self)
        latencyP95MS = try row.decode("latency_p95_ms", as: Double?.self)
        latencyP99MS = try row.decode("latency_p99_ms", as: Double?.self)
        queueWaitP50MS = try row.decode("queue_wait_p50_ms", as: Double?.self)
        queueWaitP95MS = try row.decode("queue_wait_p95_ms", as: Double?.self)
        queueWaitP99MS = try row.decode("queue_wait_p99_ms", as: Double?.self)
        cost = try row.decode("cost")
        costPerRequest = try row.decode("cost_per_request", as: Decimal?.self)
        tokensIn = try row.decode("tokens_in")
        tokensOut = try row.decode("tokens_out")
        jobsPerMinute = try row.decode("jobs_per_minute")
    }

    /// The stats as JSON (snake_case keys, as in SQL).
    public var json: JSONValue {
        [
            "dimension": .string(dimension), "subject": .string(subject), "jobs": .number(Double(jobs)),
            "succeeded": .number(Double(succeeded)), "failed": .number(Double(failed)),
            "expired": .number(Double(expired)), "error_rate": .optional(errorRate),
            "timeout_rate": .optional(timeoutRate), "fallback_rate": .optional(fallbackRate),
            "latency_p50_ms": .optional(latencyP50MS), "latency_p95_ms": .optional(latencyP95MS),
            "latency_p99_ms": .optional(latencyP99MS), "queue_wait_p50_ms": .optional(queueWaitP50MS),
            "queue_wait_p95_ms": .optional(queueWaitP95MS), "queue_wait_p99_ms": .optional(queueWaitP99MS),
            "cost": .number(cost), "cost_per_request": costPerRequest.map(JSONValue.number) ?? .null,
            "tokens_in": .number(Double(tokensIn)), "tokens_out": .number(Double(tokensOut)),
            "jobs_per_minute": .optional(jobsPerMinute),
        ]
    }
}
