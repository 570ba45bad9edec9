import Foundation
import QueueModel
import Testing
@testable import Worker

/// The `openai` adapter against the fake provider: what it sends, and how each answer is read.
@Suite("OpenAI-compatible provider")
struct OpenAIProviderTests {
    static let keyVariable = "SWITCHYARD_TEST_OPENAI_KEY"
    static let key = "sk-t3Jq8Wn5Rz2Lx9Vm4Pk7Hd"

    static func model(_ server: FakeProviderServer, name: String = "gpt-test", upstream: String? = nil) -> ModelSpec {
        ModelSpec(
            name: name, provider: .openai, baseURL: server.openAIBaseURL, apiKeyEnv: keyVariable,
            upstreamModel: upstream)
    }

    static func provider() -> OpenAIProvider {
        OpenAIProvider(transport: ProviderTestSupport.transport(), environment: [keyVariable: key])
    }

    static func call(_ model: ModelSpec, _ text: String = "hello", timeout: Duration = .seconds(10)) -> ProviderCall {
        ProviderCall(request: ProviderTestSupport.request(text), model: model, timeout: timeout)
    }

    @Test("a normal answer: upstream model name, stream off, bearer key, usage read")
    func success() async throws {
        try await withFakeProviderServer { server in
            let model = Self.model(server, upstream: "upstream-gpt")
            let request = ProviderTestSupport.request("hello there", extra: ["stream": true, "model": "ignored"])
            let reply = try await Self.provider().complete(
                ProviderCall(request: request, model: model, timeout: .seconds(10)))
            #expect(reply.httpStatus == 200)
            #expect(reply.response["object"] == "chat.completion")
            #expect(reply.response["choices"]?[0]?["message"]?["content"] == "echo: hello there")
            #expect(reply.usage == TokenUsage(promptTokens: 3, completionTokens: 3))
            #expect(reply.latency > .zero)
            #expect(reply.rateLimit == nil)

            let sent = try await server.requests(for: "upstream-gpt")
            #expect(sent.count == 1)
            #expect(sent.first?["path"] == "/v1/chat/completions")
            #expect(sent.first?["body"]?["stream"] == false)
            #expect(sent.first?["body"]?["messages"] == request["messages"])
            #expect(sent.first?["headers"]?["authorization"]?.stringValue == "Bearer \(Self.key)")
            #expect(try await server.count(for: "ignored") == 0)
        }
    }

