import Foundation
import QueueModel

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

extension ProviderError {
    /// Classifies a provider's non-2xx answer: the taxonomy's first half (status, body and
    /// headers → `Code`). Pure, so a table-driven test covers it.
    ///
    /// Reads OpenAI error bodies `{"error":{"message","type","param","code"}}`, Anthropic's
    /// `{"type":"error","error":{"type","message"}}`, and the looser shapes of OpenAI-compatible
    /// servers (`{"error":"text"}`, `{"detail":"text"}`, `{"message":"text"}`).
    /// - Parameters:
    ///   - status: the HTTP status.
    ///   - headers: the response headers, names lowercased.
    ///   - body: the response body.
    ///   - model: the catalog name of the model called.
    ///   - now: the current time (for HTTP-date `retry-after` and timestamp resets).
    ///   - latency: how long the attempt took.
    public static func fromResponse(
        status: Int, headers: [String: String], body: Data, model: String, now: Date, latency: Duration? = nil
    ) -> ProviderError {
        let detail = ErrorBody(body)
        let rateLimit = RateLimitInfo(headers: headers, now: now)
        let text = "\(detail.message ?? "") \(detail.code ?? "") \(detail.type ?? "")".lowercased()
        // What the message quotes is often the request's own (OpenAI's "Invalid value: '…'"): a
        // request may not decide that the account is out of credit, which opens the breaker for
        // every tenant (a security review's one job a model's breaker every 30 s).
        let ownWords = "\(Self.unquoted(Self.unwrapped(detail.message ?? ""))) \(detail.code ?? "") \(detail.type ?? "")"
            .lowercased()
        let message = detail.message ?? Self.fallbackMessage(status: status, body: body)

        func make(
            _ code: Code, hint: String?, retryAfter: Duration? = nil, rateLimit: RateLimitInfo? = rateLimit
        ) -> ProviderError {
            ProviderError(
                code, message, hint: hint, model: model, httpStatus: status, providerCode: detail.code,
                providerType: detail.type, retryAfter: retryAfter, rateLimit: rateLimit, latency: latency)
        }

        switch status {
        case 300...399:
            // Not followed (HTTPTransport): the key would go wherever the answer points.
            let target = headers["location"].map { " to \($0)" } ?? ""
            return ProviderError(
                .misconfigured,
                "the provider answered HTTP \(status), a redirect\(target); workers do not follow redirects, "
                    + "which would send the API key to another address",
                hint: "set the model's base_url to the address it redirects to", model: model, httpStatus: status,
                rateLimit: rateLimit, latency: latency)
        case 429 where Self.isQuota(ownWords):
            return make(.quotaExhausted, hint: "add credit or raise this account's quota, then re-enable the model")
        case 429:
            let wait = (RateLimitInfo.retryAfter(headers: headers, now: now) ?? rateLimit?.exhaustedUntil)
                .map { min($0, RateLimitInfo.longestPause) }
            // A provider that asked for a pause is not called again before it ends: the model's
            // budget reads as spent until then (as when its headers say nothing is left), so the
            // worker's other jobs go to other models instead of drawing more 429s.
            // (No longer than that: a token window's reset, 45 s, is cut to the wait.)
            var limits = rateLimit
            if let wait, limits?.exhaustedUntil == nil {
                var paused = limits ?? RateLimitInfo()
                paused.remainingRequests = 0
                paused.requestsReset = wait
                paused.tokensReset = paused.tokensReset.map { min($0, wait) }
                limits = paused
            }
            return make(
                .rateLimited,
                hint:
                    "lower the model's requests_per_minute or tokens_per_minute in the catalog to stay under the limit",
                retryAfter: wait, rateLimit: limits)
        case 401, 403:
            return make(
                .unauthorized,
                hint: "check the key in the environment variable named by the model's api_key_env, "
                    + "and that it may use this model")
        case 404 where Self.isUnsupportedByModel(text):
            // OpenRouter: the model exists, but none of its hosts takes this request (tools,
            // images); a 404 for a missing model would open the breaker for every request.
            return make(
                .unsupportedRequest,
                hint: "the job moves to the next model; this one does not take what the request uses")
        case 404:
            return make(.modelNotFound, hint: "check the model's base_url and upstream_model in the catalog")
        case 402:
            // Payment Required: OpenRouter's "Insufficient credits", DeepSeek's "Insufficient Balance".
            // The account's, not the request's: another model may answer, and this one will not
            // until someone pays (it was bad_request, which failed every job without a fallback).
            return make(.quotaExhausted, hint: "add credit or raise this account's quota, then re-enable the model")
        case 408:
            return make(.timedOut, hint: nil)
        case 529:
            return make(.overloaded, hint: nil)
        case 500...599:
            return make(.serverError, hint: nil)
        case 400...499 where Self.isUnknownModel(ownWords):
            // A proxy's 400 for the model it was asked for (LiteLLM's "Invalid model name passed in
            // model=…", OpenRouter's "… is not a valid model ID", Mistral's invalid_model): the
            // catalog's, as a 404 is. As bad_request it failed every job of a review's rule without
            // trying its healthy fallback, and no breaker or alert said so.
            return make(.modelNotFound, hint: "check the model's base_url and upstream_model in the catalog")
        case 400...499 where Self.isContextLength(text):
            return make(
                .contextLengthExceeded,
                hint: "the job moves to a model with a larger context window; if none fits, shorten the "
                    + "messages or lower max_tokens")
        case 400...499 where Self.isQuota(ownWords):
            return make(.quotaExhausted, hint: "add credit or raise this account's quota, then re-enable the model")
        case 400...499 where Self.isUnsupportedByModel(text):
            // o1-style models refuse `max_tokens` ("use max_completion_tokens instead"), some refuse a
            // temperature: this model's limit, not the request's fault, so another model may take it.
            return make(
                .unsupportedRequest,
                hint: text.contains("cache_control")
                    ? "the job moves to the next model; set \"keep_cache_control\": false in this model's settings "
                        + "(dispatcher models import) and its calls go without the marks"
                    : "the job moves to the next model; to keep it on this one, submit the request without the "
                        + "parameter the message names (or with the one it suggests)")
        case 400...499:
            return make(
                .badRequest,
                hint: "fix the request and submit it again; no other model was tried because the request itself "
                    + "was rejected")
        default:
            return make(.serverError, hint: "the provider answered with an unexpected HTTP status")
        }
    }

