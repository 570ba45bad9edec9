import Foundation
import QueueModel

/// A small seeded random stream (SplitMix64 over `StableHash.mix`): the same seed gives the same
/// draws in every process, unlike `SystemRandomNumberGenerator` or anything built on `Hasher`.
struct SimulatedRandom: RandomNumberGenerator {
    private var state: UInt64

    /// A stream starting from `seed`.
    init(seed: UInt64) { state = StableHash.mix(seed) }

    /// The next 64 random bits.
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        return StableHash.mix(state)
    }

    /// A uniform draw in [0, 1).
    mutating func unit() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    /// A standard normal draw (Box–Muller).
    mutating func normal() -> Double {
        let u1 = max(unit(), .leastNonzeroMagnitude)
        let u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// A log-normal draw whose median is `p50` and whose 95th percentile is `p95`:
    /// ln X ~ N(ln p50, σ²) with σ = ln(p95 / p50) / z₀.₉₅.
    mutating func logNormal(p50: Double, p95: Double) -> Double {
        guard p50 > 0 else { return 0 }
        let sigma = log(max(p95, p50) / p50) / 1.644_853_626_951_472_2
        return exp(log(p50) + sigma * normal())
    }
}
