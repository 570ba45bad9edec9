import QueueModel

/// One attempt's successful answer.
public struct ProviderReply: Sendable {
    /// The answer in OpenAI `chat.completion` shape (`id`, `object`, `created`, `model`,
    /// `choices[].message`, `choices[].finish_reason`, `usage`), whatever the provider speaks.
    public var response: JSONValue
    /// Tokens in and out, as the provider reported them (0 when it did not say).
    public var usage: TokenUsage
    /// Whether the answer reported its usage (prompt or completion tokens, as numbers); without
    /// it (or with `"prompt_tokens": "5"`) the executor estimates both rather than record a free
    /// call.
    public var usageReported: Bool
    /// The HTTP status of the answer (200 for simulated models).
    public var httpStatus: Int
    /// From sending the request to having the whole answer.
    public var latency: Duration
    /// The provider's rate-limit headers, when it sent any; routing lowers the model's budget
    /// from them before a 429 happens.
    public var rateLimit: RateLimitInfo?

    /// Creates a reply.
    public init(
        response: JSONValue, usage: TokenUsage, usageReported: Bool = true, httpStatus: Int = 200,
        latency: Duration, rateLimit: RateLimitInfo? = nil
    ) {
        self.response = response
        self.usage = usage
        self.usageReported = usageReported
        self.httpStatus = httpStatus
        self.latency = latency
        self.rateLimit = rateLimit
    }
}
