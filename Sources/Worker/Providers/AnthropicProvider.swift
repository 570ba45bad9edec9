import Foundation
import QueueModel

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The adapter for Anthropic's Messages API.
///
/// Translates the job's OpenAI-shaped request into a Messages request (see
/// `AnthropicTranslation`), POSTs it to `{base_url}/v1/messages` with `x-api-key` from the
/// environment variable the catalog names and `anthropic-version: 2023-06-01`, and translates the
/// answer back into an OpenAI `chat.completion`, so stored results have one shape.
///
/// Settings: `default_max_tokens` (a positive integer, default 1024) is sent when the request
/// sets no `max_tokens`, which Anthropic requires; a value of another type fails the call as
/// `misconfigured` (`ModelSpec.checkSettings`) rather than send the default.
public struct AnthropicProvider: ModelProvider {
    /// Used when a model has no `base_url`.
    public static let defaultBaseURL = "https://api.anthropic.com"
    /// The API version this adapter speaks.
    public static let apiVersion = "2023-06-01"
    /// `max_tokens` when neither the request nor the model's settings give one.
    public static let defaultMaxTokens = 1024

    let transport: HTTPTransport
    let environment: [String: String]
    let clock: any ProviderClock

    /// Creates the adapter.
    /// - Parameters:
    ///   - transport: the process's HTTP client.
    ///   - environment: where API keys are read from (the process environment in production).
    ///   - clock: for `created` stamps, `retry-after` dates and rate-limit reset timestamps.
    public init(
        transport: HTTPTransport, environment: [String: String] = ProcessInfo.processInfo.environment,
        clock: any ProviderClock = SystemProviderClock()
    ) {
        self.transport = transport
        self.environment = environment
        self.clock = clock
    }

    /// Sends the translated request and returns the answer in OpenAI shape.
    /// - Throws: `ProviderError` for every failure, `CancellationError` when cancelled.
    public func complete(_ call: ProviderCall) async throws -> ProviderReply {
        let model = call.model
        try model.checkSettings()
        let maxTokens = model.settings["default_max_tokens"]?.intValue ?? Self.defaultMaxTokens
        let requestObject = try ProviderEndpoint.requestObject(call)
        let body = try AnthropicTranslation.messagesRequest(from: requestObject, model: model, defaultMaxTokens: maxTokens)
        let url = try ProviderEndpoint.url(for: model, defaultBase: Self.defaultBaseURL, path: "/v1/messages")
        var headers = ["anthropic-version": Self.apiVersion]
        if let key = try ProviderEndpoint.apiKey(for: model, environment: environment) { headers["x-api-key"] = key }
        let skipVerification = try transport.insecureTLS.skipsVerification(for: model, url: url)
        var request = ProviderEndpoint.post(url, body: body, headers: headers, model: model)
        request.httpBody = Data(AnthropicTranslation.bodyText(body, request: requestObject).utf8)
        let exchange = try await transport.send(
            request, timeout: call.timeout, model: model.name, skipVerification: skipVerification)
        do {
            return try Self.reply(
                from: exchange, model: model, stops: AnthropicTranslation.blankStops(requestObject), now: clock.now())
        } catch let error as ProviderError {
            throw error.naming(url)
        }
    }

    /// Reads a response: the translated completion for a readable 2xx message, else the
    /// classified error. Registered secrets are replaced first: a provider that echoes the key
    /// leaves `[REDACTED]`.
    static func reply(
        from exchange: HTTPTransport.Exchange, model: ModelSpec, stops: [String] = [], now: Date
    ) throws -> ProviderReply {
        let exchange = exchange.redactingSecrets()
        let rateLimit = RateLimitInfo(headers: exchange.headers, now: now)
        guard (200..<300).contains(exchange.status) else {
            throw ProviderError.fromResponse(
                status: exchange.status, headers: exchange.headers, body: exchange.body, model: model.name, now: now,
                latency: exchange.latency)
        }
        let message: JSONValue?
        let unreadable: String?
        do {
            message = try ProviderEndpoint.decodedBody(exchange.body)
            unreadable = nil
        } catch {
            message = nil
            unreadable = (error as? QueueError)?.message ?? "\(error)"
        }
        if let message, let status = ProviderEndpoint.embeddedErrorStatus(message) {
            throw ProviderError.fromResponse(
                status: status, headers: exchange.headers, body: exchange.body, model: model.name, now: now,
                latency: exchange.latency)
        }
        guard let message,
            let (completion, usage) = AnthropicTranslation.chatCompletion(
                from: message, body: ProviderEndpoint.withoutByteOrderMark(exchange.body), stops: stops,
                model: model.upstreamName, created: now)
        else {
            throw ProviderError.invalidResponse(
                "the provider answered \(exchange.status) with a body that is "
                    + (unreadable ?? "not a Messages API message"),
                body: exchange.body, model: model.name, status: exchange.status, latency: exchange.latency,
                rateLimit: rateLimit)
        }
        guard usage.isPlausible else {
            throw ProviderError.invalidResponse(
                "the provider's answer reports more tokens than any call uses (a count over 1,000,000,000)",
                body: exchange.body, model: model.name, status: exchange.status, latency: exchange.latency,
                rateLimit: rateLimit)
        }
        return ProviderReply(
            response: completion, usage: usage,
            usageReported: TokenUsage.reports(message["usage"]?["input_tokens"], message["usage"]?["output_tokens"]),
            httpStatus: exchange.status, latency: exchange.latency, rateLimit: rateLimit)
    }
}
