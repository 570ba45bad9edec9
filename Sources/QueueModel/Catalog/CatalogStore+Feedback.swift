import Foundation
import Postgres

extension CatalogStore {
    /// The catalog with capability scores blended with quality feedback (`FeedbackBlend`), as
    /// routing uses it. One more statement on the same connection.
    static func blendingFeedback(into catalog: Catalog, on connection: PostgresConnection) async throws -> Catalog {
        let rows: PostgresRows
        do {
            rows = try await connection.query(
                """
                SELECT s.model, s.task_class, s.ratings, s.average_score,
                       coalesce(switchyard.numeric_setting('feedback_min_ratings'), 5)::float8 AS min_ratings,
                       coalesce(switchyard.numeric_setting('feedback_prior_weight'), 20)::float8 AS prior_weight
                FROM switchyard.feedback_scores s
                """
            )
        } catch let error as PostgresError
            where error.sqlState == .undefinedTable || error.sqlState == .undefinedFunction
        {
            return catalog  // a database from before migration 6 has no feedback to blend
        }
        guard let first = rows.first else { return catalog }
        let settings = FeedbackBlend.Settings(
            minimumRatings: Int(try first.decode("min_ratings", as: Double.self)),
            priorWeight: try first.decode("prior_weight", as: Double.self)
        )
        let averages = try rows.map { row in
            FeedbackAverage(
                model: try row.decode("model"), taskClass: try row.decode("task_class", as: String?.self),
                ratings: try row.decode("ratings"), averageScore: try row.decode("average_score")
            )
        }
        return FeedbackBlend(settings: settings).applied(to: catalog, averages: averages)
    }
}
