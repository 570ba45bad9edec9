import Foundation
import QueueModel

/// This worker's share of one model's requests- and tokens-per-minute budget: the catalog's
/// limits divided by the live workers, refilled continuously, and lowered by what the provider's
/// `x-ratelimit-remaining-*` headers say, so the fleet slows down before a 429 rather than after.
struct RateBudget: Sendable {
    private(set) var requestCapacity: Double?
    private(set) var tokenCapacity: Double?
    private var requests: Double
    private var tokens: Double
    private var refilledAt: Date
    /// The provider said the budget is spent until then.
    private var blockedUntil: Date?
    /// When what the provider's headers said stops applying (its window resets).
    private var headersExpireAt: Date?

    init(model: ModelSpec, workers: Int, now: Date) {
        requestCapacity = model.requestsPerMinute.map { Double($0) / Double(max(workers, 1)) }
        tokenCapacity = model.tokensPerMinute.map { Double($0) / Double(max(workers, 1)) }
        requests = requestCapacity ?? .infinity
        tokens = tokenCapacity ?? .infinity
        refilledAt = now
    }

    /// Follows catalog changes and the number of live workers.
    mutating func update(model: ModelSpec, workers: Int) {
        requestCapacity = model.requestsPerMinute.map { Double($0) / Double(max(workers, 1)) }
        tokenCapacity = model.tokensPerMinute.map { Double($0) / Double(max(workers, 1)) }
        if let requestCapacity { requests = min(requests, requestCapacity) }
        if let tokenCapacity { tokens = min(tokens, tokenCapacity) }
    }

    mutating func refill(now: Date) {
        let elapsedMinutes = max(0, now.timeIntervalSince(refilledAt)) / 60
        refilledAt = now
        if let requestCapacity { requests = min(requestCapacity, requests + requestCapacity * elapsedMinutes) }
        if let tokenCapacity { tokens = min(tokenCapacity, tokens + tokenCapacity * elapsedMinutes) }
        if let blocked = blockedUntil, blocked <= now { blockedUntil = nil }
        if let expiry = headersExpireAt, expiry <= now {
            // The provider's window has reset: back to the catalog's share (or no limit).
            requests = requestCapacity ?? .infinity
            tokens = tokenCapacity ?? .infinity
            headersExpireAt = nil
        }
    }

    mutating func spend(requests spentRequests: Int, tokens spentTokens: Int, now: Date) {
        refill(now: now)
        requests -= Double(spentRequests)
        tokens -= Double(spentTokens)
    }

    /// Lowers the budget to this worker's share of what the provider says is left.
    mutating func apply(_ info: RateLimitInfo, workers: Int, now: Date) {
        refill(now: now)
        let share = Double(max(workers, 1))
        // No longer than a provider's pause may hold a model (RateLimitInfo.longestPause).
        func ending(_ reset: Duration) -> Date { now.addingTimeInterval(min(reset, RateLimitInfo.longestPause).seconds) }
        let reset = [info.requestsReset, info.tokensReset].compactMap { $0 }.max() ?? .seconds(60)
        headersExpireAt = ending(reset)
        if let remaining = info.remainingRequests {
            requests = min(requests, Double(max(remaining, 0)) / share)
            if remaining <= 0, let reset = info.requestsReset {
                blockedUntil = ending(reset)
            }
        }
        if let remaining = info.remainingTokens {
            tokens = min(tokens, Double(max(remaining, 0)) / share)
            if remaining <= 0, let reset = info.tokensReset {
                blockedUntil = ending(reset)
            }
        }
    }

    /// Whole requests left; nil when the model has no request limit and the provider said nothing.
    var requestsRemaining: Int? {
        if blockedUntil != nil { return 0 }
        return requests.isFinite ? max(0, Int(requests.rounded(.down))) : nil
    }

    /// Until when the provider asked for no calls (a 429's wait, or a budget it said is spent).
    var pausedUntil: Date? { blockedUntil }

    var tokensRemaining: Int? {
        if blockedUntil != nil { return 0 }
        return tokens.isFinite ? max(0, Int(tokens.rounded(.down))) : nil
    }
}