    /// This error with the address called, when the server says it has no such model: a
    /// `base_url` missing its `/v1` reads as a missing model (`404 Not Found`), and nothing named
    /// the address (a review's operator was sent to check the model's name). Without the
    /// address's user and password, query and fragment.
    func naming(_ url: URL) -> ProviderError {
        guard code == .modelNotFound, var parts = URLComponents(url: url, resolvingAgainstBaseURL: false) else {
            return self
        }
        parts.user = nil
        parts.password = nil
        parts.query = nil
        parts.fragment = nil
        var named = self
        named.message += " (POST \(parts.string ?? url.path))"
        return named
    }

    /// Classifies a failure to get any answer (no connection, connection lost, timeout).
    /// - Parameters:
    ///   - error: what URLSession threw.
    ///   - model: the catalog name of the model called.
    ///   - latency: how long the attempt took.
    public static func fromTransport(_ error: any Error, model: String, latency: Duration?) -> ProviderError {
        if let error = error as? ProviderError { return error }
        let urlError = error as? URLError
        if urlError?.code == .timedOut {
            return ProviderError(.timedOut, "the provider did not answer in time", model: model, latency: latency)
        }
        let reason = urlError.map { "\($0.localizedDescription) (URLError \($0.code.rawValue))" } ?? "\(error)"
        // Reached, and hung up on: the request went out and may have been billed ("could not
        // reach the provider" and "check the base_url" said otherwise, of a server that answered
        // most calls).
        if let code = urlError?.code, [.badServerResponse, .networkConnectionLost].contains(code) {
            return ProviderError(
                .connectionFailed, "the provider closed the connection without answering: \(reason)",
                hint: "the request may have reached it; the job moves to the next model", model: model,
                latency: latency)
        }
        // An answer cut off: curl's "transfer closed with 579 bytes remaining to read" comes as an
        // unknown URLError, and read "could not reach the provider" (a review's).
        if reason.contains("transfer closed") {
            return ProviderError(
                .connectionFailed, "the provider closed the connection before its answer ended: \(reason)",
                hint: "the request reached it; the job moves to the next model", model: model, latency: latency)
        }
        return ProviderError(
            .connectionFailed, "could not reach the provider: \(reason)",
            hint: "check the model's base_url and that the server is up", model: model, latency: latency)
    }

