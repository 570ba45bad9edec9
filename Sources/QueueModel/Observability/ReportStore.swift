import Foundation
import Postgres

/// The time series behind `dispatcher report --html`: per time bucket, each model's call latency
/// percentiles and the cost of the jobs it answered, the tier mix and the fallback rate.
public struct ReportStore: Sendable {
    /// One model in one bucket.
    public struct ModelPoint: Sendable, Hashable {
        /// The start of the bucket.
        public var bucket: Date
        /// The model.
        public var model: String
        /// Calls made to it (cancelled ones left out).
        public var calls: Int
        /// Percentiles of calls that answered or timed out, in milliseconds.
        public var latencyP50MS: Double?
        /// The 95th percentile, in milliseconds.
        public var latencyP95MS: Double?
        /// The 99th percentile, in milliseconds.
        public var latencyP99MS: Double?
        /// Jobs it answered, and what they cost.
        public var answered: Int
        /// What those jobs cost.
        public var cost: Decimal
    }

    /// All jobs in one bucket.
    public struct BucketPoint: Sendable, Hashable {
        /// The start of the bucket.
        public var bucket: Date
        /// Jobs that finished in the bucket (cancelled ones left out).
        public var jobs: Int
        /// Jobs whose trail names more than one model.
        public var fellBack: Int
        /// Jobs by the tier of the call that answered them (`none` for jobs that failed).
        public var tiers: [String: Int]

        /// fellBack / jobs, nil without jobs.
        public var fallbackRate: Double? { jobs > 0 ? Double(fellBack) / Double(jobs) : nil }
    }

    /// Everything a report shows.
    public struct Series: Sendable {
        /// The start of every bucket, oldest first (buckets without jobs included).
        public var buckets: [Date]
        /// The length of each bucket.
        public var bucketLength: Duration
        /// Each model in each bucket where it was called or answered.
        public var models: [ModelPoint]
        /// Every bucket that had jobs.
        public var totals: [BucketPoint]
        /// Per-model summary over the whole range.
        public var summary: [ModelStats]
    }

    /// The pool every statement runs on.
    public let pool: PostgresPool

    /// A store over a pool.
    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// The series for `window` ending at `at` (default: the database's now), in buckets of
    /// `bucket`.
    public func series(window: Duration, bucket: Duration, at: Date? = nil) async throws -> Series {
        let end = try await pool.query("SELECT coalesce($1::timestamptz, now())", [at]).scalar(Date.self)
        let start = end.addingTimeInterval(-window.seconds)
        let binds: [(any PostgresEncodable)?] = [start, end, bucket.seconds]
        // Without JIT, as the windowed statistics (sql/0074): compiling cost more than it saved.
        let calls = try await pool.withTransaction { connection in
            try await connection.query("SET LOCAL jit = off")
            return try await connection.query(
                """
                SELECT date_bin(make_interval(secs => $3), c.ended_at, $1::timestamptz) AS bucket,
                       c.model, count(*) AS calls,
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                           ORDER BY CASE WHEN c.outcome IN ('succeeded', 'timeout') THEN c.latency_ms END) AS latency
                FROM (SELECT k.*,
                             -- A call of a job created in its finish's bucket ended in that bucket too:
                             -- its trail's time (two date parses a call) is read only for the others.
                             CASE WHEN date_bin(make_interval(secs => $3), k.job_created_at, $1::timestamptz)
                                       = date_bin(make_interval(secs => $3), k.finished_at, $1::timestamptz)
                                  THEN k.finished_at
                                  ELSE coalesce(k.called_at + make_interval(secs => coalesce(k.latency_ms, 0) / 1000),
                                                k.finished_at) END AS ended_at
                      FROM switchyard.calls k
                      WHERE k.finished_at > $1::timestamptz AND k.finished_at <= $2::timestamptz
                            AND k.outcome NOT IN ('cancelled', 'deadline')) c
                -- When the call ended (a retried job's early calls belong to their own time).
                WHERE c.ended_at > $1::timestamptz
                GROUP BY 1, 2
                """, binds)
        }
        let answered = try await pool.query(
            """
            SELECT date_bin(make_interval(secs => $3), r.finished_at, $1::timestamptz) AS bucket,
                   coalesce(r.model, '') AS model, coalesce(r.tier, 'none') AS tier, count(*) AS jobs,
                   count(*) FILTER (WHERE switchyard.fell_back(r.attempts)) AS fell_back,
                   coalesce(sum(r.cost), 0) AS cost
            FROM switchyard.results r
            WHERE r.finished_at > $1::timestamptz AND r.finished_at <= $2::timestamptz AND r.status <> 'cancelled'
            GROUP BY 1, 2, 3
            """, binds)
        var points: [String: ModelPoint] = [:]
        for row in calls {
            let bucket = try row.decode("bucket", as: Date.self)
            let model = try row.decode("model", as: String.self)
            let latency = Self.percentiles(try row.decode("latency", as: String?.self))
            points["\(bucket.timeIntervalSince1970)/\(model)"] = ModelPoint(
                bucket: bucket, model: model, calls: try row.decode("calls"), latencyP50MS: latency[0],
                latencyP95MS: latency[1], latencyP99MS: latency[2], answered: 0, cost: 0)
        }
        var totals: [Date: BucketPoint] = [:]
        for row in answered {
            let bucket = try row.decode("bucket", as: Date.self)
            let model = try row.decode("model", as: String.self)
            let jobs = try row.decode("jobs", as: Int.self)
            var total = totals[bucket] ?? BucketPoint(bucket: bucket, jobs: 0, fellBack: 0, tiers: [:])
            total.jobs += jobs
            total.fellBack += try row.decode("fell_back", as: Int.self)
            total.tiers[try row.decode("tier", as: String.self), default: 0] += jobs
            totals[bucket] = total
            guard !model.isEmpty else { continue }
            let key = "\(bucket.timeIntervalSince1970)/\(model)"
            var point = points[key] ?? ModelPoint(bucket: bucket, model: model, calls: 0, answered: 0, cost: 0)
            point.answered += jobs
            point.cost += try row.decode("cost", as: Decimal.self)
            points[key] = point
        }
        var buckets: [Date] = []
        var cursor = start
        while cursor < end {
            buckets.append(cursor)
            cursor = cursor.addingTimeInterval(bucket.seconds)
        }
        let summary = try await ObservabilityStore(pool: pool).modelStats(window: window, at: end)
        return Series(
            buckets: buckets, bucketLength: bucket,
            models: points.values.sorted { ($0.bucket, $0.model) < ($1.bucket, $1.model) },
            totals: totals.values.sorted { $0.bucket < $1.bucket }, summary: summary)
    }

    /// `{1.5,2,3}` (a float8[] in text form) as three optional numbers.
    static func percentiles(_ text: String?) -> [Double?] {
        guard let text else { return [nil, nil, nil] }
        let values = text.trimmingCharacters(in: CharacterSet(charactersIn: "{}")).split(separator: ",").map {
            Double($0.trimmingCharacters(in: .whitespaces))
        }
        return (0..<3).map { values.indices.contains($0) ? values[$0] : nil }
    }
}
