import Foundation
import QueueModel
import Testing
@testable import Worker

/// The `anthropic` adapter: OpenAI-shaped requests out, Messages API in between, OpenAI-shaped
/// completions back.
@Suite("Anthropic provider")
struct AnthropicProviderTests {
    static let keyVariable = "SWITCHYARD_TEST_ANTHROPIC_KEY"
    static let key = "sk-ant-t9Qm4Xw7Lp2Vz8Kr5Ns3"
    static let model = ModelSpec(name: "claude-test", provider: .anthropic, upstreamModel: "claude-upstream")

    static func provider() -> AnthropicProvider {
        AnthropicProvider(transport: ProviderTestSupport.transport(), environment: [keyVariable: key])
    }

    static func model(_ server: FakeProviderServer, name: String = "claude-test") -> ModelSpec {
        ModelSpec(name: name, provider: .anthropic, baseURL: server.anthropicBaseURL, apiKeyEnv: keyVariable)
    }

    @Test("system messages, max_tokens, stop, temperature, tools and images are translated")
    func requestTranslation() throws {
        let request: [String: JSONValue] = [
            "messages": [
                ["role": "system", "content": "Be brief."],
                ["role": "developer", "content": [["type": "text", "text": "Answer in French."]]],
                ["role": "user", "content": "Weather in Paris?"],
                [
                    "role": "user",
                    "content": [
                        ["type": "text", "text": "And this picture?"],
                        ["type": "image_url", "image_url": ["url": "data:image/png;base64,iVBORw0KGgo="]],
                    ],
                ],
                [
                    "role": "assistant", "content": nil,
                    "tool_calls": [
                        [
                            "id": "call_1", "type": "function",
                            "function": ["name": "weather", "arguments": #"{"city":"Paris"}"#],
                        ]
                    ],
                ],
                ["role": "tool", "tool_call_id": "call_1", "content": "18°C"],
            ],
            "temperature": 1.4, "top_p": 0.9, "stop": "END", "user": "tenant-7",
            "tools": [
                [
                    "type": "function",
                    "function": [
                        "name": "weather", "description": "Current weather", "parameters": ["type": "object"],
                    ],
                ]
            ],
            "tool_choice": "required",
        ]
        let body = try AnthropicTranslation.messagesRequest(from: request, model: Self.model, defaultMaxTokens: 1024)
        #expect(body["model"] == "claude-upstream")
        #expect(body["system"] == "Be brief.\n\nAnswer in French.")
        #expect(body["max_tokens"] == 1024)
        #expect(body["temperature"] == 1)
        #expect(body["top_p"] == nil)  // not beside temperature: newer Claude models refuse both
        #expect(body["stop_sequences"] == ["END"])
        #expect(body["metadata"] == ["user_id": "tenant-7"])
        #expect(
            body["tools"] == [
                ["name": "weather", "description": "Current weather", "input_schema": ["type": "object"]]
            ])
        #expect(body["tool_choice"] == ["type": "any"])
        #expect(body["stream"] == nil)

        let messages = try #require(body["messages"]?.arrayValue)
        #expect(messages.count == 3)  // the two user turns merge; the tool result is a user turn
        #expect(messages[0]["role"] == "user")
        #expect(
            messages[0]["content"] == [
                ["type": "text", "text": "Weather in Paris?"],
                ["type": "text", "text": "And this picture?"],
                ["type": "image", "source": ["type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="]],
            ])
        #expect(
            messages[1] == [
                "role": "assistant",
                "content": [["type": "tool_use", "id": "call_1", "name": "weather", "input": ["city": "Paris"]]],
            ])
        #expect(
            messages[2] == [
                "role": "user", "content": [["type": "tool_result", "tool_use_id": "call_1", "content": "18°C"]],
            ])
    }

    @Test("max_tokens from the request wins; a list of stops is kept; bad requests are rejected")
    func requestEdges() throws {
        let body = try AnthropicTranslation.messagesRequest(
            from: ["messages": [["role": "user", "content": "hi"]], "max_tokens": 50, "stop": ["a", "b"]],
            model: Self.model, defaultMaxTokens: 1024)
        #expect(body["max_tokens"] == 50)
        #expect(body["stop_sequences"] == ["a", "b"])
        #expect(body["messages"] == [["role": "user", "content": "hi"]])
        #expect(body["system"] == nil)

        for (request, code) in [
            (["messages": []] as [String: JSONValue], ProviderError.Code.badRequest),
            (["messages": [["role": "narrator", "content": "x"]]], .badRequest),
            (["messages": [["role": "user", "content": [["type": "input_audio"]]]]], .unsupportedRequest),
        ] {
            do {
                _ = try AnthropicTranslation.messagesRequest(from: request, model: Self.model, defaultMaxTokens: 1)
                Issue.record("\(request) was translated")
            } catch let error as ProviderError {
                #expect(error.code == code)
            }
        }
    }

    @Test(
        "stop reasons map to finish reasons",
        arguments: [
            ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ])
    func finishReasons(stopReason: String, finishReason: String) {
        #expect(AnthropicTranslation.finishReason(stopReason) == finishReason)
    }

    @Test("an exchange with the fake server: headers, translated body, OpenAI-shaped answer")
    func exchange() async throws {
        try await withFakeProviderServer { server in
            let request: JSONValue = [
                "messages": [
                    ["role": "system", "content": "Be brief."], ["role": "user", "content": "hello claude"],
                ],
                "stop": "END", "stream": true,
            ]
            let reply = try await Self.provider().complete(
                ProviderCall(request: request, model: Self.model(server), timeout: .seconds(10)))
            #expect(reply.response["object"] == "chat.completion")
            #expect(reply.response["model"] == "claude-test")
            #expect(
                reply.response["choices"]?[0]?["message"] == ["role": "assistant", "content": "echo: hello claude"])
            #expect(reply.response["choices"]?[0]?["finish_reason"] == "stop")
            #expect(reply.usage == TokenUsage(promptTokens: 6, completionTokens: 3))
            #expect(reply.response["usage"] == ["prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9])

            let sent = try #require(try await server.requests(for: "claude-test").first)
            #expect(sent["path"] == "/v1/messages")
            #expect(sent["headers"]?["x-api-key"]?.stringValue == Self.key)
            #expect(sent["headers"]?["anthropic-version"] == "2023-06-01")
            #expect(sent["headers"]?["authorization"] == nil)
            #expect(sent["body"]?["system"] == "Be brief.")
            #expect(sent["body"]?["max_tokens"] == 1024)
            #expect(sent["body"]?["stop_sequences"] == ["END"])
            #expect(sent["body"]?["stream"] == nil)
        }
    }

    @Test("tool use, max_tokens and cached prompt tokens come back in OpenAI shape")
    func toolUseAnswer() async throws {
        try await withFakeProviderServer { server in
            try await server.script([
                "claude-test": [
                    "stop_reason": "tool_use",
                    "content_blocks": [
                        ["type": "text", "text": "Checking."],
                        ["type": "tool_use", "id": "toolu_1", "name": "weather", "input": ["city": "Paris"]],
                    ],
                    "usage": ["input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 7],
                ],
                "claude-long": ["stop_reason": "max_tokens"],
            ])
            let provider = Self.provider()
            let reply = try await provider.complete(
                ProviderCall(
                    request: ProviderTestSupport.request("weather?"), model: Self.model(server), timeout: .seconds(10)))
            let choice = try #require(reply.response["choices"]?[0])
            #expect(choice["finish_reason"] == "tool_calls")
            #expect(choice["message"]?["content"] == "Checking.")
            #expect(
                choice["message"]?["tool_calls"] == [
                    [
                        "id": "toolu_1", "type": "function",
                        "function": ["name": "weather", "arguments": #"{"city":"Paris"}"#],
                    ]
                ])
            #expect(reply.usage == TokenUsage(promptTokens: 100, completionTokens: 7, cachedTokens: 90))
            #expect(reply.response["usage"]?["prompt_tokens_details"]?["cached_tokens"] == 90)

            let long = try await provider.complete(
                ProviderCall(
                    request: ProviderTestSupport.request("go on"), model: Self.model(server, name: "claude-long"),
                    timeout: .seconds(10)))
            #expect(long.response["choices"]?[0]?["finish_reason"] == "length")
        }
    }

    /// A review: `{"snowflake": 1234567890123456789}` came back as `1.2345678901234568e+18`, and
    /// `10000000000000000` as `1e+16`, in the arguments an OpenAI client parses.
    @Test("a tool call's arguments are copied as written: a 64-bit id keeps its digits")
    func toolArgumentsKeepTheirDigits() throws {
        let body = #"""
            {"id":"msg_1","type":"message","role":"assistant","model":"claude-upstream","stop_reason":"tool_use",
             "content":[{"type":"text","text":"Looking."},
                        {"type":"tool_use","id":"t1","name":"fetch","input":{ "snowflake": 1234567890123456789,
                          "b" :10000000000000000, "s":"x\"y" }},
                        {"type":"tool_use","id":"t2","name":"none","input":{}}],
             "usage":{"input_tokens":5,"output_tokens":3}}
            """#
        let message = try JSONValue(parsing: body)
        let (completion, _) = try #require(
            AnthropicTranslation.chatCompletion(from: message, body: Data(body.utf8), model: "m", created: Date()))
        let calls = completion["choices"]?[0]?["message"]?["tool_calls"]
        #expect(
            calls?[0]?["function"]?["arguments"]
                == #"{"snowflake":1234567890123456789,"b":10000000000000000,"s":"x\"y"}"#, "\(String(describing: calls))")
        #expect(calls?[1]?["function"]?["arguments"] == "{}")
        // Without the body (or with one that does not match what was read), the parsed input, as before.
        let (parsed, _) = try #require(AnthropicTranslation.chatCompletion(from: message, model: "m", created: Date()))
        #expect(parsed["choices"]?[0]?["message"]?["tool_calls"]?[1]?["function"]?["arguments"] == "{}")
    }

    /// A review: `stop: "\n"` (which Anthropic refuses) was dropped, and a many-line answer
    /// stored as if the stop had been honoured.
    @Test("a stop of whitespace alone, which Anthropic refuses, is applied to the answer by the worker")
    func blankStopsApplied() throws {
        #expect(AnthropicTranslation.blankStops(["stop": ["\n", " ", "END", ""]]) == ["\n", " "])
        #expect(AnthropicTranslation.blankStops(["stop": "\n\n"]) == ["\n\n"])
        let message: JSONValue = [
            "id": "msg_1", "type": "message", "stop_reason": "tool_use",
            "content": [
                ["type": "text", "text": "first line\nsecond line"],
                ["type": "tool_use", "id": "t1", "name": "look", "input": [:]],
            ],
            "usage": ["input_tokens": 5, "output_tokens": 9],
        ]
        let (cut, _) = try #require(
            AnthropicTranslation.chatCompletion(from: message, stops: ["\n"], model: "m", created: Date()))
        #expect(cut["choices"]?[0]?["message"]?["content"] == "first line")
        #expect(cut["choices"]?[0]?["message"]?["tool_calls"] == nil)
        #expect(cut["choices"]?[0]?["finish_reason"] == "stop")
        // No stop in the text: as answered.
        let (whole, _) = try #require(
            AnthropicTranslation.chatCompletion(from: message, stops: ["\n\n"], model: "m", created: Date()))
        #expect(whole["choices"]?[0]?["message"]?["content"] == "first line\nsecond line")
        #expect(whole["choices"]?[0]?["finish_reason"] == "tool_calls")
    }

    @Test("cache reads and writes are parts of the prompt tokens, counted apart, and kept in the OpenAI usage")
    func cacheUsage() async throws {
        try await withFakeProviderServer { server in
            try await server.script([
                "claude-test": [
                    "usage": [
                        "input_tokens": 100, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 50,
                        "output_tokens": 30,
                    ]
                ]
            ])
            let reply = try await Self.provider().complete(
                ProviderCall(
                    request: ProviderTestSupport.request("hello"), model: Self.model(server), timeout: .seconds(10)))
            #expect(
                reply.usage
                    == TokenUsage(promptTokens: 160, completionTokens: 30, cachedTokens: 50, cacheWriteTokens: 10))
            #expect(
                reply.response["usage"] == [
                    "prompt_tokens": 160, "completion_tokens": 30, "total_tokens": 190,
                    "prompt_tokens_details": ["cached_tokens": 50], "cache_creation_input_tokens": 10,
                ])
            // Read back as an OpenAI answer, the translated usage gives the same counts.
            #expect(TokenUsage(openAIResponse: reply.response) == reply.usage)
        }
    }

    @Test("a usage no call could have (9e18 tokens) is an invalid answer, not an overflow that kills the worker")
    func absurdUsage() async throws {
        try await withFakeProviderServer { server in
            try await server.script([
                "claude-test": ["usage": ["input_tokens": 9e18, "cache_read_input_tokens": 9e18, "output_tokens": 1]]
            ])
            let error = await ProviderTestSupport.providerError {
                try await Self.provider().complete(
                    ProviderCall(
                        request: ProviderTestSupport.request("hello"), model: Self.model(server), timeout: .seconds(10)))
            }
            #expect(error?.code == .invalidResponse)
            #expect(error?.message.contains("more tokens than any call uses") == true, "\(String(describing: error))")
        }
    }

    @Test("Anthropic errors: 529 overloaded, prompt too long, rate limit with retry-after, rate-limit headers")
    func errors() async throws {
        try await withFakeProviderServer { server in
            try await server.script([
                "claude-529": ["kind": "overloaded"],
                "claude-small": ["kind": "context_length"],
                "claude-429": [
                    "kind": "rate_limited", "retry_after": "3",
                    "headers": [
                        "anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-limit": "50",
                    ],
                ],
            ])
            let provider = Self.provider()
            func failure(_ name: String) async -> ProviderError? {
                await ProviderTestSupport.providerError {
                    try await provider.complete(
                        ProviderCall(
                            request: ProviderTestSupport.request("hi"), model: Self.model(server, name: name),
                            timeout: .seconds(10)))
                }
            }
            let overloaded = await failure("claude-529")
            #expect(overloaded?.code == .overloaded)
            #expect(overloaded?.providerType == "overloaded_error")
            #expect(overloaded?.decision(remainingBudget: .seconds(5)) == .nextCandidate)
            let tooLong = await failure("claude-small")
            #expect(tooLong?.code == .contextLengthExceeded)
            #expect(tooLong?.decision(remainingBudget: .seconds(5)) == .largerContext)
            let limited = await failure("claude-429")
            #expect(limited?.code == .rateLimited)
            #expect(limited?.rateLimit?.remainingRequests == 0)
            #expect(limited?.rateLimit?.requestLimit == 50)
            #expect(limited?.decision(remainingBudget: .seconds(5)) == .retrySameModel(after: .seconds(3)))
        }
    }

    @Test("a base URL that already ends in /v1 is not doubled")
    func baseURLWithVersion() throws {
        var model = Self.model
        model.baseURL = "https://api.anthropic.com/v1/"
        let url = try ProviderEndpoint.url(
            for: model, defaultBase: AnthropicProvider.defaultBaseURL, path: "/v1/messages")
        #expect(url.absoluteString == "https://api.anthropic.com/v1/messages")
        model.baseURL = nil
        let fallback = try ProviderEndpoint.url(
            for: model, defaultBase: AnthropicProvider.defaultBaseURL, path: "/v1/messages")
        #expect(fallback.absoluteString == "https://api.anthropic.com/v1/messages")
        model.baseURL = "ftp://example"
        #expect(throws: ProviderError.self) {
            try ProviderEndpoint.url(for: model, defaultBase: AnthropicProvider.defaultBaseURL, path: "/v1/messages")
        }
    }
}
