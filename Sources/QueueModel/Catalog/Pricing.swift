import Foundation

/// What a call costs: tokens times the model's price per 1K, input and output apart, at the
/// price in force when the call was made (off-peak windows), in exact decimal arithmetic (never
/// floating point: these sums end up in invoices).
public enum Pricing {
    /// The cost of one call at the model's list (peak) price.
    /// The average of a model's input and output price per 1K tokens, each times its multiplier
    /// (1: the list price): what `max_cost_per_1k`, the background ceiling and `cheapest` compare.
    public static func averagePricePer1K(_ model: ModelSpec, input: Decimal = 1, output: Decimal = 1) -> Decimal {
        (model.pricePer1KInput * input + model.pricePer1KOutput * output) * half
    }

    public static func cost(of model: ModelSpec, tokensIn: Int, tokensOut: Int) -> Decimal {
        cost(of: model, tokensIn: tokensIn, tokensOut: tokensOut, multipliers: (1, 1))
    }

    /// The cost of one call under the given price multipliers.
    public static func cost(
        of model: ModelSpec, tokensIn: Int, tokensOut: Int, multipliers: (input: Decimal, output: Decimal)
    ) -> Decimal {
        // × 0.001 rather than ÷ 1000: exact either way, and Decimal division is slow.
        (Decimal(tokensIn) * model.pricePer1KInput * multipliers.input
            + Decimal(tokensOut) * model.pricePer1KOutput * multipliers.output) * perThousand
    }

    static let perThousand = Decimal(sign: .plus, exponent: -3, significand: 1)
    static let half = Decimal(sign: .plus, exponent: -1, significand: 5)
}

/// A model's price windows, parsed once, and its price at any instant.
public struct PriceSchedule: Sendable, Hashable {
    public let model: ModelSpec
    public let windows: [PriceWindow]

    /// Parses the model's `price_windows` (windows that do not parse are left out; import refuses them).
    public init(_ model: ModelSpec) {
        self.model = model
        self.windows = (model.priceWindows.arrayValue ?? []).compactMap { try? PriceWindow.parse($0) }
    }

    /// The input and output multipliers at an instant: the lowest of the open windows', else 1.
    public func multipliers(at instant: Date) -> (input: Decimal, output: Decimal) {
        var input: Decimal = 1
        var output: Decimal = 1
        for window in windows where window.contains(instant) {
            input = min(input, window.inputMultiplier)
            output = min(output, window.outputMultiplier)
        }
        return (input, output)
    }

    /// The average of input and output price per 1K at an instant (what ceilings compare with).
    public func averagePricePer1K(at instant: Date) -> Decimal {
        let (input, output) = multipliers(at: instant)
        return Pricing.averagePricePer1K(model, input: input, output: output)
    }

    /// The cost of a call made at an instant.
    public func cost(tokensIn: Int, tokensOut: Int, at instant: Date) -> Decimal {
        Pricing.cost(of: model, tokensIn: tokensIn, tokensOut: tokensOut, multipliers: multipliers(at: instant))
    }

    /// When the next window opens, at or after an instant (nil when the model has none).
    public func nextWindowStart(after instant: Date) -> Date? {
        windows.compactMap { $0.nextStart(after: instant) }.min()
    }
}
