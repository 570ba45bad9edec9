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

/// What a request may ask that a model may not take: the catalog says so of a model
/// (`"supports": {"images": false}`), and the router leaves it out of a plan for such a request
/// instead of spending a call on its refusal.
public enum ModelFeature: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    /// Function or tool calling: a request with `tools` (or the legacy `functions`).
    case tools
    /// Image input: a message content part of type `image_url` (or `input_image`, `image`).
    case images
    /// Structured output: `response_format` of type `json_object` or `json_schema`.
    case jsonOutput = "json_output"

    /// As a drop reason names it: "tools", "images", "JSON output".
    public var wording: String {
        switch self {
        case .tools: "tools"
        case .images: "images"
        case .jsonOutput: "JSON output"
        }
    }

    public static func < (lhs: ModelFeature, rhs: ModelFeature) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// What `request` (an OpenAI chat-completions body) asks of these.
    public static func needed(by request: JSONValue) -> Set<ModelFeature> {
        var needed: Set<ModelFeature> = []
        for key in ["tools", "functions"] where request[key]?.arrayValue?.isEmpty == false { needed.insert(.tools) }
        if let type = request["response_format"]?["type"]?.stringValue, type == "json_object" || type == "json_schema" {
            needed.insert(.jsonOutput)
        }
        for message in request["messages"]?.arrayValue ?? [] {
            for part in message["content"]?.arrayValue ?? [] {
                if let type = part["type"]?.stringValue, type == "image_url" || type == "input_image" || type == "image" {
                    needed.insert(.images)
                    return needed
                }
            }
        }
        return needed
    }
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
    /// What the catalog says the model cannot take (`"supports": {"tools": false}`); empty: anything.
    public var unsupported: Set<ModelFeature>

    public init(
        name: String, provider: ProviderKind, baseURL: String? = nil, apiKeyEnv: String? = nil,
        upstreamModel: String? = nil, tier: String = "standard", pricePer1KInput: Decimal = 0,
        pricePer1KOutput: Decimal = 0, pricePer1KCachedInput: Decimal? = nil, pricePer1KCacheWrite: Decimal? = nil,
        priceWindows: JSONValue = [], contextWindow: Int = 8192,
        capabilities: [String: Int] = [:], weight: Double = 1, maxConcurrency: Int? = nil,
        requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil, enabled: Bool = true, settings: JSONValue = [:],
        unsupported: Set<ModelFeature> = []
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
        self.unsupported = unsupported
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
