import QueueModel

extension TokenUsage {
    /// More tokens than any call uses: a count past it is a provider's bug, not a bill.
    static let largestPlausible = 1_000_000_000

    /// A count from a usage object: 0 when absent or negative, and never past just over
    /// `largestPlausible`, so sums of counts cannot overflow (the adapters then refuse the answer).
    static func count(_ value: JSONValue?) -> Int {
        guard let number = value?.doubleValue, number > 0 else { return 0 }
        return number > Double(largestPlausible) ? largestPlausible + 1 : Int(number)
    }

    /// Whether a usage object reports a call's counts: both of them numbers, neither negative. A
    /// negative count (read as 0) made the call free, unflagged; one count alone priced the other
    /// as 0: both are priced on an estimate instead, and the trail says so.
    static func reports(_ input: JSONValue?, _ output: JSONValue?) -> Bool {
        guard let input = input?.doubleValue, let output = output?.doubleValue else { return false }
        return input >= 0 && output >= 0
    }

    /// Whether every count is one a call could have used (and `results` can store).
    var isPlausible: Bool {
        [promptTokens, completionTokens, cachedTokens, cacheWriteTokens].allSatisfy { $0 <= Self.largestPlausible }
    }

    /// Reads an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`, and
    /// `prompt_tokens_details.cached_tokens`, which `prompt_tokens` includes); missing counts are 0.
    /// Cache writes are read from `cache_creation_input_tokens`, where an OpenAI-compatible proxy in
    /// front of Anthropic (LiteLLM) reports them, as `openAIUsage` writes them.
    /// - Parameter response: an OpenAI `chat.completion` body.
    public init(openAIResponse response: JSONValue) {
        let usage = response["usage"]
        self.init(
            promptTokens: Self.count(usage?["prompt_tokens"]),
            completionTokens: Self.count(usage?["completion_tokens"]),
            cachedTokens: Self.count(usage?["prompt_tokens_details"]?["cached_tokens"]),
            cacheWriteTokens: Self.count(usage?["cache_creation_input_tokens"])
        )
    }

    /// Counts for an answer that reported none (some OpenAI-compatible servers leave `usage` out):
    /// the prompt as routing estimated it, the completion from the text of every choice (content,
    /// refusal, tool calls' names and arguments), as `PromptEstimate` counts text.
    /// - Parameters:
    ///   - promptTokens: the request's estimated prompt tokens.
    ///   - response: the answer in OpenAI `chat.completion` shape.
    static func estimated(promptTokens: Int, response: JSONValue) -> TokenUsage {
        var completion = 0
        for choice in response["choices"]?.arrayValue ?? [] {
            let message = choice["message"]
            for text in [message?["content"], message?["refusal"]].compactMap({ $0?.stringValue }) {
                completion += PromptEstimate.tokens(in: text)
            }
            for call in message?["tool_calls"]?.arrayValue ?? [] {
                completion += PromptEstimate.tokens(in: call["function"]?["name"]?.stringValue ?? "")
                completion += PromptEstimate.tokens(in: call["function"]?["arguments"]?.stringValue ?? "")
            }
        }
        return TokenUsage(promptTokens: promptTokens, completionTokens: completion)
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