    /// An answer with status 2xx that is not a chat completion this adapter can read.
    static func invalidResponse(
        _ reason: String, body: Data, model: String, status: Int, latency: Duration?, rateLimit: RateLimitInfo?
    ) -> ProviderError {
        let excerpt = String(decoding: body.prefix(120), as: UTF8.self)
        return ProviderError(
            .invalidResponse, "\(reason); the body starts with: \(excerpt)",
            hint: "check that the model's base_url points at a chat-completions compatible server", model: model,
            httpStatus: status, rateLimit: rateLimit, latency: latency)
    }

    static func isContextLength(_ text: String) -> Bool {
        let phrases = [
            "context_length_exceeded", "maximum context length", "context length", "context window",
            "prompt is too long", "exceeds the available context", "context size", "too many tokens",
            // Anthropic: "input length and `max_tokens` exceed context limit: 198020 + 4096 > 200000".
            "exceed context limit",
        ]
        return phrases.contains { text.contains($0) }
    }

    /// A 4xx saying this model does not take a parameter or value the request uses (OpenAI's
    /// `unsupported_parameter` / `unsupported_value`, or a message to that effect), as opposed to
    /// a request no model would accept.
    static func isUnsupportedByModel(_ text: String) -> Bool {
        // Said of the model, not of any "does not support": a request's own mistake ("the role
        // does not support tool calls") stays the caller's, and is not sent round every model.
        // Servers that name the model rather than say "model" are matched by what they refuse:
        // Ollama's "<model> does not support tools", OpenAI's "image_url is only supported by
        // certain models", vLLM's "<model> is not a multimodal model", OpenRouter's "No endpoints
        // found that support tool use".
        [
            "unsupported_parameter", "unsupported_value", "not supported with this model", "model does not support",
            "not supported by this model", "only supported by certain models", "is not a multimodal model",
            "does not support tools", "does not support tool use", "does not support function calling",
            "does not support images", "does not support image input", "does not support vision",
            "no endpoints found that support",
            // Anthropic's newer models: "`temperature` and `top_p` cannot both be specified for this
            // model"; and "max_tokens: 32000 > 8192, which is the maximum allowed number of output
            // tokens for …": another model may allow it.
            "cannot both be specified for this model", "maximum allowed number of output tokens",
        ].contains { text.contains($0) }
            // A strict OpenAI-compatible server refusing prompt-caching marks as such: "….cache_control:
            // Extra inputs are not permitted", "Unrecognized request argument supplied:
            // cache_control", "unknown field `cache_control`", "('cache_control' was unexpected)".
            // Another model (Claude) takes them. Not a field under a mark ("cache_control.foo:
            // …", "cache_control[0]"): that is the request's own mistake.
            || (text.range(of: #"cache_control(?![a-z0-9_\[]|\.[a-z_])"#, options: .regularExpression) != nil
                && ["extra inputs", "extra fields", "not permitted", "unrecognized", "unknown", "not allowed",
                    "was unexpected", "additional properties"].contains { text.contains($0) }
                // A mark the server reads, with a value it does not take, is the request's.
                && !["unknown variant", "input should be", "invalid value"].contains { text.contains($0) })
    }

    /// A 4xx saying the server has no such model (said in the provider's own words: a request
    /// may not decide that a model is missing, which takes it out for every tenant).
    static func isUnknownModel(_ text: String) -> Bool {
        [
            "model_not_found", "model not found", "invalid model name", "invalid model:", "invalid_model",
            "is not a valid model", "unknown model", "no such model", "model does not exist",
            // DeepSeek's 400: "Model Not Exist".
            "model not exist",
        ]
            .contains { text.contains($0) }
    }

    /// What a LiteLLM proxy's message wraps: it passes an error on as the text of a Python dict,
    /// `{'error': '/chat/completions: Invalid model name passed in model=x. …'}`, whose quote
    /// would otherwise end the provider's own words at its second character.
    static func unwrapped(_ message: String) -> String {
        guard message.hasPrefix("{'error': '"), message.hasSuffix("'}") else { return message }
        return String(message.dropFirst("{'error': '".count).dropLast(2))
    }

    static func isQuota(_ text: String) -> Bool {
        [
            "insufficient_quota", "exceeded your current quota", "credit balance", "billing_error",
            "insufficient balance", "insufficient credits",
        ]
            .contains { text.contains($0) }
    }

    /// The part of a message before anything it quotes: the provider's own words. What follows
    /// the first quote or backtick that stands apart from a word (an apostrophe, as in
    /// "account's", is no quote) may be the request's, and a quote inside it can close the quote
    /// early ("'x' insufficient balance 'y'", "\"it's insufficient balance\"": a review's), so
    /// nothing after it is read.
    static func unquoted(_ message: String) -> String {
        guard let quote = message.range(of: #"(?<![\p{L}\p{N}])['"`]|['"`](?![\p{L}\p{N}])"#, options: .regularExpression)
        else { return message }
        return String(message[..<quote.lowerBound])
    }

    private static func fallbackMessage(status: Int, body: Data) -> String {
        let text = String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let reason = HTTPURLResponse.localizedString(forStatusCode: status)
        return text.isEmpty ? "HTTP \(status) (\(reason)) with an empty body" : "HTTP \(status) (\(reason)): \(text)"
    }

    /// The parts of an error body, whatever its shape.
    struct ErrorBody {
        /// `error.message` (or the body's own `message` / `detail`).
        var message: String?
        /// `error.type` (`invalid_request_error`, `overloaded_error`, …).
        var type: String?
        /// `error.code` (`rate_limit_exceeded`, `context_length_exceeded`, …), as text.
        var code: String?

        /// Reads whatever error fields the body has; all nil when it is not JSON.
        init(_ body: Data) {
            guard let json = try? JSONValue(parsing: body) else { return }
            let error = json["error"]
            if let text = error?.stringValue {
                message = text
            } else if let error, error.objectValue != nil {
                message = error["message"]?.stringValue
                type = error["type"]?.stringValue
                code = error["code"].flatMap { $0.stringValue ?? $0.intValue.map(String.init) }
            }
            message = message ?? json["message"].flatMap(Self.text) ?? json["detail"].flatMap(Self.text)
            if type == nil, json["type"]?.stringValue != "error" { type = json["type"]?.stringValue }
        }

        /// A message as text, also as FastAPI and pydantic servers write a validation error
        /// (Mistral's: `{"message": {"detail": [{"loc": ["body", "messages", 0, "cache_control"],
        /// "msg": "Extra inputs are not permitted"}]}}`, or `{"detail": [...]}`): each item's
        /// location joined with dots, then its message; read as nothing, a refusal of what one
        /// model cannot take failed the job as the request's fault.
        static func text(_ value: JSONValue) -> String? {
            if let string = value.stringValue { return string }
            if let items = value.arrayValue {
                let parts = items.compactMap { item -> String? in
                    guard let message = item["msg"]?.stringValue ?? item["message"]?.stringValue else {
                        return item.stringValue
                    }
                    let location = (item["loc"]?.arrayValue ?? []).map { $0.stringValue ?? $0.intValue.map(String.init) ?? "" }
                    return location.isEmpty ? message : location.joined(separator: ".") + ": " + message
                }
                return parts.isEmpty ? nil : parts.joined(separator: "; ")
            }
            return (value["detail"] ?? value["message"]).flatMap(text)
        }
    }
}
