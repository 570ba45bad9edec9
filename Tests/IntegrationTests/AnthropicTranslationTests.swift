import Foundation
import QueueModel
import Testing
@testable import Worker

/// What the Anthropic translation cannot carry over is refused (the job moves to the next model),
/// never dropped, and what it can translate is translated.
@Suite("Anthropic translation: refused, translated, dropped")
struct AnthropicTranslationTests {
    static let model = ModelSpec(name: "claude-test", provider: .anthropic, upstreamModel: "claude-upstream")
    static let hello: JSONValue = [["role": "user", "content": "hi"]]

    static func translate(_ request: [String: JSONValue]) throws -> JSONValue {
        try AnthropicTranslation.messagesRequest(from: request, model: model, defaultMaxTokens: 1024)
    }

    /// The error a request is refused with, or nil when it translates.
    static func refusal(_ request: [String: JSONValue]) -> ProviderError? {
        do {
            _ = try translate(request)
            return nil
        } catch {
            return error as? ProviderError
        }
    }

    /// Each parameter, with the words the refusal must name it by.
    static let untranslatable: [(name: String, parameters: [String: JSONValue])] = [
        ("n = 2", ["n": 2]),
        ("response_format of type \"json_object\"", ["response_format": ["type": "json_object"]]),
        ("response_format of type \"json_schema\"", ["response_format": ["type": "json_schema"]]),
        ("logprobs", ["logprobs": true]),
        ("top_logprobs", ["top_logprobs": 3]),
        ("logit_bias", ["logit_bias": ["50256": -100]]),
        ("presence_penalty = 0.5", ["presence_penalty": 0.5]),
        ("frequency_penalty = -1", ["frequency_penalty": -1]),
        // Sent without them, a request using the legacy API was answered in plain text.
        ("functions (the legacy form of tools", ["functions": [["name": "get_weather", "parameters": [:]]]]),
        ("function_call (the legacy form of tools", ["function_call": ["name": "get_weather"]]),
        // Sent without them, an answer in text alone stood for the spoken one and the searched one.
        ("modalities [\"text\",\"audio\"]", ["modalities": ["text", "audio"]]),
        ("audio", ["audio": ["voice": "alloy", "format": "wav"]]),
        ("web_search_options", ["web_search_options": [:]]),
        // Sent nameless (free-form input, no JSON schema): a bad request on every Anthropic model.
        ("tools[1] of type custom", ["tools": [
            ["type": "function", "function": ["name": "f", "parameters": ["type": "object"]]],
            ["type": "custom", "custom": ["name": "code_exec", "description": "runs code"]],
        ]]),
    ]

    @Test(
        "parameters Anthropic has no equivalent for are refused, naming them; the job moves to the next model",
        arguments: untranslatable)
    func refusesUntranslatableParameters(name: String, parameters: [String: JSONValue]) throws {
        let error = try #require(Self.refusal(parameters.merging(["messages": Self.hello]) { $1 }))
        #expect(error.code == .unsupportedRequest)
        #expect(error.message.contains(name))
        #expect(error.decision(remainingBudget: .seconds(5)) == .nextCandidate)
    }

