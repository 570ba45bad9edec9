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
        /// background job waiting for a cheaper price).
        case postpone
        /// As `postpone`, for a job whose rule's models are all out for now: it waits for one to
        /// come back, and the queue keeps when it began to wait (`jobs.waiting_since`).
        case wait
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
    /// For `.postpone` and `.wait`: the background policy's version it was decided under (not kept if the
    /// policy has changed since; see `BackgroundPolicy.version`).
    public var policy: String?

    /// A job that ends as cancelled by its user while this attempt ran.
    public static func cancelledWhileRunning(jobID: Int64, attempt: Int, trail: [AttemptRecord]) -> Completion {
        Completion(
            jobID: jobID, attempt: attempt, kind: .result, status: "cancelled",
            error: ["code": "cancelled", "message": "cancelled while running"], trail: trail
        )
    }

    /// What the queue wrote instead of this retry, postponement or release when the job had been
    /// asked to cancel while the attempt ran (see `QueueStore.complete`).
    public var cancelledWhileRunning: Completion {
        Self.cancelledWhileRunning(jobID: jobID, attempt: attempt, trail: trail)
    }

    public init(
        jobID: Int64, attempt: Int, kind: Kind, status: String? = nil, taskClass: String? = nil,
        model: String? = nil, provider: String? = nil, tier: String? = nil, response: JSONValue? = nil,
        error: JSONValue? = nil, trail: [AttemptRecord] = [], tokensIn: Int? = nil, tokensOut: Int? = nil,
        cost: Decimal? = nil, baseCost: Decimal? = nil, primaryCost: Decimal? = nil, latencyMS: Double? = nil, metadata: [String: JSONValue] = [:], retryAt: Date? = nil,
        policy: String? = nil
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
        self.policy = policy
    }

    /// A batch as the bind parameters of `switchyard.complete`'s array form (after the worker's
    /// id): one binary array per column, so the server parses no JSON but what it stores as jsonb.
    static func columns(_ batch: [Completion]) -> [PostgresBinaryArray] {
        var ids = PostgresBinaryArray(of: .int8, capacity: batch.count)
        var attempts = PostgresBinaryArray(of: .int4, capacity: batch.count)
        var kinds = PostgresBinaryArray(of: .text, capacity: batch.count)
        var statuses = PostgresBinaryArray(of: .text, capacity: batch.count)
        var taskClasses = PostgresBinaryArray(of: .text, capacity: batch.count)
        var models = PostgresBinaryArray(of: .text, capacity: batch.count)
        var providers = PostgresBinaryArray(of: .text, capacity: batch.count)
        var tiers = PostgresBinaryArray(of: .text, capacity: batch.count)
        var responses = PostgresBinaryArray(of: .jsonb, capacity: batch.count * 50)
        var errors = PostgresBinaryArray(of: .jsonb, capacity: batch.count)
        var trails = PostgresBinaryArray(of: .jsonb, capacity: batch.count * 20)
        // As bigint, cast to integer by the statement: a count beyond `integer` is refused there
        // (and the writer records the outcome as not storable), never silently clamped here.
        var tokensIn = PostgresBinaryArray(of: .int8, capacity: batch.count)
        var tokensOut = PostgresBinaryArray(of: .int8, capacity: batch.count)
        // Money as decimal text (cast to numeric by the statement): never through a Double.
        var costs = PostgresBinaryArray(of: .text, capacity: batch.count)
        var baseCosts = PostgresBinaryArray(of: .text, capacity: batch.count)
        var primaryCosts = PostgresBinaryArray(of: .text, capacity: batch.count)
        var latencies = PostgresBinaryArray(of: .float8, capacity: batch.count)
        var metadata = PostgresBinaryArray(of: .jsonb, capacity: batch.count)
        var retryAt = PostgresBinaryArray(of: .timestamptz, capacity: batch.count)
        var policies = PostgresBinaryArray(of: .text, capacity: batch.count)
        for completion in batch {
            ids.append(completion.jobID)
            attempts.append(Int32(clamping: completion.attempt))
            kinds.append(completion.kind.rawValue)
            statuses.append(completion.status.map(storable))
            taskClasses.append(completion.taskClass.map(storable))
            models.append(completion.model.map(storable))
            providers.append(completion.provider.map(storable))
            tiers.append(completion.tier.map(storable))
            if let response = completion.response {
                responses.appendJSON { response.write(into: &$0, storable: true) }
            } else {
                responses.appendNull()
            }
            if let error = completion.error {
                errors.appendJSON { error.write(into: &$0, storable: true) }
            } else {
                errors.appendNull()
            }
            trails.appendJSON { output in
                output.append(0x5B)
                for (index, record) in completion.trail.enumerated() {
                    if index > 0 { output.append(0x2C) }
                    record.write(into: &output)
                }
                output.append(0x5D)
            }
            tokensIn.append(completion.tokensIn.map(Int64.init))
            tokensOut.append(completion.tokensOut.map(Int64.init))
            // The three are often equal (no off-peak window, the primary model answered):
            // formatted once.
            let cost = completion.cost?.description
            let baseCost = completion.baseCost == completion.cost ? cost : completion.baseCost?.description
            costs.append(cost)
            baseCosts.append(baseCost)
            primaryCosts.append(
                completion.primaryCost == completion.baseCost ? baseCost : completion.primaryCost?.description)
            latencies.append(completion.latencyMS.map(Completion.toMicroseconds))
            if completion.metadata.isEmpty {
                metadata.appendNull()
            } else {
                metadata.appendJSON { JSONValue.object(completion.metadata).write(into: &$0, storable: true) }
            }
            retryAt.append(completion.retryAt)
            policies.append(completion.policy)
        }
        return [
            ids, attempts, kinds, statuses, taskClasses, models, providers, tiers, responses, errors, trails, tokensIn,
            tokensOut, costs, baseCosts, primaryCosts, latencies, metadata, retryAt, policies,
        ]
    }

    /// Milliseconds to the microsecond, as results and trails keep them (the raw difference of
    /// two clock readings read back as 447.44812299999995).
    static func toMicroseconds(_ milliseconds: Double) -> Double { (milliseconds * 1000).rounded() / 1000 }

    /// Postgres text cannot hold U+0000: written as U+FFFD, as in the JSON documents.
    private static func storable(_ text: String) -> String {
        text.utf8.contains(0) ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
    }
}
