import Foundation

/// When a failed job runs again: exponential backoff with jitter, capped.
///
/// The delay before attempt n+1 is `base × 2^(n-1)`, capped at `maximum`, then scaled by a random
/// factor in [1 − jitter, 1], so a fleet of workers that failed together does not retry together.
public struct RetryPolicy: Sendable, Hashable {
    public var base: Duration
    public var maximum: Duration
    /// The share of the delay that is random, 0…1.
    public var jitter: Double

    public init(base: Duration = .seconds(2), maximum: Duration = .seconds(300), jitter: Double = 0.5) {
        self.base = base
        self.maximum = maximum
        self.jitter = min(max(jitter, 0), 1)
    }

    /// The delay after a failed attempt.
    /// - Parameters:
    ///   - attempt: the attempt that failed (1 for the first).
    ///   - random: a number in [0, 1); injected so tests are deterministic.
    public func delay(afterAttempt attempt: Int, random: Double) -> Duration {
        let exponent = Double(max(attempt, 1) - 1)
        let uncapped = base.seconds * pow(2, min(exponent, 30))
        let capped = min(uncapped, maximum.seconds)
        let factor = 1 - jitter * min(max(random, 0), 1)
        return .milliseconds(Int64((capped * factor * 1000).rounded()))
    }
}