    @Test("a tool call whose arguments are not a JSON object is refused (no null input, no silent {}); an object goes as input",
          arguments: ["null", "[1,2]", "not json", "\"text\""])
    func toolCallArguments(arguments: String) throws {
        func conversation(_ arguments: String) -> [String: JSONValue] {
            [
                "messages": [
                    ["role": "user", "content": "weather?"],
                    ["role": "assistant", "content": nil,
                     "tool_calls": [["id": "c1", "type": "function",
                                     "function": ["name": "f", "arguments": .string(arguments)]]]],
                    ["role": "tool", "tool_call_id": "c1", "content": "sunny"],
                ]
            ]
        }
        let error = try #require(Self.refusal(conversation(arguments)))
        #expect(error.code == .unsupportedRequest)
        #expect(error.message.contains("are not a JSON object"), "\(error.message)")
        let body = try Self.translate(conversation(#"{"city":"Oslo"}"#))
        #expect(body["messages"]?[1]?["content"]?[0]?["input"] == ["city": "Oslo"])
    }

    @Test("a context window exceeded stop is a length finish, as max_tokens is")
    func contextWindowStop() {
        #expect(AnthropicTranslation.finishReason("model_context_window_exceeded") == "length")
        #expect(AnthropicTranslation.finishReason("max_tokens") == "length")
        #expect(AnthropicTranslation.finishReason("end_turn") == "stop")
    }

    @Test("their neutral values translate: n 1, text format, no logprobs, empty bias, zero penalties")
    func acceptsNeutralValues() throws {
        let body = try Self.translate([
            "messages": Self.hello, "n": 1, "response_format": ["type": "text"], "logprobs": false,
            "top_logprobs": nil, "logit_bias": [:], "presence_penalty": 0, "frequency_penalty": 0, "seed": 7,
            "stream": true, "modalities": ["text"], "audio": nil,
        ])
        #expect(body["messages"] == [["role": "user", "content": "hi"]])
        for dropped in ["n", "response_format", "logprobs", "logit_bias", "seed", "stream"] {
            #expect(body[dropped] == nil, "\(dropped) was sent")
        }
    }

    @Test("a request with only system messages is refused, not sent as \"messages\": []")
    func refusesSystemOnly() throws {
        let error = try #require(
            Self.refusal(["messages": [["role": "system", "content": "Be brief."]]]))
        #expect(error.code == .unsupportedRequest)
        #expect(error.message.contains("user message"))
    }

    @Test("empty text parts are dropped; a message left empty is refused, naming its index")
    func emptyText() throws {
        let body = try Self.translate([
            "messages": [
                ["role": "system", "content": [["type": "text", "text": ""]]],
                ["role": "user", "content": [["type": "text", "text": ""], ["type": "text", "text": "hi"]]],
            ]
        ])
        #expect(body["messages"] == [["role": "user", "content": "hi"]])
        #expect(body["system"] == nil)

        let error = try #require(
            Self.refusal([
                "messages": [
                    ["role": "user", "content": "hi"],
                    ["role": "assistant", "content": [["type": "text", "text": ""]]],
                    ["role": "user", "content": "again"],
                ]
            ]))
        #expect(error.code == .unsupportedRequest)
        #expect(error.message.contains("messages[1] (assistant)"))
    }