    @Test("cached prompt tokens are read from prompt_tokens_details, as a part of prompt_tokens")
    func cachedTokens() async throws {
        try await withFakeProviderServer { server in
            try await server.script([
                "gpt-test": [
                    "usage": [
                        "prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100,
                        "prompt_tokens_details": ["cached_tokens": 1536, "audio_tokens": 0],
                    ]
                ],
                // What a LiteLLM proxy in front of Anthropic adds: the cache writes.
                "proxied": [
                    "usage": [
                        "prompt_tokens": 160, "completion_tokens": 30, "total_tokens": 190,
                        "prompt_tokens_details": ["cached_tokens": 50], "cache_creation_input_tokens": 10,
                    ]
                ],
            ])
            let reply = try await Self.provider().complete(Self.call(Self.model(server)))
            #expect(reply.usage == TokenUsage(promptTokens: 2000, completionTokens: 100, cachedTokens: 1536))
            let proxied = try await Self.provider().complete(Self.call(Self.model(server, name: "proxied")))
            #expect(
                proxied.usage
                    == TokenUsage(promptTokens: 160, completionTokens: 30, cachedTokens: 50, cacheWriteTokens: 10))
            // More than results can store (or any call uses): an invalid answer, not a failed write-back.
            try await server.script(["huge": ["usage": ["prompt_tokens": 3e9, "completion_tokens": 1]]])
            let huge = await ProviderTestSupport.providerError {
                try await Self.provider().complete(Self.call(Self.model(server, name: "huge")))
            }
            #expect(huge?.code == .invalidResponse)
        }
    }

    @Test("rate-limit headers on a success are parsed for routing")
    func rateLimitHeaders() async throws {
        try await withFakeProviderServer { server in
            try await server.script([
                "gpt-test": [
                    "headers": [
                        "x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "7",
                        "x-ratelimit-reset-requests": "6m0s", "x-ratelimit-remaining-tokens": "1234",
                        "x-ratelimit-reset-tokens": "20ms",
                    ]
                ]
            ])
            let reply = try await Self.provider().complete(Self.call(Self.model(server)))
            #expect(reply.rateLimit?.requestLimit == 100)
            #expect(reply.rateLimit?.remainingRequests == 7)
            #expect(reply.rateLimit?.requestsReset == .seconds(360))
            #expect(reply.rateLimit?.remainingTokens == 1234)
            #expect(reply.rateLimit?.tokensReset == .milliseconds(20))
        }
    }

    @Test("500 and 529 move to the next candidate")
    func serverErrors() async throws {
        try await withFakeProviderServer { server in
            try await server.script(["gpt-500": ["kind": "server_error"], "gpt-529": ["kind": "overloaded"]])
            let provider = Self.provider()
            let e500 = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(Self.model(server, name: "gpt-500")))
            }
            #expect(e500?.code == .serverError)
            #expect(e500?.httpStatus == 500)
            #expect(e500?.decision(remainingBudget: .seconds(5)) == .nextCandidate)
            let e529 = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(Self.model(server, name: "gpt-529")))
            }
            #expect(e529?.code == .overloaded)
            #expect(e529?.decision(remainingBudget: .seconds(5)) == .nextCandidate)
        }
    }

    @Test("429 rate_limit_exceeded: the retry-after is honoured in the decision, and the retry succeeds")
    func rateLimited() async throws {
        try await withFakeProviderServer { server in
            try await server.script([
                "gpt-test": [["kind": "rate_limited", "retry_after_ms": 250], ["kind": "ok"]],
                "gpt-seconds": ["kind": "rate_limited", "retry_after": "2"],
            ])
            let provider = Self.provider()
            // Closures stay out of #require's argument: with Swift 6.3 a closure written inside a
            // macro argument was seen to run a sibling closure's body instead.
            let limited = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(Self.model(server)))
            }
            let error = try #require(limited)
            #expect(error.code == .rateLimited)
            #expect(error.providerCode == "rate_limit_exceeded")
            #expect(error.retryAfter == .milliseconds(250))
            #expect(error.decision(remainingBudget: .seconds(2)) == .retrySameModel(after: .milliseconds(250)))
            #expect(error.decision(remainingBudget: .milliseconds(100)) == .nextCandidate)
            // What the executor does with the decision: the same model again, which now answers.
            let reply = try await provider.complete(Self.call(Self.model(server)))
            #expect(reply.httpStatus == 200)
            #expect(try await server.count(for: "gpt-test") == 2)

            let inSeconds = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(Self.model(server, name: "gpt-seconds")))
            }
            #expect(inSeconds?.decision(remainingBudget: .seconds(5)) == .retrySameModel(after: .seconds(2)))
            #expect(inSeconds?.decision(remainingBudget: .seconds(1)) == .nextCandidate)
        }
    }

    @Test("429 insufficient_quota fails over and marks the model unhealthy; 401 fails over, this worker refused")
    func quotaAndAuth() async throws {
        try await withFakeProviderServer { server in
            try await server.script(["gpt-quota": ["kind": "quota"], "gpt-401": ["kind": "unauthorized"]])
            let provider = Self.provider()
            for (name, code, decision) in [
                ("gpt-quota", ProviderError.Code.quotaExhausted, FallbackDecision.nextCandidateAndMarkUnhealthy),
                ("gpt-401", .unauthorized, .nextCandidateRefusedHere),
            ] {
                let error = await ProviderTestSupport.providerError {
                    try await provider.complete(Self.call(Self.model(server, name: name)))
                }
                #expect(error?.code == code)
                #expect(error?.decision(remainingBudget: .seconds(5)) == decision)
            }
        }
    }

    /// A review's base_url without its /v1 read as a missing model, and nothing named the address.
    @Test("a server without such a model names the address called, without its user and password")
    func notFoundNamesTheAddress() async throws {
        try await withFakeProviderServer { server in
            try await server.script(["gpt-gone": ["kind": "not_found"]])
            var model = Self.model(server, name: "gpt-gone")
            model.baseURL = "http://someone:secret@127.0.0.1:\(server.port)/v1"
            let error = await ProviderTestSupport.providerError {
                try await Self.provider().complete(Self.call(model))
            }
            #expect(error?.code == .modelNotFound)
            #expect(error?.message.hasSuffix("(POST http://127.0.0.1:\(server.port)/v1/chat/completions)") == true,
                    "\(String(describing: error?.message))")
            #expect(error?.summary.contains("secret") == false)
        }
    }

    @Test("a context-length error asks for a larger context; any other 400 fails the job")
    func badRequests() async throws {
        try await withFakeProviderServer { server in
            try await server.script(["gpt-small": ["kind": "context_length"], "gpt-400": ["kind": "bad_request"]])
            let provider = Self.provider()
            let context = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(Self.model(server, name: "gpt-small")))
            }
            #expect(context?.code == .contextLengthExceeded)
            #expect(context?.decision(remainingBudget: .seconds(5)) == .largerContext)
            let bad = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(Self.model(server, name: "gpt-400")))
            }
            #expect(bad?.code == .badRequest)
            #expect(bad?.httpStatus == 400)
            #expect(bad?.message == "Invalid value for 'temperature': expected a number.")
            #expect(bad?.decision(remainingBudget: .seconds(5)) == .failJob)
        }
    }

    /// Prompt-caching marks written for Claude went to every OpenAI-compatible model: a strict
    /// server (Mistral's, NVIDIA NIM) refuses them as extra inputs, and that 400 failed the job.
    @Test("cache_control marks: kept for a custom endpoint, dropped for OpenAI or when the model says; a refusal of them moves on")
    func cacheControlMarks() async throws {
        try await withFakeProviderServer { server in
            let marked: JSONValue = [
                "messages": [
                    ["role": "system", "content": [["type": "text", "text": "long rules", "cache_control": ["type": "ephemeral"]]]],
                    ["role": "user", "content": "hi", "cache_control": ["type": "ephemeral"]],
                ],
                "tools": [["type": "function", "function": ["name": "f"], "cache_control": ["type": "ephemeral"]]],
            ]
            func sent(keep: Bool?) async throws -> JSONValue? {
                var model = Self.model(server, name: "gpt-marks-\(keep.map(String.init) ?? "default")")
                if let keep { model.settings = ["keep_cache_control": .bool(keep)] }
                _ = try await Self.provider().complete(ProviderCall(request: marked, model: model, timeout: .seconds(10)))
                return try await server.requests(for: model.name).first?["body"]
            }
            let kept = try await sent(keep: nil)
            #expect(kept?["messages"] == marked["messages"] && kept?["tools"] == marked["tools"])
            let dropped = try #require(try await sent(keep: false))
            #expect(!dropped.description.contains("cache_control"), "\(dropped)")
            #expect(dropped["messages"]?[0]?["content"]?[0]?["text"] == "long rules")
            #expect(dropped["tools"]?[0]?["function"]?["name"] == "f")
            // OpenAI itself caches long prompts on its own: dropped there unless the model keeps them.
            let openAI = try #require(URL(string: "https://api.openai.com/v1/chat/completions"))
            #expect(!OpenAIProvider.keepsCacheControl(ModelSpec(name: "o", provider: .openai), url: openAI))
            #expect(OpenAIProvider.keepsCacheControl(
                ModelSpec(name: "o", provider: .openai, settings: ["keep_cache_control": true]), url: openAI))
        }
        func classified(_ status: Int, _ body: String) -> ProviderError {
            ProviderError.fromResponse(status: status, headers: [:], body: Data(body.utf8), model: "m", now: Date())
        }
        let refused = classified(
            400, #"{"error": {"message": "messages.0.content.0.cache_control: Extra inputs are not permitted"}}"#)
        #expect(refused.code == .unsupportedRequest)
        #expect(refused.decision(remainingBudget: .seconds(5)) == .nextCandidate)
        #expect(refused.hint?.contains(#""keep_cache_control": false"#) == true)
        // Mistral and other FastAPI servers answer with pydantic's list of problems (a review:
        // read as no message at all, they still failed the job as bad_request).
        let detail = #"[{"type": "extra_forbidden", "loc": ["body", "messages", 0, "content", 0, "cache_control"], "msg": "Extra inputs are not permitted"}]"#
        for body in [
            #"{"object": "error", "message": {"detail": \#(detail)}, "type": "invalid_request_error"}"#,
            #"{"detail": \#(detail)}"#, #"{"message": \#(detail)}"#,
            #"{"error": {"message": "Unrecognized request argument supplied: cache_control"}}"#,
            // Other servers' words for it (a review: the first narrowing missed each).
            #"{"error": {"message": "Error from provider: Extra inputs are not permitted, field: 'messages[0].cache_control'"}}"#,
            #"{"error": {"message": "messages.0.content.0.cache_control\n  Extra inputs are not permitted"}}"#,
            #"{"error": {"message": "body.messages.0.cache_control: extra fields not permitted"}}"#,
            #"{"error": {"message": "unknown field `cache_control`, expected one of `role`, `content`"}}"#,
            #"{"error": {"message": "Additional properties are not allowed ('cache_control' was unexpected)"}}"#,
            #"{"error": {"message": "Unrecognized request arguments supplied: cache_control, temperature"}}"#,
            #"{"error": {"message": "Unrecognized request argument supplied: cache_control."}}"#,
        ] {
            let error = classified(422, body)
            #expect(error.code == .unsupportedRequest, "\(body) → \(error)")
        }
        #expect(classified(422, #"{"detail": \#(detail)}"#).message
            == "body.messages.0.content.0.cache_control: Extra inputs are not permitted")
        // A mark's own field refused is the request's mistake: it fails, as any bad request.
        let field = classified(400, #"{"error": {"message": "messages.0.content.0.cache_control.foo: Extra inputs are not permitted"}}"#)
        #expect(field.code == .badRequest, "\(field)")
        // So is a mark whose value the server does not take (it reads marks).
        let value = classified(400, #"{"error": {"message": "cache_control: unknown variant `persistent`, expected `ephemeral`"}}"#)
        #expect(value.code == .badRequest, "\(value)")
    }

    @Test("a malformed 200 body moves to the next candidate")
    func malformed() async throws {
        try await withFakeProviderServer { server in
            try await server.script(["gpt-test": ["kind": "malformed"]])
            let error = await ProviderTestSupport.providerError {
                try await Self.provider().complete(Self.call(Self.model(server)))
            }
            #expect(error?.code == .invalidResponse)
            #expect(error?.decision(remainingBudget: .seconds(5)) == .nextCandidate)
        }
    }

    @Test("a 200 the parser cannot read says why, not just \"not JSON\"; a byte order mark is skipped")
    func unreadableBodies() async throws {
        try await withFakeProviderServer { server in
            let answer = #"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#
            try await server.script(["gpt-test": ["status": 200, "body": .string("\u{FEFF}" + answer)]])
            let reply = try await Self.provider().complete(Self.call(Self.model(server)))
            #expect(reply.response["choices"]?[0]?["message"]?["content"] == "hi")

            for (body, reason) in [
                (answer.replacingOccurrences(of: "\"hi\"", with: #""x\ud800y""#), "not valid JSON: an unpaired surrogate at byte"),
                (answer.replacingOccurrences(of: #""index":0"#, with: #""index":0,"logprob":1e400"#),
                 "not JSON this program can read: a number past ±1.8e308 at byte"),
            ] {
                try await server.script(["gpt-test": ["status": 200, "body": .string(body)]])
                let error = await ProviderTestSupport.providerError {
                    try await Self.provider().complete(Self.call(Self.model(server)))
                }
                #expect(error?.code == .invalidResponse)
                #expect(error?.message.contains("with a body that is \(reason)") == true,
                        "\(String(describing: error))")
            }
        }
    }

    @Test("a server slower than the attempt's budget is cut off at the budget")
    func slowServerTimesOut() async throws {
        try await withFakeProviderServer { server in
            try await server.script(["gpt-slow": ["delay_ms": 15000]])
            let error = await ProviderTestSupport.providerError {
                try await Self.provider().complete(
                    Self.call(Self.model(server, name: "gpt-slow"), timeout: .milliseconds(300)))
            }
            #expect(error?.code == .timedOut)
            #expect(error?.decision(remainingBudget: .seconds(5)) == .nextCandidate)
            // Not a speed assertion: the attempt ended long before the server would have answered.
            #expect(try #require(error?.latency) < .seconds(10))
        }
    }

    @Test("an answer within a budget of a fraction of a second is taken, not cut at a whole second")
    func fractionalBudget() async throws {
        try await withFakeProviderServer { server in
            // Each well inside its budget; the second past a whole second of it. Up to three tries
            // each: a loaded machine once took 800 ms more than the delay (CI); a budget cut to
            // whole seconds fails every try (1 s < 1.05 s).
            for (delay, budget) in [(100, 800), (1050, 1990)] {
                try await server.script(["gpt-test": ["delay_ms": .number(Double(delay))]])
                var answered = false
                for _ in 0..<3 where !answered {
                    let reply = try? await Self.provider().complete(
                        Self.call(Self.model(server), timeout: .milliseconds(budget)))
                    answered = reply?.response["choices"]?[0]?["message"]?["content"] != nil
                }
                #expect(answered, "\(delay) ms in \(budget) ms")
            }
        }
    }

    @Test("cancelling the task cancels the request")
    func cancellation() async throws {
        try await withFakeProviderServer { server in
            try await server.script(["gpt-slow": ["delay_ms": 15000]])
            let provider = Self.provider()
            let model = Self.model(server, name: "gpt-slow")
            let task = Task { try await provider.complete(Self.call(model, timeout: .seconds(60))) }
            while try await server.count(for: "gpt-slow") == 0 { try await Task.sleep(for: .milliseconds(20)) }
            task.cancel()
            do {
                _ = try await task.value
                Issue.record("a cancelled call returned an answer")
            } catch {
                #expect(error is CancellationError)
            }
        }
    }

    @Test("a refused connection moves to the next candidate")
    func connectionRefused() async throws {
        let model = ModelSpec(name: "gpt-nowhere", provider: .openai, baseURL: "http://127.0.0.1:1/v1")
        let error = await ProviderTestSupport.providerError {
            try await Self.provider().complete(Self.call(model, timeout: .seconds(10)))
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.decision(remainingBudget: .seconds(5)) == .nextCandidate)
    }

    @Test("a missing key variable is named in the error, and nothing is sent")
    func missingKey() async throws {
        try await withFakeProviderServer { server in
            var model = Self.model(server)
            model.apiKeyEnv = "SWITCHYARD_TEST_UNSET_KEY"
            let provider = OpenAIProvider(transport: ProviderTestSupport.transport(), environment: [:])
            let error = await ProviderTestSupport.providerError { try await provider.complete(Self.call(model)) }
            #expect(error?.code == .missingAPIKey)
            #expect(error?.message.contains("SWITCHYARD_TEST_UNSET_KEY") == true)
            #expect(error?.hint?.contains("SWITCHYARD_TEST_UNSET_KEY") == true)
            #expect(error?.decision(remainingBudget: .seconds(5)) == .nextCandidateAndSkipHere)
            let sent = try await server.count(for: "gpt-test")
            #expect(sent == 0)
        }
    }

    @Test("a model without api_key_env sends no Authorization header (local servers)")
    func noKeyNeeded() async throws {
        try await withFakeProviderServer { server in
            var model = Self.model(server, name: "llama-local")
            model.apiKeyEnv = nil
            model.baseURL = server.openAIBaseURL + "/"
            _ = try await Self.provider().complete(Self.call(model))
            let sent = try await server.requests(for: "llama-local")
            #expect(sent.first?["headers"]?["authorization"] == nil)
            #expect(sent.first?["headers"]?["user-agent"]?.stringValue == "switchyard-worker/\(SwitchyardVersion.current)")
        }
    }

    @Test("the HTTP session runs as many requests at once as the worker's concurrency, past the default 6")
    func connectionsPerHost() async throws {
        for (limit, requests) in [(12, 12), (2, 6)] {
            try await withFakeProviderServer { server in
                try await server.script(["gpt-test": ["delay_ms": 500]])
                let provider = OpenAIProvider(
                    transport: HTTPTransport(maximumConnectionsPerHost: limit),
                    environment: [Self.keyVariable: Self.key])
                let model = Self.model(server)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<requests {
                        group.addTask { _ = try await provider.complete(Self.call(model, "q\(index)")) }
                    }
                    try await group.waitForAll()
                }
                let inFlight = try await server.stats()["max_in_flight"]?.intValue ?? 0
                if limit > 6 {
                    #expect(inFlight > 6)
                } else {
                    #expect(inFlight <= limit)
                }
            }
        }
    }

    @Test("the factory hands out the adapter for each provider kind")
    func factory() {
        let factory = ProviderFactory(concurrency: 32, environment: [:])
        #expect(factory.transport.maximumConnectionsPerHost == 32)
        #expect(factory.provider(for: ModelSpec(name: "a", provider: .openai)) is OpenAIProvider)
        #expect(factory.provider(for: ModelSpec(name: "b", provider: .anthropic)) is AnthropicProvider)
        #expect(factory.provider(for: ModelSpec(name: "c", provider: .simulated)) is SimulatedProvider)
    }
}
