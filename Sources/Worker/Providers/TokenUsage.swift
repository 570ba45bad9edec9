import QueueModel

/// Tokens an attempt consumed, as the provider counted them.
public struct TokenUsage: Sendable, Hashable {
    /// Input tokens, including any served from the provider's prompt cache.
    public var promptTokens: Int
    /// Output tokens.
    public var completionTokens: Int

    /// Creates a usage record.
    public init(promptTokens: Int, completionTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }

    /// Input plus output tokens.
    public var totalTokens: Int { promptTokens + completionTokens }

    /// Reads an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`); missing counts are 0.
    /// - Parameter response: an OpenAI `chat.completion` body.
    public init(openAIResponse response: JSONValue) {
        let usage = response["usage"]
        self.init(
            promptTokens: usage?["prompt_tokens"]?.intValue ?? 0,
            completionTokens: usage?["completion_tokens"]?.intValue ?? 0
        )
    }

    /// The OpenAI `usage` object for these counts.
    public var openAIUsage: JSONValue {
        [
            "prompt_tokens": .number(Double(promptTokens)),
            "completion_tokens": .number(Double(completionTokens)),
            "total_tokens": .number(Double(totalTokens)),
        ]
    }
}
