import Foundation

/// What a call costs: tokens times the model's price per 1K, input (cache reads and writes apart)
/// and output apart, at the price in force when the call was made (off-peak windows), in exact
/// decimal arithmetic (never floating point: these sums end up in invoices).
public enum Pricing {
    /// The average of a model's input and output price per 1K tokens, each times its multiplier
    /// (1: the list price): what `max_cost_per_1k`, the background ceiling and `cheapest` compare.
    /// Before a call nobody knows how much of its prompt the provider's cache will serve, so these
    /// estimates take the full input price; the call's cost (below) uses the cache prices.
    public static func averagePricePer1K(_ model: ModelSpec, input: Decimal = 1, output: Decimal = 1) -> Decimal {
        (model.pricePer1KInput * input + model.pricePer1KOutput * output) * half
    }

    /// The cost of one call at the model's list (peak) price.
    public static func cost(of model: ModelSpec, tokensIn: Int, tokensOut: Int) -> Decimal {
        cost(of: model, TokenUsage(promptTokens: tokensIn, completionTokens: tokensOut))
    }

    /// The cost of one call: prompt tokens read from the provider's cache at the cached-input
    /// price, those written to it at the cache-write price, the rest at the input price, and output
    /// at the output price (each per 1K, the cache prices defaulting to the input price). An
    /// off-peak window's input multiplier applies to all three input prices, its output
    /// multiplier to the output price.
    /// - Parameters:
    ///   - model: the model called.
    ///   - usage: the provider's token counts.
    ///   - multipliers: the price window's factors; nil: the list price.
    public static func cost(
        of model: ModelSpec, _ usage: TokenUsage, multipliers: (input: Decimal, output: Decimal)? = nil
    ) -> Decimal {
        let split = usage.promptSplit
        var input = thousands(split.uncached) * model.pricePer1KInput
        // Most calls touch no cache: they skip these products (the worker prices each answer thrice).
        if split.cached != 0 {
            input += thousands(split.cached) * (model.pricePer1KCachedInput ?? model.pricePer1KInput)
        }
        if split.written != 0 {
            input += thousands(split.written) * (model.pricePer1KCacheWrite ?? model.pricePer1KInput)
        }
        let output = thousands(usage.completionTokens) * model.pricePer1KOutput
        guard let multipliers else { return input + output }
        return input * multipliers.input + output * multipliers.output
    }

    /// A token count in thousands, exactly (the exponent moves; no division, no extra product).
    static func thousands(_ tokens: Int) -> Decimal {
        Decimal(sign: tokens < 0 ? .minus : .plus, exponent: -3, significand: Decimal(tokens.magnitude))
    }

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
        openMultipliers(at: instant) ?? (1, 1)
    }

    /// The lowest multipliers of the windows open at an instant, each of which may be over 1 (a
    /// surcharge); nil when none is open.
    private func openMultipliers(at instant: Date) -> (input: Decimal, output: Decimal)? {
        var lowest: (input: Decimal, output: Decimal)?
        for window in windows where window.contains(instant) {
            lowest = (
                min(lowest?.input ?? window.inputMultiplier, window.inputMultiplier),
                min(lowest?.output ?? window.outputMultiplier, window.outputMultiplier)
            )
        }
        return lowest
    }

    /// The lowest average price per 1K the model has at any instant: its list price, or less in
    /// a window. Open windows price a call at their lowest multipliers, input and output apart,
    /// so no instant is cheaper than every window's lowest of each at once. A ceiling above this
    /// keeps the model out for good.
    public var lowestAveragePricePer1K: Decimal {
        let list = Pricing.averagePricePer1K(model)
        guard !windows.isEmpty else { return list }
        return min(list, Pricing.averagePricePer1K(
            model, input: windows.map(\.inputMultiplier).min() ?? 1, output: windows.map(\.outputMultiplier).min() ?? 1))
    }

    /// The average of input and output price per 1K at an instant (what ceilings compare with).
    public func averagePricePer1K(at instant: Date) -> Decimal {
        let (input, output) = multipliers(at: instant)
        return Pricing.averagePricePer1K(model, input: input, output: output)
    }

    /// The price each model routes at, at an instant, where a window open then changes it from
    /// its list price (what `RoutingState.ModelState.averagePricePer1K` takes).
    public static func offPeakPrices(_ schedules: some Sequence<PriceSchedule>, at instant: Date) -> [String: Decimal] {
        var prices: [String: Decimal] = [:]
        for schedule in schedules where !schedule.windows.isEmpty {
            let price = schedule.averagePricePer1K(at: instant)
            if price != Router.averagePricePer1K(schedule.model) { prices[schedule.model.name] = price }
        }
        return prices
    }

    /// The cost of a call made at an instant.
    public func cost(tokensIn: Int, tokensOut: Int, at instant: Date) -> Decimal {
        cost(TokenUsage(promptTokens: tokensIn, completionTokens: tokensOut), at: instant)
    }

    /// The cost of a call made at an instant, its prompt priced by what the provider's cache served
    /// (`Pricing.cost(of:_:multipliers:)`).
    public func cost(_ usage: TokenUsage, at instant: Date) -> Decimal {
        Pricing.cost(of: model, usage, multipliers: openMultipliers(at: instant))
    }

    /// When the next window opens, at or after an instant (nil when the model has none).
    public func nextWindowStart(after instant: Date) -> Date? {
        windows.compactMap { $0.nextStart(after: instant) }.min()
    }

    /// The times within the next week when this model's price may change (a window opens or
    /// closes), after an instant, in order.
    public func priceChanges(after instant: Date) -> [Date] {
        Set(windows.flatMap { [$0.nextStart(after: instant), $0.nextEnd(after: instant)].compactMap { $0 } })
            .filter { $0 > instant }.sorted()
    }
}
