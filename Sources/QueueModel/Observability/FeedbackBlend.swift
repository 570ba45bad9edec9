import Foundation

/// How quality feedback moves the capability scores routing uses (`best_quality` ordering and
/// `quality_floor`).
///
/// For each model and capability, the ratings of every task class that scores by that capability
/// (a rule's class maps to its capability as routing does: `complex_reasoning` → `reasoning`,
/// `simple` → `simple`, …) are pooled: `n` ratings averaging `f`. Once `n ≥ minimumRatings`:
///
///     blended = (k × catalog + n × f) / (k + n)        k = priorWeight
///
/// rounded to a whole score, where `catalog` is the model's own score for the class (the first of
/// the class's capability names it has). A model without one gets `f` itself. The catalog's score
/// is a prior worth `k` ratings: a few ratings nudge it, many ratings outweigh it. The blended
/// score is stored under the class's first capability name; the catalog in the database is not
/// changed.
public struct FeedbackBlend: Sendable {
    /// The blending parameters (`feedback_min_ratings`, `feedback_prior_weight` in
    /// `switchyard.settings`).
    public struct Settings: Sendable, Hashable {
        /// Ratings a model needs for a class before they count.
        public var minimumRatings: Int
        /// How many ratings the catalog's score is worth.
        public var priorWeight: Double

        /// Settings; the defaults are the migration's.
        public init(minimumRatings: Int = 5, priorWeight: Double = 20) {
            self.minimumRatings = max(1, minimumRatings)
            self.priorWeight = max(0, priorWeight)
        }
    }

    /// The blending parameters.
    public var settings: Settings

    /// A blend with these settings.
    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    /// The blended score of one capability.
    /// - Parameters:
    ///   - catalog: the catalog's score, or nil when the model has none.
    ///   - ratings: how many ratings.
    ///   - average: their average (0–100).
    /// - Returns: the score to route by; the catalog's when there are too few ratings.
    public func score(catalog: Int?, ratings: Int, average: Double) -> Int? {
        guard ratings >= settings.minimumRatings else { return catalog }
        guard let catalog else { return Int(average.rounded()) }
        let weight = settings.priorWeight
        let blended = (weight * Double(catalog) + Double(ratings) * average) / (weight + Double(ratings))
        return min(100, max(0, Int(blended.rounded())))
    }

    /// The catalog with every rated model's scores blended.
    /// - Parameter averages: ratings per model and task class.
    public func applied(to catalog: Catalog, averages: [FeedbackAverage]) -> Catalog {
        guard !averages.isEmpty else { return catalog }
        let matcher = RuleMatcher(catalog: catalog)
        // Pool the classes that score by the same capability: (model, capability) → (n, sum).
        var pooled: [String: [String: (ratings: Int, sum: Double, scoring: TaskClass)]] = [:]
        for average in averages where average.ratings > 0 {
            let taskClass = TaskClass(average.taskClass ?? TaskClass.general.rawValue)
            let scoring = matcher.match(taskClass)?.scoringClass ?? taskClass
            let capability = scoring.capabilityNames[0]
            var entry = pooled[average.model, default: [:]][capability] ?? (0, 0, scoring)
            entry.ratings += average.ratings
            entry.sum += average.averageScore * Double(average.ratings)
            pooled[average.model, default: [:]][capability] = entry
        }
        let models = catalog.models.map { model -> ModelSpec in
            guard let capabilities = pooled[model.name] else { return model }
            var blended = model
            for (capability, entry) in capabilities {
                let catalogScore = entry.scoring.score(of: model)
                if let score = score(
                    catalog: catalogScore, ratings: entry.ratings, average: entry.sum / Double(entry.ratings))
                {
                    blended.capabilities[capability] = score
                }
            }
            return blended
        }
        return Catalog(models: models, rules: catalog.rules)
    }
}
