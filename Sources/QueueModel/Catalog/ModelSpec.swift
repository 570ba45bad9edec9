import Foundation

/// How a model is reached.
public enum ProviderKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// Any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, Ollama, a LiteLLM proxy, …).
    case openai
    /// Anthropic's Messages API.
    case anthropic
    /// In-process simulated models, for the demo, tests and benchmarks (no keys, no network).
    case simulated
}

/// One model in the catalog (`switchyard.models`).
public struct ModelSpec: Sendable, Hashable, Codable {
    /// The catalog name routing rules refer to (`gpt-4`, `claude-haiku`).
    public var name: String
    public var provider: ProviderKind
    /// The API's base URL (e.g. `https://api.openai.com/v1`); nil for simulated models.
    public var baseURL: String?
    /// The NAME of the environment variable holding the API key. Keys never enter the database.
    public var apiKeyEnv: String?
    /// The model name sent to the provider; defaults to `name`.
    public var upstreamModel: String?
    /// The price class: `premium`, `standard`, `cheap`, `open_source` (free text).
    public var tier: String
    public var pricePer1KInput: Decimal
    public var pricePer1KOutput: Decimal
    /// The price per 1K prompt tokens read from the provider's prompt cache (OpenAI's
    /// `cached_tokens`, Anthropic's `cache_read_input_tokens`); nil: `pricePer1KInput`.
    public var pricePer1KCachedInput: Decimal?
    /// The price per 1K prompt tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`); nil: `pricePer1KInput`.
    public var pricePer1KCacheWrite: Decimal?
    /// Off-peak price windows (data, never code); refined by the off-peak work.
    public var priceWindows: JSONValue
    /// Context window in tokens.
    public var contextWindow: Int
    /// Capability scores 0–100 by task kind: reasoning, creative, code, multilingual, factual, …
    public var capabilities: [String: Int]
    /// Relative share for `weighted` routing and virtual nodes on the hash ring.
    public var weight: Double
    public var maxConcurrency: Int?
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    public var enabled: Bool
    /// Provider-specific settings (e.g. a simulated model's latency and error rates).
    public var settings: JSONValue

    public init(
        name: String, provider: ProviderKind, baseURL: String? = nil, apiKeyEnv: String? = nil,
        upstreamModel: String? = nil, tier: String = "standard", pricePer1KInput: Decimal = 0,
        pricePer1KOutput: Decimal = 0, pricePer1KCachedInput: Decimal? = nil, pricePer1KCacheWrite: Decimal? = nil,
        priceWindows: JSONValue = [], contextWindow: Int = 8192,
        capabilities: [String: Int] = [:], weight: Double = 1, maxConcurrency: Int? = nil,
        requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil, enabled: Bool = true, settings: JSONValue = [:]
    ) {
        self.name = name
        self.provider = provider
        self.baseURL = baseURL
        self.apiKeyEnv = apiKeyEnv
        self.upstreamModel = upstreamModel
        self.tier = tier
        self.pricePer1KInput = pricePer1KInput
        self.pricePer1KOutput = pricePer1KOutput
        self.pricePer1KCachedInput = pricePer1KCachedInput
        self.pricePer1KCacheWrite = pricePer1KCacheWrite
        self.priceWindows = priceWindows
        self.contextWindow = contextWindow
        self.capabilities = capabilities
        self.weight = weight
        self.maxConcurrency = maxConcurrency
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.enabled = enabled
        self.settings = settings
    }

    /// The name to send to the provider.
    public var upstreamName: String { upstreamModel ?? name }

    /// Whether the two price a call alike: the same prices and price windows.
    public func samePrices(as other: ModelSpec) -> Bool {
        pricePer1KInput == other.pricePer1KInput && pricePer1KOutput == other.pricePer1KOutput
            && pricePer1KCachedInput == other.pricePer1KCachedInput
            && pricePer1KCacheWrite == other.pricePer1KCacheWrite && priceWindows == other.priceWindows
    }

    /// The keys a simulated model's `settings` may hold, in documentation order: what the worker's
    /// simulated adapter reads, and what the import warns of a key that is not among them.
    public static let simulatedSettingsKeys = ModelSetting.all.filter { $0.providers.contains(.simulated) }.map(\.key)
}
