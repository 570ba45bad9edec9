import QueueModel

extension TokenUsage {
    /// Reads an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`, and
    /// `prompt_tokens_details.cached_tokens`, which `prompt_tokens` includes); missing counts are 0.
    /// Cache writes are read from `cache_creation_input_tokens`, where an OpenAI-compatible proxy in
    /// front of Anthropic (LiteLLM) reports them, as `openAIUsage` writes them.
    /// - Parameter response: an OpenAI `chat.completion` body.
    public init(openAIResponse response: JSONValue) {
        let usage = response["usage"]
        self.init(
            promptTokens: usage?["prompt_tokens"]?.intValue ?? 0,
            completionTokens: usage?["completion_tokens"]?.intValue ?? 0,
            cachedTokens: usage?["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0,
            cacheWriteTokens: usage?["cache_creation_input_tokens"]?.intValue ?? 0
        )
    }

    /// The OpenAI `usage` object for these counts: cache reads in
    /// `prompt_tokens_details.cached_tokens`, as OpenAI reports them; cache writes, which OpenAI has
    /// no field for, in `cache_creation_input_tokens`, as LiteLLM reports Anthropic's.
    public var openAIUsage: JSONValue {
        var usage: [String: JSONValue] = [
            "prompt_tokens": .number(Double(promptTokens)),
            "completion_tokens": .number(Double(completionTokens)),
            "total_tokens": .number(Double(totalTokens)),
        ]
        if cachedTokens > 0 { usage["prompt_tokens_details"] = ["cached_tokens": .number(Double(cachedTokens))] }
        if cacheWriteTokens > 0 { usage["cache_creation_input_tokens"] = .number(Double(cacheWriteTokens)) }
        return .object(usage)
    }
}
