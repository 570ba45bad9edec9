import Testing

import QueueModel

@Suite("Health reports")
struct HealthReportTests {
    @Test("a report that could not be sent goes before the calls counted since, as if sent together")
    func prepend() {
        var earlier = HealthReport(model: "m")
        earlier.record(success: true, latencyMS: 10)
        earlier.record(success: false, latencyMS: 20)
        earlier.markUnhealthy = "invalid key"
        var later = HealthReport(model: "m")
        later.record(success: false, latencyMS: 30)
        var together = HealthReport(model: "m")
        together.record(success: true, latencyMS: 10)
        together.record(success: false, latencyMS: 20)
        together.record(success: false, latencyMS: 30)
        together.markUnhealthy = "invalid key"

        later.prepend(earlier)
        #expect(later == together)
        #expect(later.trailingFailures == 2)

        // A success since resets the failures in a row.
        var recovered = HealthReport(model: "m")
        recovered.record(success: true, latencyMS: 5)
        recovered.prepend(earlier)
        #expect(recovered.trailingFailures == 0 && recovered.requests == 3 && recovered.failures == 1)
        #expect(recovered.latenciesMS == [10, 20, 5])
    }
}
