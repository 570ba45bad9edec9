import Foundation
import Postgres

/// A job's priority, which is also its partition of `switchyard.jobs`.
public enum Priority: String, Sendable, Hashable, Codable, CaseIterable {
    /// A person waits for the answer: seconds matter.
    case interactive
    /// Batch work: cost matters.
    case background
}

/// A job a worker has claimed: its request and what it needs to run it and to write it back.
public struct Job: Sendable, Hashable {
    public var id: Int64
    public var priority: Priority
    public var taskClass: String?
    public var affinityKey: String?
    /// Whose job it is (`switchyard.tenant_roles`); nil for an operator's.
    public var tenant: String?
    public var request: JSONValue
    /// This attempt's number (1 for the first); with the worker's id, it fences the write-back.
    public var attempt: Int
    public var maxAttempts: Int
    public var runAt: Date
    public var deadline: Date?
    public var claimedAt: Date?
    public var createdAt: Date
    /// When an interactive job put back to wait for a model began to wait (nil until then).
    public var waitingSince: Date?
    /// Why the worker could not read the stored request (`request` is then null): a number
    /// beyond a double's range, which jsonb accepts, or nesting past the parser's limit. The
    /// job fails alone instead of failing the claim that brought it.
    public var unreadableRequest: String?
    /// Whether its tenant has a cap on its running jobs or its starts a minute (`sql/0096`), as
    /// the claim found it: such a job was claimed out of the queue's order, and its end may let
    /// another of the tenant's start.
    public var tenantCapped = false
    /// The models whose calls failed in this attempt on another worker, which passed the job on
    /// (model errors, timeouts, quota, a request they do not take), as the claim found them: not
    /// called again while the plan has others (a review's receiving worker called the primary that
    /// had just failed before the fallback it was passed on for).
    public var failedElsewhere: Set<String> = []

    public init(
        id: Int64, priority: Priority, taskClass: String? = nil, affinityKey: String? = nil, tenant: String? = nil,
        request: JSONValue,
        attempt: Int = 1, maxAttempts: Int = 3, runAt: Date = Date(), deadline: Date? = nil,
        claimedAt: Date? = nil, createdAt: Date = Date(), waitingSince: Date? = nil
    ) {
        self.waitingSince = waitingSince
        self.id = id
        self.priority = priority
        self.taskClass = taskClass
        self.affinityKey = affinityKey
        self.tenant = tenant
        self.request = request
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.runAt = runAt
        self.deadline = deadline
        self.claimedAt = claimedAt
        self.createdAt = createdAt
    }

    /// The columns `init(row:)` reads: what a claim returns.
    static let columns = """
        id, priority, task_class, affinity_key, request, attempt, max_attempts, run_at, deadline, claimed_at, created_at,
        waiting_since, tenant
        """

    /// Decodes a row of `switchyard.jobs` with (at least) `columns`.
    init(row: PostgresRow) throws {
        let priorityText = try row.decode("priority", as: String.self)
        guard let priority = Priority(rawValue: priorityText) else {
            throw QueueError(.database, "job has unknown priority \(priorityText)")
        }
        let requestText = try row.decode("request", as: String.self)
        var unreadable: String?
        let request: JSONValue
        do {
            request = try JSONValue(parsing: requestText)
        } catch {
            request = .null
            // The message alone: a QueueError's description carries its hint on a line of its own,
            // and the failure's message says what to do itself.
            unreadable = (error as? QueueError)?.message ?? "\(error)"
        }
        self.init(
            id: try row.decode("id"), priority: priority, taskClass: try row.decode("task_class", as: String?.self),
            affinityKey: try row.decode("affinity_key", as: String?.self),
            tenant: try row.decode("tenant", as: String?.self), request: request,
            attempt: try row.decode("attempt"), maxAttempts: try row.decode("max_attempts"),
            runAt: try row.decode("run_at"), deadline: try row.decode("deadline", as: Date?.self),
            claimedAt: try row.decode("claimed_at", as: Date?.self), createdAt: try row.decode("created_at"),
            waitingSince: try row.decode("waiting_since", as: Date?.self)
        )
        unreadableRequest = unreadable
    }
}