    /// Each of these Anthropic refuses with a 400 that failed the job on every model (a review,
    /// against the API's documented answers).
    @Test("whitespace Anthropic refuses is left out: blank parts, system, stops, a prefill's trailing whitespace")
    func whitespaceAnthropicRefuses() throws {
        let body = try Self.translate([
            "messages": [
                ["role": "system", "content": "  \n"],
                ["role": "user", "content": [["type": "text", "text": "\n\n"], ["type": "text", "text": "hi"]]],
                [
                    "role": "assistant", "content": "\n\n",
                    "tool_calls": [["id": "c1", "type": "function", "function": ["name": "look", "arguments": ""]]],
                ],
                ["role": "tool", "tool_call_id": "c1", "content": "found it"],
                ["role": "assistant", "content": "Here is the poem:\n"],
            ],
            "stop": ["\n", " ", "END"],
        ])
        #expect(body["system"] == nil)
        #expect(
            body["messages"] == [
                ["role": "user", "content": "hi"],
                // An empty arguments string is no arguments.
                ["role": "assistant", "content": [["type": "tool_use", "id": "c1", "name": "look", "input": [:]]]],
                ["role": "user", "content": [["type": "tool_result", "tool_use_id": "c1", "content": "found it"]]],
                ["role": "assistant", "content": "Here is the poem:"],
            ])
        #expect(body["stop_sequences"] == ["END"])
        let onlyNewline = try Self.translate(["messages": Self.hello, "stop": "\n"])
        #expect(onlyNewline["stop_sequences"] == nil)
        // A message of whitespace alone is left empty, and refused as an empty one is: the job moves on.
        let blank = Self.refusal(["messages": [["role": "user", "content": "   "]]])
        #expect(blank?.code == .unsupportedRequest)
    }

    /// A review: history arguments {"snowflake":1234567890123456789} went out as input
    /// {"snowflake": 1.2345678901234568e+18}: the model read a wrong id in its own history.
    @Test("a tool call's arguments in the history go out as written when a number in them is past a Double")
    func historyArgumentsKeepTheirDigits() throws {
        let arguments = #"{ "snowflake": 1234567890123456789, "b": 10000000000000000, "s": "a \"q\"" }"#
        let request: [String: JSONValue] = [
            "messages": [
                ["role": "user", "content": "fetch it"],
                [
                    "role": "assistant", "content": nil,
                    "tool_calls": [
                        ["id": "c1", "type": "function", "function": ["name": "fetch", "arguments": .string(arguments)]],
                        ["id": "c2", "type": "function", "function": ["name": "small", "arguments": #"{"n": 7}"#]],
                    ],
                ],
                ["role": "tool", "tool_call_id": "c1", "content": "done"],
                ["role": "tool", "tool_call_id": "c2", "content": "done"],
            ]
        ]
        let body = try Self.translate(request)
        let text = AnthropicTranslation.bodyText(body, request: request)
        #expect(text.contains(#""input":{"snowflake":1234567890123456789,"b":10000000000000000,"s":"a \"q\""}"#), "\(text)")
        #expect(text.contains(#""input":{"n":7}"#), "\(text)")
        // Still one JSON document, the same as the body but for those digits.
        let parsed = try JSONValue(parsing: text)
        #expect(parsed["messages"]?[1]?["content"]?[0]?["input"]?["b"] == 10000000000000000)
        #expect(parsed["model"] == body["model"])
        // Nothing past a Double: the body as it is.
        let plain: [String: JSONValue] = ["messages": Self.hello]
        #expect(AnthropicTranslation.bodyText(try Self.translate(plain), request: plain) == (try Self.translate(plain)).jsonText)
    }

    @Test("top_p goes only without temperature, which newer Claude models refuse beside it")
    func temperatureOrTopP() throws {
        let both = try Self.translate(["messages": Self.hello, "temperature": 0.2, "top_p": 0.9])
        #expect(both["temperature"] == 0.2 && both["top_p"] == nil)
        let topP = try Self.translate(["messages": Self.hello, "top_p": 0.9])
        #expect(topP["top_p"] == 0.9 && topP["temperature"] == nil)
    }

    @Test("a tool result with an image keeps it: the tool_result's content is blocks, marks off them")
    func toolResultImage() throws {
        let body = try Self.translate([
            "messages": [
                ["role": "user", "content": "screenshot please"],
                [
                    "role": "assistant", "content": nil,
                    "tool_calls": [["id": "c1", "type": "function", "function": ["name": "shot", "arguments": "{}"]]],
                ],
                [
                    "role": "tool", "tool_call_id": "c1",
                    "content": [
                        ["type": "text", "text": "here"],
                        [
                            "type": "image_url", "image_url": ["url": "data:image/png;base64,iVBORw0K"],
                            "cache_control": ["type": "ephemeral"],
                        ],
                    ],
                ],
            ]
        ])
        #expect(
            body["messages"]?[2]?["content"] == [
                [
                    "type": "tool_result", "tool_use_id": "c1", "cache_control": ["type": "ephemeral"],
                    "content": [
                        ["type": "text", "text": "here"],
                        ["type": "image", "source": ["type": "base64", "media_type": "image/png", "data": "iVBORw0K"]],
                    ],
                ]
            ])
    }

    @Test("a data URL's scheme in any case, and parameters after its media type, still make a base64 source")
    func dataURLForms() throws {
        for url in [
            "DATA:image/png;base64,iVBORw0K", "data:image/png;charset=utf-8;base64,iVBORw0K",
            "data:image/png;BASE64,iVBORw0K", "data:IMAGE/PNG;base64,iVBORw0K",
        ] {
            let body = try Self.translate([
                "messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": .string(url)]]]]]
            ])
            #expect(
                body["messages"]?[0]?["content"] == [
                    ["type": "image", "source": ["type": "base64", "media_type": "image/png", "data": "iVBORw0K"]]
                ], "\(url)")
        }
    }

    @Test("parallel_tool_calls false becomes disable_parallel_tool_use, kept with a given tool_choice")
    func parallelToolCalls() throws {
        let tools: JSONValue = [
            ["type": "function", "function": ["name": "weather", "parameters": ["type": "object"]]]
        ]
        let auto = try Self.translate(["messages": Self.hello, "tools": tools, "parallel_tool_calls": false])
        #expect(auto["tool_choice"] == ["type": "auto", "disable_parallel_tool_use": true])

        let required = try Self.translate([
            "messages": Self.hello, "tools": tools, "tool_choice": "required", "parallel_tool_calls": false,
        ])
        #expect(required["tool_choice"] == ["type": "any", "disable_parallel_tool_use": true])

        let allowed = try Self.translate(["messages": Self.hello, "tools": tools, "parallel_tool_calls": true])
        #expect(allowed["tool_choice"] == nil)
        let noTools = try Self.translate(["messages": Self.hello, "parallel_tool_calls": false])
        #expect(noTools["tool_choice"] == nil)
    }

    @Test("an image/jpg data URL is sent as image/jpeg, the type Anthropic accepts")
    func jpgMediaType() throws {
        let body = try Self.translate([
            "messages": [
                [
                    "role": "user",
                    "content": [["type": "image_url", "image_url": ["url": "data:image/jpg;base64,/9j/4AAQ"]]],
                ]
            ]
        ])
        #expect(
            body["messages"]?[0]?["content"] == [
                ["type": "image", "source": ["type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"]]
            ])
    }
    @Test("cache_control marks stay on what they mark: parts, messages, system parts, tool results, tools")
    func cacheControlMarks() throws {
        let mark: JSONValue = ["type": "ephemeral"]
        let hour: JSONValue = ["type": "ephemeral", "ttl": "1h"]
        let body = try Self.translate([
            "messages": [
                ["role": "system", "content": [["type": "text", "text": "Rules."], ["type": "text", "text": "A long manual.", "cache_control": hour]]],
                ["role": "user", "content": "The contract text.", "cache_control": mark],
                ["role": "assistant", "content": nil,
                 "tool_calls": [["id": "c1", "type": "function", "function": ["name": "f", "arguments": "{}"]]]],
                ["role": "tool", "tool_call_id": "c1", "content": [["type": "text", "text": "sunny", "cache_control": mark]]],
                ["role": "user", "content": [
                    ["type": "image_url", "image_url": ["url": "https://example.com/a.png"], "cache_control": mark],
                    ["type": "text", "text": "And this?"],
                ]],
            ]
        ])
        // Marked, the system prompt goes as blocks, so the cache ends at the marked part.
        #expect(body["system"] == [
            ["type": "text", "text": "Rules."], ["type": "text", "text": "A long manual.", "cache_control": hour],
        ])
        #expect(body["messages"]?[0]?["content"] == [["type": "text", "text": "The contract text.", "cache_control": mark]])
        let results = body["messages"]?[2]?["content"]
        #expect(results?[0]?["type"] == "tool_result")
        #expect(results?[0]?["cache_control"] == mark)
        #expect(results?[0]?["content"] == "sunny")
        #expect(results?[1]?["type"] == "image")
        #expect(results?[1]?["cache_control"] == mark)
        #expect(results?[2]?["cache_control"] == nil)
        let tools = try Self.translate([
            "messages": Self.hello,
            "tools": [["type": "function", "function": ["name": "f", "parameters": ["type": "object"]], "cache_control": mark]],
        ])
        #expect(tools["tools"]?[0]?["cache_control"] == mark)

        // Without marks, nothing changes: one system string, a lone text block as a string.
        let plain = try Self.translate([
            "messages": [["role": "system", "content": [["type": "text", "text": "Rules."]]], ["role": "user", "content": "hi"]],
        ])
        #expect(plain["system"] == "Rules.")
        #expect(plain["messages"] == [["role": "user", "content": "hi"]])
    }

    @Test("a cache_control that is not an object, or a fifth one, is refused, naming it; the job moves on")
    func malformedCacheControl() throws {
        let onMessage = try #require(
            Self.refusal(["messages": [["role": "user", "content": "hi", "cache_control": "ephemeral"]]]))
        #expect(onMessage.code == .unsupportedRequest)
        #expect(onMessage.message.contains("messages[0].cache_control is a string"), "\(onMessage.message)")
        let onTool = try #require(
            Self.refusal([
                "messages": Self.hello,
                "tools": [["type": "function", "function": ["name": "f"], "cache_control": true]],
            ]))
        #expect(onTool.message.contains("tools[0].cache_control"), "\(onTool.message)")
        #expect(onTool.decision(remainingBudget: .seconds(5)) == .nextCandidate)

        // Anthropic takes four; a fifth would have failed the job there without trying another model.
        let five: [JSONValue] = (1...5).map { ["type": "text", "text": .string("part \($0)"), "cache_control": ["type": "ephemeral"]] }
        let tooMany = try #require(Self.refusal(["messages": [["role": "user", "content": .array(five)]]]))
        #expect(tooMany.code == .unsupportedRequest)
        #expect(tooMany.message.contains("5 cache_control marks"), "\(tooMany.message)")
        #expect(Self.refusal(["messages": [["role": "user", "content": .array(Array(five.prefix(4)))]]]) == nil)
    }
}
