import QueueModel
import Testing

/// The blending formula that turns ratings into the capability scores routing uses.
@Suite("Feedback blend")
struct FeedbackBlendTests {
    static let blend = FeedbackBlend(settings: .init(minimumRatings: 5, priorWeight: 20))

    @Test("the catalog score is a prior worth k ratings: (k × catalog + n × average) / (k + n)")
    func formula() {
        #expect(Self.blend.score(catalog: 80, ratings: 10, average: 20) == 60)
        #expect(Self.blend.score(catalog: 78, ratings: 10, average: 95) == 84)
        #expect(Self.blend.score(catalog: 80, ratings: 1000, average: 20) == 21)
    }

    @Test("too few ratings change nothing; a model without a catalog score takes the average")
    func thresholds() {
        #expect(Self.blend.score(catalog: 80, ratings: 4, average: 0) == 80)
        #expect(Self.blend.score(catalog: nil, ratings: 4, average: 90) == nil)
        #expect(Self.blend.score(catalog: nil, ratings: 5, average: 90) == 90)
    }

    @Test("ratings of classes that score by one capability are pooled under that capability")
    func pooling() {
        let catalog = Catalog(
            models: [ModelSpec(name: "m", provider: .simulated, capabilities: ["reasoning": 50, "factual": 70])],
            rules: [RouteRule(taskClass: "complex_reasoning", primary: "m")])
        let blended = Self.blend.applied(
            to: catalog,
            averages: [
                // complex_reasoning is the alias rule of class reasoning: both score by "reasoning".
                FeedbackAverage(model: "m", taskClass: "complex_reasoning", ratings: 10, averageScore: 90),
                FeedbackAverage(model: "m", taskClass: "reasoning", ratings: 10, averageScore: 70),
                // simple scores by "simple", else "factual": the blend starts from factual's 70.
                FeedbackAverage(model: "m", taskClass: "simple", ratings: 20, averageScore: 30),
                FeedbackAverage(model: "other", taskClass: "reasoning", ratings: 50, averageScore: 0),
            ])
        let scores = blended.model(named: "m")?.capabilities ?? [:]
        #expect(scores["reasoning"] == 65)  // (20 × 50 + 20 × 80) / 40
        #expect(scores["simple"] == 50)  // (20 × 70 + 20 × 30) / 40
        #expect(scores["factual"] == 70)
        #expect(blended.rules == catalog.rules)
    }
}