/// One entry of a job's trail: a model tried, and how it went.
public struct AttemptRecord: Sendable, Hashable, Codable {
    /// The job attempt this call belonged to.
    public var attempt: Int
    public var model: String?
    public var provider: String?
    public var tier: String?
    /// `succeeded`, `error`, `timeout`, `rate_limited`, `cancelled`, …
    public var outcome: String
    public var httpStatus: Int?
    public var latencyMS: Double?
    /// The call's latency target when its rule set one (`max_latency_ms`, on a primary call): the
    /// latency alert judges the call by it instead of its tier's setting. Nil: the tier's.
    public var targetMS: Int?
    /// A short summary of the error, never containing a key or the prompt.
    public var error: String?
    public var worker: String?
    public var at: Date
    /// Of the call's prompt tokens, those read from the provider's prompt cache (nil: none): why
    /// its cost is below tokens times the input price.
    public var cachedTokens: Int?
    /// Of the call's prompt tokens, those written to the provider's prompt cache (nil: none),
    /// priced at the model's cache-write price.
    public var cacheWriteTokens: Int?
    /// True when the answer reported no usage, so its tokens and cost are Switchyard's estimate
    /// (nil: reported).
    public var usageEstimated: Bool?
    /// The job's affinity home under a `hash` rule, when this call went to another model (nil:
    /// to the home, or no key): a walkthrough's result could not show whether its model was the
    /// key's, and 26% of its calls had spilled.
    public var affinityHome: String?

    public init(
        attempt: Int, model: String? = nil, provider: String? = nil, tier: String? = nil, outcome: String,
        httpStatus: Int? = nil, latencyMS: Double? = nil, targetMS: Int? = nil, error: String? = nil,
        worker: String? = nil, at: Date = Date(), cachedTokens: Int? = nil, cacheWriteTokens: Int? = nil,
        usageEstimated: Bool? = nil, affinityHome: String? = nil
    ) {
        self.attempt = attempt
        self.model = model
        self.provider = provider
        self.tier = tier
        self.outcome = outcome
        self.httpStatus = httpStatus
        self.latencyMS = latencyMS
        self.targetMS = targetMS
        self.error = error
        self.worker = worker
        self.at = at
        self.cachedTokens = cachedTokens
        self.cacheWriteTokens = cacheWriteTokens
        self.usageEstimated = usageEstimated
        self.affinityHome = affinityHome
    }

    enum CodingKeys: String, CodingKey {
        case attempt, model, provider, tier, outcome, error, worker, at
        case httpStatus = "http_status"
        case latencyMS = "latency_ms"
        case targetMS = "target_ms"
        case cachedTokens = "cached_tokens"
        case cacheWriteTokens = "cache_write_tokens"
        case usageEstimated = "usage_estimated"
        case affinityHome = "affinity_home"
    }

    /// Writes the record as JSON, the way the trail stores it.
    func write(into output: inout [UInt8]) {
        var object = JSONObjectWriter(into: &output)
        object.number("attempt", Double(attempt), into: &output)
        object.text("outcome", outcome, into: &output)
        object.text("model", model, into: &output)
        object.text("provider", provider, into: &output)
        object.text("tier", tier, into: &output)
        object.number("http_status", httpStatus.map(Double.init), into: &output)
        object.number("latency_ms", latencyMS.map(Completion.toMicroseconds), into: &output)
        object.number("target_ms", targetMS.map(Double.init), into: &output)
        object.text("error", error, into: &output)
        object.text("worker", worker, into: &output)
        object.text("at", at.postgresText, into: &output)  // ISO 8601, as bind parameters are written
        object.number("cached_tokens", cachedTokens.map(Double.init), into: &output)
        object.number("cache_write_tokens", cacheWriteTokens.map(Double.init), into: &output)
        object.bool("usage_estimated", usageEstimated, into: &output)
        object.text("affinity_home", affinityHome, into: &output)
        object.close(into: &output)
    }
}
