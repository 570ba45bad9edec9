import Foundation
import QueueModel
import Testing

/// Prompt tokens the provider's cache served or stored are priced at the model's cache prices.
@Suite("Pricing of cached prompt tokens")
struct CachedTokenPricingTests {
    static func price(_ text: String) -> Decimal { Decimal(string: text)! }

    /// Claude Sonnet's list prices: reads at 0.1× the input price, writes (5-minute cache) at 1.25×.
    static let sonnet = ModelSpec(
        name: "claude-sonnet", provider: .anthropic, pricePer1KInput: price("0.003"),
        pricePer1KOutput: price("0.015"), pricePer1KCachedInput: price("0.0003"),
        pricePer1KCacheWrite: price("0.00375"))

    /// The reviewer's answer: input_tokens 100, cache_creation_input_tokens 10,
    /// cache_read_input_tokens 50, output_tokens 30.
    static let anthropicUsage = TokenUsage(
        promptTokens: 160, completionTokens: 30, cachedTokens: 50, cacheWriteTokens: 10)

    @Test("cache reads and writes are charged at their own prices, the rest of the prompt at the input price")
    func anthropicSplit() {
        // 100 × $0.003 + 50 × $0.0003 + 10 × $0.00375 + 30 × $0.015, per 1K:
        // $0.0003 + $0.000015 + $0.0000375 + $0.00045 (160 × $0.003 + … was $0.00093).
        #expect(Pricing.cost(of: Self.sonnet, Self.anthropicUsage) == Self.price("0.0008025"))
    }

    @Test("OpenAI's cached tokens, part of prompt_tokens, are charged at the cached price only")
    func openAISplit() {
        let gpt4o = ModelSpec(
            name: "gpt-4o", provider: .openai, pricePer1KInput: Self.price("0.0025"),
            pricePer1KOutput: Self.price("0.01"), pricePer1KCachedInput: Self.price("0.00125"))
        let usage = TokenUsage(promptTokens: 2000, completionTokens: 100, cachedTokens: 1536)
        // 464 × $0.0025 + 1,536 × $0.00125 + 100 × $0.01, per 1K.
        #expect(Pricing.cost(of: gpt4o, usage) == Self.price("0.00408"))
    }

    @Test("a model without cache prices charges every prompt token at its input price, as before")
    func absentPricesAreTheInputPrice() {
        var plain = Self.sonnet
        plain.pricePer1KCachedInput = nil
        plain.pricePer1KCacheWrite = nil
        #expect(Pricing.cost(of: plain, Self.anthropicUsage) == Self.price("0.00093"))
        #expect(Pricing.cost(of: plain, Self.anthropicUsage) == Pricing.cost(of: plain, tokensIn: 160, tokensOut: 30))
        // Only a write price: reads fall back to the input price, writes do not.
        plain.pricePer1KCacheWrite = Self.price("0.00375")
        // 150 × $0.003 + 10 × $0.00375 + 30 × $0.015, per 1K.
        #expect(Pricing.cost(of: plain, Self.anthropicUsage) == Self.price("0.0009375"))
    }

    @Test("an off-peak window's input multiplier applies to all three input prices, at the price in force")
    func windows() throws {
        var model = Self.sonnet
        model.priceWindows = try JSONValue(
            parsing: #"[{"start": "00:00", "end": "08:00", "input_multiplier": 0.5, "output_multiplier": 0.25}]"#)
        let schedule = PriceSchedule(model)
        let offPeak = ISO8601Parsing.date("2026-11-26T03:00:00Z")!
        let peak = ISO8601Parsing.date("2026-11-26T12:00:00Z")!
        // ($0.0003 + $0.000015 + $0.0000375) × 0.5 + $0.00045 × 0.25.
        #expect(schedule.cost(Self.anthropicUsage, at: offPeak) == Self.price("0.00028875"))
        #expect(schedule.cost(Self.anthropicUsage, at: peak) == Self.price("0.0008025"))
        #expect(
            Pricing.cost(of: model, Self.anthropicUsage, multipliers: (0.5, 0.25)) == Self.price("0.00028875"))
    }

    @Test("cache counts that do not add up are held within the prompt: never more input charged than it had")
    func inconsistentCounts() {
        let model = ModelSpec(
            name: "m", provider: .openai, pricePer1KInput: Self.price("0.001"), pricePer1KOutput: 0,
            pricePer1KCachedInput: Self.price("0.0001"), pricePer1KCacheWrite: Self.price("0.002"))
        // 300 cached of a 100-token prompt: all 100 at the cached price, none written.
        let overCached = TokenUsage(promptTokens: 100, completionTokens: 0, cachedTokens: 300, cacheWriteTokens: 50)
        #expect(overCached.promptSplit == (0, 100, 0))
        #expect(Pricing.cost(of: model, overCached) == Self.price("0.00001"))
        // 60 read and 60 written of 100: the writes are what is left (40).
        let overWritten = TokenUsage(promptTokens: 100, completionTokens: 0, cachedTokens: 60, cacheWriteTokens: 60)
        #expect(overWritten.promptSplit == (0, 60, 40))
    }

    @Test("estimates made before a call (ceilings, cheapest) keep the input price: caching is not known then")
    func estimatesIgnoreCachePrices() {
        var plain = Self.sonnet
        plain.pricePer1KCachedInput = nil
        plain.pricePer1KCacheWrite = nil
        #expect(Pricing.averagePricePer1K(Self.sonnet) == Pricing.averagePricePer1K(plain))
        #expect(Pricing.averagePricePer1K(Self.sonnet) == Self.price("0.009"))
    }
}
