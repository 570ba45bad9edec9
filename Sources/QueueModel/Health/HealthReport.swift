import Foundation

/// One worker's outcomes for one model since its last report, folded into the fleet's breaker by
/// `switchyard.report_health`.
public struct HealthReport: Sendable, Hashable {
    public var model: String
    public var requests = 0
    public var failures = 0
    /// Whether any call succeeded in this batch.
    public var hadSuccess = false
    /// Failures after the batch's last success.
    public var trailingFailures = 0
    /// Latencies of this batch's calls, in milliseconds.
    public var latenciesMS: [Double] = []
    /// Set to open the breaker at once (bad key, quota gone, model not found).
    public var markUnhealthy: String?
    /// The reporting worker's failures in a row on the model, in the order its calls started,
    /// counting only failures every earlier-started call of which has ended (`report_health`
    /// takes it for the model's consecutive failures; without it, the batch's own count).
    public var failuresInARow: Int?
    /// The reporting worker's id: an answered call takes it off the model's refused workers.
    public var worker: String?
    /// Why the provider refused the reporting worker (a 401 or 403): the fleet opens the breaker
    /// once every live worker has been refused (without `worker`, at once).
    public var refused: String?

    public init(model: String) {
        self.model = model
    }

    /// Counts one call.
    public mutating func record(success: Bool, latencyMS: Double?) {
        requests += 1
        if success {
            hadSuccess = true
            trailingFailures = 0
        } else {
            failures += 1
            trailingFailures += 1
        }
        if let latencyMS { latenciesMS.append(latencyMS) }
    }

    var json: JSONValue {
        var object: [String: JSONValue] = [
            "model": .string(model), "requests": .number(Double(requests)), "failures": .number(Double(failures)),
            "had_success": .bool(hadSuccess), "trailing_failures": .number(Double(trailingFailures)),
        ]
        if !latenciesMS.isEmpty {
            let sorted = latenciesMS.sorted()
            object["latency_mean_ms"] = .number(sorted.reduce(0, +) / Double(sorted.count))
            object["latency_p95_ms"] = .number(sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.95))])
        }
        if let markUnhealthy { object["mark_unhealthy"] = .string(markUnhealthy) }
        if let failuresInARow { object["failures_in_a_row"] = .number(Double(failuresInARow)) }
        if let worker { object["worker"] = .string(worker) }
        if let refused { object["refused"] = .string(refused) }
        return .object(object)
    }
}
