import Foundation
import QueueModel

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The adapter for any OpenAI-compatible Chat Completions endpoint: OpenAI, vLLM, llama.cpp's
/// server, Ollama, DeepSeek, OpenRouter, a LiteLLM proxy.
///
/// POSTs the job's request to `{base_url}/chat/completions` with `model` set to the catalog's
/// upstream name and `stream` forced off, and `Authorization: Bearer` from the environment
/// variable the catalog names (none when it names none). The answer is returned as the provider
/// sent it; error bodies and rate-limit headers are read into `ProviderError` and `RateLimitInfo`.
public struct OpenAIProvider: ModelProvider {
    /// Used when a model has no `base_url`.
    public static let defaultBaseURL = "https://api.openai.com/v1"

    let transport: HTTPTransport
    let environment: [String: String]
    let clock: any ProviderClock

    /// Creates the adapter.
    /// - Parameters:
    ///   - transport: the process's HTTP client.
    ///   - environment: where API keys are read from (the process environment in production).
    ///   - clock: for `retry-after` dates and rate-limit reset timestamps.
    public init(
        transport: HTTPTransport, environment: [String: String] = ProcessInfo.processInfo.environment,
        clock: any ProviderClock = SystemProviderClock()
    ) {
        self.transport = transport
        self.environment = environment
        self.clock = clock
    }

    /// Sends the request and returns the completion.
    /// - Throws: `ProviderError` for every failure, `CancellationError` when cancelled.
    public func complete(_ call: ProviderCall) async throws -> ProviderReply {
        let model = call.model
        try model.checkSettings()
        var body = try ProviderEndpoint.requestObject(call)
        body["model"] = .string(model.upstreamName)
        body["stream"] = false
        body["stream_options"] = nil
        let url = try ProviderEndpoint.url(for: model, defaultBase: Self.defaultBaseURL, path: "/chat/completions")
        if !Self.keepsCacheControl(model, url: url) { Self.dropCacheControl(from: &body) }
        var headers: [String: String] = [:]
        if let key = try ProviderEndpoint.apiKey(for: model, environment: environment) {
            headers["Authorization"] = "Bearer \(key)"
        }
        let skipVerification = try transport.insecureTLS.skipsVerification(for: model, url: url)
        let request = ProviderEndpoint.post(url, body: .object(body), headers: headers, model: model)
        let exchange = try await transport.send(
            request, timeout: call.timeout, model: model.name, skipVerification: skipVerification)
        do {
            return try Self.reply(from: exchange, model: model.name, now: clock.now())
        } catch let error as ProviderError {
            throw error.naming(url)
        }
    }

    /// Whether the request goes with its `cache_control` marks (Anthropic's prompt caching, as
    /// OpenAI-format clients write them): the model's `keep_cache_control`, else yes except to
    /// OpenAI itself, which caches long prompts on its own, as LiteLLM does. OpenRouter and a
    /// LiteLLM proxy pass the marks on to Claude; a strict server (Mistral's, NVIDIA NIM) refuses
    /// them as extra inputs, and its model is then set to false.
    static func keepsCacheControl(_ model: ModelSpec, url: URL) -> Bool {
        model.settings["keep_cache_control"]?.boolValue ?? (url.host?.lowercased() != "api.openai.com")
    }

    /// Removes the `cache_control` marks where they sit: on messages, on their content parts, and
    /// on tools.
    static func dropCacheControl(from body: inout [String: JSONValue]) {
        func unmarked(_ value: JSONValue) -> JSONValue {
            guard var object = value.objectValue else { return value }
            object["cache_control"] = nil
            if let parts = object["content"]?.arrayValue { object["content"] = .array(parts.map(unmarked)) }
            return .object(object)
        }
        for key in ["messages", "tools"] {
            if let items = body[key]?.arrayValue { body[key] = .array(items.map(unmarked)) }
        }
    }

    /// Reads a response: a reply for a readable 2xx completion, else the classified error. Registered
    /// secrets are replaced first: a provider that echoes the key leaves `[REDACTED]`.
    static func reply(from exchange: HTTPTransport.Exchange, model: String, now: Date) throws -> ProviderReply {
        let exchange = exchange.redactingSecrets()
        let rateLimit = RateLimitInfo(headers: exchange.headers, now: now)
        guard (200..<300).contains(exchange.status) else {
            throw ProviderError.fromResponse(
                status: exchange.status, headers: exchange.headers, body: exchange.body, model: model, now: now,
                latency: exchange.latency)
        }
        func invalid(_ reason: String) -> ProviderError {
            .invalidResponse(
                reason, body: exchange.body, model: model, status: exchange.status, latency: exchange.latency,
                rateLimit: rateLimit)
        }
        let response: JSONValue
        do {
            response = try ProviderEndpoint.decodedBody(exchange.body)
        } catch {
            throw invalid(
                "the provider answered \(exchange.status) with a body that is \((error as? QueueError)?.message ?? "\(error)")")
        }
        if let status = ProviderEndpoint.embeddedErrorStatus(response) {
            throw ProviderError.fromResponse(
                status: status, headers: exchange.headers, body: exchange.body, model: model, now: now,
                latency: exchange.latency)
        }
        guard let choices = response["choices"]?.arrayValue, let first = choices.first,
            first["message"]?.objectValue != nil
        else {
            throw invalid("the provider's answer has no choices[0].message")
        }
        let usage = TokenUsage(openAIResponse: response)
        guard usage.isPlausible else {
            throw invalid("the provider's answer reports more tokens than any call uses (a count over 1,000,000,000)")
        }
        return ProviderReply(
            response: response, usage: usage,
            usageReported: TokenUsage.reports(response["usage"]?["prompt_tokens"], response["usage"]?["completion_tokens"]),
            httpStatus: exchange.status, latency: exchange.latency, rateLimit: rateLimit)
    }
}
