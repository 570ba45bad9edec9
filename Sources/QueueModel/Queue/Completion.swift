import Foundation
import Postgres

/// One outcome for `switchyard.complete`: the end of a job, a retry later, or a release.
public struct Completion: Sendable {
    public enum Kind: String, Sendable {
        /// The job ends with `status`; it moves to results.
        case result
        /// The job goes back to the queue until `retryAt`; the attempt counts.
        case retry
        /// The job goes back to the queue now; the attempt does not count (shutdown).
        case release
        /// The job goes back to the queue until `retryAt`; the attempt does not count (a
        /// background job that no model may run now waits for the next price window).
        case postpone
    }

    public var jobID: Int64
    /// The attempt this outcome belongs to: with the worker's id, the fence.
    public var attempt: Int
    public var kind: Kind
    /// `succeeded`, `failed` or `cancelled`, for `.result`.
    public var status: String?
    public var taskClass: String?
    public var model: String?
    public var provider: String?
    public var tier: String?
    public var response: JSONValue?
    public var error: JSONValue?
    /// This attempt's trail entries, appended to the job's.
    public var trail: [AttemptRecord]
    public var tokensIn: Int?
    public var tokensOut: Int?
    /// Exact; sent as a decimal string so it never passes through a Double.
    public var cost: Decimal?
    /// The same call on the same model at its list (peak) price.
    public var baseCost: Decimal?
    /// The same call on the rule's primary model at its list price: the savings baseline.
    public var primaryCost: Decimal?
    public var latencyMS: Double?
    public var metadata: [String: JSONValue]
    public var retryAt: Date?

    public init(
        jobID: Int64, attempt: Int, kind: Kind, status: String? = nil, taskClass: String? = nil,
        model: String? = nil, provider: String? = nil, tier: String? = nil, response: JSONValue? = nil,
        error: JSONValue? = nil, trail: [AttemptRecord] = [], tokensIn: Int? = nil, tokensOut: Int? = nil,
        cost: Decimal? = nil, baseCost: Decimal? = nil, primaryCost: Decimal? = nil, latencyMS: Double? = nil, metadata: [String: JSONValue] = [:], retryAt: Date? = nil
    ) {
        self.jobID = jobID
        self.attempt = attempt
        self.kind = kind
        self.status = status
        self.taskClass = taskClass
        self.model = model
        self.provider = provider
        self.tier = tier
        self.response = response
        self.error = error
        self.trail = trail
        self.tokensIn = tokensIn
        self.tokensOut = tokensOut
        self.cost = cost
        self.baseCost = baseCost
        self.primaryCost = primaryCost
        self.latencyMS = latencyMS
        self.metadata = metadata
        self.retryAt = retryAt
    }

    /// Writes the item as `switchyard.complete` reads it (`jsonb_to_recordset`), straight to
    /// UTF-8: a batch of these is written per write-back, so no intermediate `JSONValue` tree.
    func write(into output: inout [UInt8]) {
        var object = JSONObjectWriter(into: &output)
        object.number("id", Double(jobID), into: &output)
        object.number("attempt", Double(attempt), into: &output)
        object.text("kind", kind.rawValue, into: &output)
        object.text("status", status, into: &output)
        object.text("task_class", taskClass, into: &output)
        object.text("model", model, into: &output)
        object.text("provider", provider, into: &output)
        object.text("tier", tier, into: &output)
        object.json("response", response, into: &output)
        object.json("error", error, into: &output)
        object.key("trail", into: &output)
        output.append(0x5B)
        for (index, record) in trail.enumerated() {
            if index > 0 { output.append(0x2C) }
            record.write(into: &output)
        }
        output.append(0x5D)
        object.number("tokens_in", tokensIn.map(Double.init), into: &output)
        object.number("tokens_out", tokensOut.map(Double.init), into: &output)
        // Money as decimal strings: never through a Double. The three are often equal (no
        // off-peak window, the primary model answered): formatted once.
        let costText = cost?.description
        let baseCostText = baseCost == cost ? costText : baseCost?.description
        object.text("cost", costText, into: &output)
        object.text("base_cost", baseCostText, into: &output)
        object.text("primary_cost", primaryCost == baseCost ? baseCostText : primaryCost?.description, into: &output)
        object.number("latency_ms", latencyMS, into: &output)
        if !metadata.isEmpty { object.json("metadata", .object(metadata), into: &output) }
        object.text("retry_at", retryAt?.postgresText, into: &output)
        object.close(into: &output)
    }

    /// A batch as the JSON array `switchyard.complete` takes.
    static func jsonText(_ batch: [Completion]) -> String {
        var output: [UInt8] = [0x5B]
        output.reserveCapacity(batch.count * 700)
        for (index, completion) in batch.enumerated() {
            if index > 0 { output.append(0x2C) }
            completion.write(into: &output)
        }
        output.append(0x5D)
        return String(decoding: output, as: UTF8.self)
    }
}
