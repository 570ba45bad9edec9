import Foundation
import Postgres

/// Quality feedback: ratings of finished jobs' answers (`switchyard.feedback`), which shift the
/// capability scores routing uses (see `FeedbackBlend`).
public struct FeedbackStore: Sendable {
    /// The pool every statement runs on.
    public let pool: PostgresPool

    /// A store over a pool.
    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// Rates a finished job's answer.
    /// - Parameters:
    ///   - job: the job's id; it must have a result with an answering model.
    ///   - score: 0–100, 100 best (the scale of the catalog's capability scores).
    ///   - note: optional free text, up to 2000 characters.
    /// - Returns: the rating's id.
    /// - Throws: `QueueError.invalidInput` for a score out of range, a job not finished or not
    ///   answered; `QueueError.notFound` for an unknown job.
    @discardableResult
    public func rate(job: Int64, score: Double, note: String? = nil) async throws -> Int64 {
        do {
            return try await pool.query("SELECT switchyard.feedback($1, $2::numeric, $3)", [job, score, note])
                .scalar(Int64.self)
        } catch let error as PostgresError {
            throw QueueError(submissionError: error)
        }
    }

    /// The recent average rating per model and task class (`switchyard.feedback_scores`).
    public func averages() async throws -> [FeedbackAverage] {
        try await pool.query(
            """
            SELECT model, task_class, ratings, average_score FROM switchyard.feedback_scores
            ORDER BY model, task_class
            """
        ).map { row in
            FeedbackAverage(
                model: try row.decode("model"), taskClass: try row.decode("task_class", as: String?.self),
                ratings: try row.decode("ratings"), averageScore: try row.decode("average_score")
            )
        }
    }
}

/// The average rating of one model for one task class.
public struct FeedbackAverage: Sendable, Hashable {
    /// The model that answered the rated jobs.
    public var model: String
    /// The class the rated jobs ran under (nil when they had none).
    public var taskClass: String?
    /// How many ratings the average is over.
    public var ratings: Int
    /// The average, 0–100.
    public var averageScore: Double

    /// An average.
    public init(model: String, taskClass: String?, ratings: Int, averageScore: Double) {
        self.model = model
        self.taskClass = taskClass
        self.ratings = ratings
        self.averageScore = averageScore
    }
}
