/// Tokens a call consumed, as the provider counted them: what `Pricing` charges for.
public struct TokenUsage: Sendable, Hashable {
    /// Input tokens, all of them: including those read from or written to the provider's prompt
    /// cache (what `results.tokens_in` stores).
    public var promptTokens: Int
    /// Output tokens.
    public var completionTokens: Int
    /// Of `promptTokens`, those read from the provider's prompt cache, sold at a discount (OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`).
    public var cachedTokens: Int
    /// Of `promptTokens`, those written to the provider's prompt cache, which Anthropic sells at a
    /// surcharge (`cache_creation_input_tokens`; OpenAI caches without charging for it).
    public var cacheWriteTokens: Int

    /// Creates a usage record; the cache counts are parts of `promptTokens`, not additions to it.
    public init(promptTokens: Int, completionTokens: Int, cachedTokens: Int = 0, cacheWriteTokens: Int = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.cacheWriteTokens = cacheWriteTokens
    }

    /// Input plus output tokens.
    public var totalTokens: Int { promptTokens + completionTokens }

    /// The prompt split by price: read from the cache, written to it, and the rest (at the input
    /// price). A provider's counts that do not add up (more cached than prompt tokens) are held
    /// within `promptTokens`, so a call is never charged for more input than it had.
    public var promptSplit: (uncached: Int, cached: Int, written: Int) {
        let prompt = max(0, promptTokens)
        let cached = min(max(0, cachedTokens), prompt)
        let written = min(max(0, cacheWriteTokens), prompt - cached)
        return (prompt - cached - written, cached, written)
    }
}
