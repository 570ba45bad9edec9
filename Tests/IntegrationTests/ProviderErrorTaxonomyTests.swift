import Foundation
import QueueModel
import Testing
@testable import Worker

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The error taxonomy (DESIGN.md, issue 4) as a table: an HTTP answer → a code → a decision.
@Suite("Provider error taxonomy")
struct ProviderErrorTaxonomyTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var status: Int
        var body: String
        var headers: [String: String] = [:]
        var budget: Duration = .seconds(5)
        var code: ProviderError.Code
        var decision: FallbackDecision
        var testDescription: String { name }
    }

    static let now = Date(timeIntervalSince1970: 1_750_000_000)

    static func openAI(_ message: String, type: String = "invalid_request_error", code: String? = nil) -> String {
        let body: JSONValue = [
            "error": [
                "message": .string(message), "type": .string(type), "param": nil,
                "code": code.map(JSONValue.string) ?? .null,
            ]
        ]
        return body.jsonText
    }

    static func anthropic(_ type: String, _ message: String) -> String {
        let body: JSONValue = ["type": "error", "error": ["type": .string(type), "message": .string(message)]]
        return body.jsonText
    }

    static let rows: [Row] = [
        Row(
            name: "429 rate_limit_exceeded, retry-after-ms fits the budget → retry the same model",
            status: 429, body: openAI("Rate limit reached", type: "requests", code: "rate_limit_exceeded"),
            headers: ["retry-after-ms": "1500"], code: .rateLimited,
            decision: .retrySameModel(after: .milliseconds(1500))),
        Row(
            name: "429 rate_limit_exceeded, retry-after in seconds fits → retry",
            status: 429, body: openAI("Rate limit reached", code: "rate_limit_exceeded"),
            headers: ["retry-after": "2"], code: .rateLimited, decision: .retrySameModel(after: .seconds(2))),
        Row(
            name: "429 rate_limit_exceeded, retry-after longer than the budget → next candidate",
            status: 429, body: openAI("Rate limit reached", code: "rate_limit_exceeded"),
            headers: ["retry-after": "30"], code: .rateLimited, decision: .nextCandidate),
        Row(
            name: "429 without retry-after, exhausted request budget resets in 1.5s → retry",
            status: 429, body: openAI("Rate limit reached", code: "rate_limit_exceeded"),
            headers: ["x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"],
            code: .rateLimited, decision: .retrySameModel(after: .milliseconds(1500))),
        Row(
            name: "429 with no wait given → next candidate",
            status: 429, body: openAI("Too many requests"), code: .rateLimited, decision: .nextCandidate),
        Row(
            name: "Anthropic 429 rate_limit_error with retry-after → retry",
            status: 429, body: anthropic("rate_limit_error", "Number of requests has exceeded your rate limit"),
            headers: ["retry-after": "3"], budget: .seconds(10), code: .rateLimited,
            decision: .retrySameModel(after: .seconds(3))),
        Row(
            name: "429 insufficient_quota → fail over and mark unhealthy",
            status: 429,
            body: openAI(
                "You exceeded your current quota", type: "insufficient_quota",
                code: "insufficient_quota"),
            headers: ["retry-after": "1"], code: .quotaExhausted, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "401 → fail over, this worker refused",
            status: 401, body: openAI("Incorrect API key provided", code: "invalid_api_key"),
            code: .unauthorized, decision: .nextCandidateRefusedHere),
        Row(
            name: "Anthropic 403 permission_error → fail over, this worker refused",
            status: 403, body: anthropic("permission_error", "Your API key does not have permission"),
            code: .unauthorized, decision: .nextCandidateRefusedHere),
        Row(
            name: "404 model_not_found → fail over and mark unhealthy (the catalog is wrong)",
            status: 404, body: openAI("The model `gpt-5x` does not exist", code: "model_not_found"),
            code: .modelNotFound, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "Anthropic 400 credit balance too low → fail over and mark unhealthy",
            status: 400, body: anthropic("invalid_request_error", "Your credit balance is too low to access the API"),
            code: .quotaExhausted, decision: .nextCandidateAndMarkUnhealthy),
        // A walkthrough's OpenRouter-shaped 402 was bad_request: the job failed with no fallback.
        Row(
            name: "402 insufficient credits (OpenRouter) → fail over and mark unhealthy",
            status: 402,
            body: #"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/settings/credits"}}"#,
            code: .quotaExhausted, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "DeepSeek's insufficient balance, under another status too → fail over and mark unhealthy",
            status: 400,
            body: openAI("Insufficient Balance", type: "unknown_error", code: "invalid_request_error"),
            code: .quotaExhausted, decision: .nextCandidateAndMarkUnhealthy),
        // A security review's request put "insufficient balance" in a field the provider's 400
        // quoted back: the shared model's breaker opened for every tenant.
        Row(
            name: "a 400 quoting the request's own words of credit → the request's, not the account's",
            status: 400,
            body: openAI("Invalid value: 'insufficient balance'. Supported values are: 'auto' and 'default'.",
                         code: "invalid_value"),
            code: .badRequest, decision: .failJob),
        // A review's: a quote inside the quoted value closed it early.
        Row(
            name: "a 400 quoting a request value with quotes of its own → still the request's",
            status: 400, body: openAI(#"Invalid value: "it's insufficient balance". Supported values are: 'auto'."#),
            code: .badRequest, decision: .failJob),
        Row(
            name: "a 400 quoting a request value that closes its quote → still the request's",
            status: 400, body: openAI("Invalid value: 'x' insufficient balance 'y'."),
            code: .badRequest, decision: .failJob),
        Row(
            name: "a quota message with apostrophes is still the account's",
            status: 400,
            body: anthropic("invalid_request_error", "Your account's credit balance isn't enough to access the API"),
            code: .quotaExhausted, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "500 → next candidate",
            status: 500, body: openAI("The server had an error", type: "server_error"),
            code: .serverError, decision: .nextCandidate),
        Row(
            name: "502 with an HTML body → next candidate",
            status: 502, body: "<html>Bad Gateway</html>", code: .serverError, decision: .nextCandidate),
        Row(
            name: "503 with an empty body → next candidate",
            status: 503, body: "", code: .serverError, decision: .nextCandidate),
        Row(
            name: "Anthropic 529 overloaded → next candidate",
            status: 529, body: anthropic("overloaded_error", "Overloaded"), code: .overloaded,
            decision: .nextCandidate),
        Row(
            name: "408 → next candidate",
            status: 408, body: "", code: .timedOut, decision: .nextCandidate),
        Row(
            name: "400 context_length_exceeded → larger context",
            status: 400,
            body: openAI("This model's maximum context length is 4096 tokens", code: "context_length_exceeded"),
            code: .contextLengthExceeded, decision: .largerContext),
        Row(
            name: "400 'maximum context length' without a code (vLLM) → larger context",
            status: 400,
            body: openAI("This model's maximum context length is 2048 tokens. However, you requested 3000"),
            code: .contextLengthExceeded, decision: .largerContext),
        Row(
            name: "Anthropic 400 'prompt is too long' → larger context",
            status: 400, body: anthropic("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"),
            code: .contextLengthExceeded, decision: .largerContext),
        Row(
            name: "Anthropic 400 'input length and max_tokens exceed context limit' → larger context",
            status: 400,
            body: anthropic(
                "invalid_request_error",
                "input length and `max_tokens` exceed context limit: 198020 + 4096 > 200000, decrease input length "
                    + "or `max_tokens` and try again"),
            code: .contextLengthExceeded, decision: .largerContext),
        Row(
            name: "Anthropic 400 'temperature and top_p cannot both be specified for this model' → next candidate",
            status: 400,
            body: anthropic(
                "invalid_request_error",
                "`temperature` and `top_p` cannot both be specified for this model. Please use only one."),
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "Anthropic 400 max_tokens over the model's output limit → next candidate",
            status: 400,
            body: anthropic(
                "invalid_request_error",
                "max_tokens: 32000 > 8192, which is the maximum allowed number of output tokens for claude-3-5-haiku"),
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "llama.cpp 400 'exceeds the available context size' → larger context",
            status: 400,
            body: #"{"error":{"code":400,"message":"the request exceeds the available context size","#
                + #""type":"exceed_context_size_error"}}"#,
            code: .contextLengthExceeded, decision: .largerContext),
        Row(
            name: "400 unsupported_parameter (max_tokens on an o1-style model) → next candidate: only it refuses",
            status: 400,
            body: #"{"error":{"code":"unsupported_parameter","param":"max_tokens","type":"invalid_request_error","#
                + #""message":"Unsupported parameter: 'max_tokens' is not supported with this model. "#
                + #"Use 'max_completion_tokens' instead."}}"#,
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "400 unsupported_value (a temperature this model does not take) → next candidate",
            status: 400,
            body: openAI(
                "Unsupported value: 'temperature' does not support 0.2 with this model. Only the default (1) value "
                    + "is supported.", code: "unsupported_value"),
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "400 without a code saying the model does not support it → next candidate",
            status: 400, body: anthropic("invalid_request_error", "This model does not support image input."),
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "Ollama 400 '<model> does not support tools' → next candidate",
            status: 400, body: #"{"error":"registry.ollama.ai/library/notools:latest does not support tools"}"#,
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "OpenAI 400 'image_url is only supported by certain models' → next candidate",
            status: 400,
            body: openAI("Invalid content type. image_url is only supported by certain models.", code: "invalid_value"),
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "vLLM 400 '<model> is not a multimodal model' → next candidate",
            status: 400, body: openAI("meta-llama/Llama-3.1-8B-Instruct is not a multimodal model"),
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "OpenRouter 404 'No endpoints found that support tool use' → next candidate",
            status: 404, body: #"{"error":{"message":"No endpoints found that support tool use.","code":404}}"#,
            code: .unsupportedRequest, decision: .nextCandidate),
        Row(
            name: "400 saying something of the request does not support something → fail the job",
            status: 400, body: openAI("Messages with role 'tool' does not support the field 'name'"),
            code: .badRequest, decision: .failJob),
        Row(
            name: "LiteLLM 400 'Invalid model name passed in model=…' → fail over and mark unhealthy",
            status: 400,
            body: #"{"error":{"message":"{'error': '/chat/completions: Invalid model name passed in model=does-not-exist. Call `/v1/models` to view available models for your key.'}","type":"None","param":"None","code":"400"}}"#,
            code: .modelNotFound, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "OpenRouter 400 '… is not a valid model ID' → fail over and mark unhealthy",
            status: 400, body: #"{"error":{"message":"openai/gpt-5x is not a valid model ID","code":400}}"#,
            code: .modelNotFound, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "Mistral 400 invalid_model → fail over and mark unhealthy",
            status: 400,
            body: #"{"object":"error","message":"Invalid model: mistral-large-x","type":"invalid_model","param":null,"code":"1500"}"#,
            code: .modelNotFound, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "DeepSeek 400 'Model Not Exist' → fail over and mark unhealthy",
            status: 400, body: openAI("Model Not Exist", code: "invalid_request_error"),
            code: .modelNotFound, decision: .nextCandidateAndMarkUnhealthy),
        Row(
            name: "400 quoting a request's value that reads 'invalid model name' → fail the job",
            status: 400, body: openAI("Invalid value for 'user': 'invalid model name'"), code: .badRequest, decision: .failJob),
        Row(
            name: "other 400 → fail the job",
            status: 400, body: openAI("Invalid value for 'temperature'"), code: .badRequest, decision: .failJob),
        Row(
            name: "422 → fail the job",
            status: 422, body: #"{"detail":"messages: field required"}"#, code: .badRequest, decision: .failJob),
        Row(
            name: "Anthropic 413 request_too_large → fail the job",
            status: 413, body: anthropic("request_too_large", "Request exceeds the maximum allowed size"),
            code: .badRequest, decision: .failJob),
    ]

    @Test("an HTTP error answer maps to its code and decision", arguments: rows)
    func classifies(_ row: Row) {
        let error = ProviderError.fromResponse(
            status: row.status, headers: row.headers, body: Data(row.body.utf8), model: "m", now: Self.now)
        #expect(error.code == row.code)
        #expect(error.httpStatus == row.status)
        #expect(error.decision(remainingBudget: row.budget) == row.decision)
        #expect(!error.message.isEmpty)
    }

    @Test("timeouts and connection failures move to the next candidate")
    func transportFailures() {
        let timeout = ProviderError.fromTransport(URLError(.timedOut), model: "m", latency: .seconds(1))
        #expect(timeout.code == .timedOut)
        #expect(timeout.decision(remainingBudget: .seconds(5)) == .nextCandidate)
        let refused = ProviderError.fromTransport(URLError(.cannotConnectToHost), model: "m", latency: nil)
        #expect(refused.code == .connectionFailed)
        #expect(refused.decision(remainingBudget: .seconds(5)) == .nextCandidate)
        #expect(refused.message.hasPrefix("could not reach the provider"))
        // An answer cut off (as URLSession on Linux reports it) was reached, not "could not reach".
        let cut = ProviderError.fromTransport(
            URLError(.unknown, userInfo: [NSLocalizedDescriptionKey: "transfer closed with 991 bytes remaining to read"]),
            model: "m", latency: nil)
        #expect(cut.code == .connectionFailed)
        #expect(cut.message.hasPrefix("the provider closed the connection before its answer ended: transfer closed"),
                "\(cut.message)")
    }

    @Test("an undecodable 200 body moves to the next candidate")
    func undecodableSuccess() {
        for body in ["{\"choices\": [ not json", "{\"object\":\"list\"}", "[]"] {
            let exchange = HTTPTransport.Exchange(status: 200, headers: [:], body: Data(body.utf8), latency: .zero)
            do {
                _ = try OpenAIProvider.reply(from: exchange, model: "m", now: Self.now)
                Issue.record("\(body) was read as a completion")
            } catch let error as ProviderError {
                #expect(error.code == .invalidResponse)
                #expect(error.decision(remainingBudget: .seconds(5)) == .nextCandidate)
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }

    @Test("a 200 carrying an error object (as some proxies send) is classified by its code")
    func embeddedError() throws {
        let body = #"{"error":{"code":502,"message":"upstream provider returned an error"}}"#
        let exchange = HTTPTransport.Exchange(status: 200, headers: [:], body: Data(body.utf8), latency: .zero)
        do {
            _ = try OpenAIProvider.reply(from: exchange, model: "m", now: Self.now)
            Issue.record("an error body was read as a completion")
        } catch let error as ProviderError {
            #expect(error.code == .serverError)
            #expect(error.message == "upstream provider returned an error")
        }
        // A code in words says what failed (it was taken for the provider's outage, a 502 against
        // the breaker): a context too long asks for a larger one; a rate limit is a 429.
        for (code, expected) in [
            ("context_length_exceeded", ProviderError.Code.contextLengthExceeded),
            ("rate_limit_exceeded", .rateLimited), ("insufficient_quota", .quotaExhausted), ("upstream_down", .serverError),
        ] {
            let body = #"{"error":{"code":"\#(code)","message":"the provider says \#(code)"}}"#
            let exchange = HTTPTransport.Exchange(status: 200, headers: [:], body: Data(body.utf8), latency: .zero)
            let error = #expect(throws: ProviderError.self) { try OpenAIProvider.reply(from: exchange, model: "m", now: Self.now) }
            #expect(error?.code == expected, "\(code): \(String(describing: error))")
        }
    }

    @Test("missing keys, bad catalog entries and non-provider errors")
    func otherFailures() {
        let missing = ProviderError(.missingAPIKey, "no key", model: "m")
        #expect(missing.decision(remainingBudget: .seconds(1)) == .nextCandidateAndSkipHere)
        #expect(
            ProviderError(.misconfigured, "bad", model: "m").decision(remainingBudget: .seconds(1))
                == .nextCandidateAndMarkUnhealthy)
        #expect(
            ProviderError(.unsupportedRequest, "audio", model: "m").decision(remainingBudget: .seconds(1))
                == .nextCandidate)
        #expect(
            ProviderError.decision(for: CocoaError(.fileNoSuchFile), remainingBudget: .seconds(1)) == .nextCandidate)
        #expect(ProviderError.decision(for: missing, remainingBudget: .seconds(1)) == .nextCandidateAndSkipHere)
    }

    @Test("a TLS skip this worker has not confirmed is this worker's problem: skipped here, the breaker left alone")
    func unconfirmedTLSSkip() throws {
        var model = ModelSpec(name: "m", provider: .openai)
        model.settings = ["insecure_skip_tls_verify": true]
        do {
            _ = try InsecureTLS(environment: [:]).skipsVerification(for: model, url: URL(string: "https://h/v1")!)
            Issue.record("an unconfirmed skip was allowed")
        } catch let error as ProviderError {
            #expect(error.code == .misconfigured)
            #expect(error.decision(remainingBudget: .seconds(1)) == .nextCandidateAndSkipHere)
        }
    }

    @Test("the trail summary is one short line with status, Switchyard's code, the provider's, and wait")
    func summary() {
        let error = ProviderError.fromResponse(
            status: 429, headers: ["retry-after-ms": "1500"],
            body: Data(Self.openAI("Rate limit reached\nfor requests", code: "rate_limit_exceeded").utf8),
            model: "gpt-4", now: Self.now)
        #expect(error.summary == "HTTP 429 rate_limited (rate_limit_exceeded): Rate limit reached for requests (retry after 1.5s)")
        // The wait spends the model's budget for as long as it asks, not as long as the headers'
        // token window (45 s) runs.
        #expect(error.rateLimit == RateLimitInfo(remainingRequests: 0, requestsReset: .milliseconds(1500)))
        let withWindow = ProviderError.fromResponse(
            status: 429, headers: ["retry-after": "1", "x-ratelimit-reset-tokens": "45s", "x-ratelimit-remaining-tokens": "900"],
            body: Data(Self.openAI("Rate limit reached", code: "rate_limit_exceeded").utf8), model: "gpt-4", now: Self.now)
        #expect(withWindow.rateLimit == RateLimitInfo(
            remainingRequests: 0, requestsReset: .seconds(1), remainingTokens: 900, tokensReset: .seconds(1)))
        let mislabelled = ProviderError.fromResponse(
            status: 401, headers: [:], body: Data(#"{"error":{"type":"server_error","message":"no"}}"#.utf8), model: "m",
            now: Self.now)
        #expect(mislabelled.summary == "HTTP 401 unauthorized (server_error): no")
        let long = ProviderError(.serverError, String(repeating: "x", count: 1000), model: "m", httpStatus: 500)
        #expect(long.summary.count <= 300)
        #expect(!long.summary.contains("\n"))
    }
}
