import Foundation
import Postgres
import QueueModel
import Synchronization
import Testing
@testable import Worker

/// Invariant 4: an API key never reaches an error, a trail summary or a log line, even when the
/// provider echoes it back.
@Suite("Provider secrets")
struct ProviderSecretTests {
    static let variable = "SWITCHYARD_TEST_SENTINEL_KEY"
    static let sentinel = "sk-swq7Xk2-sentinel-7f3a9c2e1b5d"
    static let partial = "sk-swq7*****************1b5d"

    /// Every text an error offers, the way a log line, a trail or a debugger would show it.
    static func texts(_ error: ProviderError) -> [String] {
        [
            error.description, error.summary, error.message, error.hint ?? "", error.providerCode ?? "",
            error.providerType ?? "", String(describing: error), String(reflecting: error), "\(error)",
        ]
    }

    static func expectClean(_ error: ProviderError?, _ context: String) {
        guard let error else {
            Issue.record("\(context): expected an error")
            return
        }
        for text in texts(error) {
            #expect(!text.contains(sentinel), "\(context) leaked the key: \(text)")
            #expect(!text.contains("sk-swq7"), "\(context) leaked part of the key: \(text)")
            #expect(!text.contains("7f3a9c2e1b5d"), "\(context) leaked part of the key: \(text)")
        }
    }

    @Test("errors from every failure path carry no key, even when the provider echoes it")
    func noKeyInErrors() async throws {
        try await withFakeProviderServer { server in
            let echo = "Incorrect API key provided: \(Self.sentinel). Bearer \(Self.sentinel)"
            try await server.script([
                "m-401": ["kind": "unauthorized", "message": .string(echo)],
                "m-401-partial": [
                    "kind": "unauthorized", "message": .string("Incorrect API key provided: \(Self.partial)."),
                ],
                "m-400": ["kind": "bad_request", "message": .string("bad header x-api-key: \(Self.sentinel)")],
                "m-500": ["kind": "server_error", "message": .string(echo)],
                "m-429": ["kind": "rate_limited", "retry_after_ms": 100, "message": .string(echo)],
                "m-quota": ["kind": "quota", "code": .string(Self.sentinel)],
                "m-malformed": ["status": 200, "body": .string("<html>\(Self.sentinel)</html>")],
                "m-slow": ["delay_ms": 15000],
                "a-401": ["kind": "unauthorized", "message": .string(echo)],
            ])
            let environment = [Self.variable: Self.sentinel]
            let transport = ProviderTestSupport.transport()
            let openAI = OpenAIProvider(transport: transport, environment: environment)
            let anthropic = AnthropicProvider(transport: transport, environment: environment)
            for name in ["m-401", "m-401-partial", "m-400", "m-500", "m-429", "m-quota", "m-malformed", "m-slow"] {
                let model = ModelSpec(
                    name: name, provider: .openai, baseURL: server.openAIBaseURL, apiKeyEnv: Self.variable)
                // Only the slow one is meant to time out: a loaded machine may take longer than
                // that to deliver the others, which must reach the server.
                let timeout: Duration = name == "m-slow" ? .milliseconds(500) : .seconds(10)
                let error = await ProviderTestSupport.providerError {
                    try await openAI.complete(
                        ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: timeout))
                }
                Self.expectClean(error, name)
            }
            let model = ModelSpec(
                name: "a-401", provider: .anthropic, baseURL: server.anthropicBaseURL, apiKeyEnv: Self.variable)
            let error = await ProviderTestSupport.providerError {
                try await anthropic.complete(
                    ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
            }
            Self.expectClean(error, "a-401")
            // The key did go out, where it belongs: in the request headers.
            let sent = try await server.requests(for: "m-500")
            #expect(sent.first?["headers"]?["authorization"]?.stringValue == "Bearer \(Self.sentinel)")
        }
    }

    @Test("an answer that echoes the key with escaped characters stores it redacted")
    func escapedKeyInAnswer() async throws {
        try await withFakeProviderServer { server in
            // "\u0073" is "s", "\/" is "/": the raw body does not contain the key, the decoded one does.
            let escaped = "\\u0073" + Self.sentinel.dropFirst()
            let body = #"{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": "#
                + #"{"role": "assistant", "content": "your key is \#(escaped)"}, "finish_reason": "stop"}], "#
                + #""usage": {"prompt_tokens": 1, "completion_tokens": 1}, "\#(escaped)": 1}"#
            try await server.script(["m-echo": ["status": 200, "body": .string(body)]])
            let provider = OpenAIProvider(
                transport: ProviderTestSupport.transport(), environment: [Self.variable: Self.sentinel])
            let model = ModelSpec(name: "m-echo", provider: .openai, baseURL: server.openAIBaseURL, apiKeyEnv: Self.variable)
            let reply = try await provider.complete(
                ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
            let stored = reply.response.jsonText
            #expect(!stored.contains(Self.sentinel), "\(stored)")
            #expect(reply.response["choices"]?[0]?["message"]?["content"]?.stringValue == "your key is [REDACTED]")
        }
    }

    @Test("a redirect is not followed: the key goes to the configured address only")
    func redirectNotFollowed() async throws {
        try await withFakeProviderServer { server in
            // Followed, the POST (307 keeps it) would come back to this server under another path,
            // the key with it; the step repeats, so it would redirect again and again.
            try await server.script([
                "m-redirect": ["status": 307, "headers": ["location": .string(server.openAIBaseURL + "/elsewhere/chat/completions")]],
            ])
            let provider = OpenAIProvider(
                transport: ProviderTestSupport.transport(), environment: [Self.variable: Self.sentinel])
            let model = ModelSpec(
                name: "m-redirect", provider: .openai, baseURL: server.openAIBaseURL, apiKeyEnv: Self.variable)
            let error = await ProviderTestSupport.providerError {
                try await provider.complete(
                    ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
            }
            #expect(error?.code == .misconfigured)
            #expect(error?.httpStatus == 307)
            #expect(error?.message.contains("redirect to \(server.openAIBaseURL)/elsewhere") == true, "\(String(describing: error))")
            #expect(error?.decision(remainingBudget: .seconds(60)) == .nextCandidateAndMarkUnhealthy)
            #expect(try await server.requests(for: "m-redirect").count == 1)
        }
    }

    @Test("a key echoed percent-encoded (a redirect's Location), in base64 or split leaves no 8 bytes of it")
    func encodedKeyInErrors() async throws {
        try await withFakeProviderServer { server in
            let encoded = Self.sentinel.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            try await server.script([
                "m-location": ["status": 307, "headers": ["location": .string("https://elsewhere.test/v1?key=\(encoded)")]],
                "m-base64": ["kind": "unauthorized", "message": .string("token \(Data("Bearer \(Self.sentinel)".utf8).base64EncodedString())")],
                "m-split": ["kind": "unauthorized", "message": .string("bad credential \(Self.sentinel.prefix(12)) \(Self.sentinel.dropFirst(12))")],
            ])
            let provider = OpenAIProvider(
                transport: ProviderTestSupport.transport(), environment: [Self.variable: Self.sentinel])
            for name in ["m-location", "m-base64", "m-split"] {
                let model = ModelSpec(name: name, provider: .openai, baseURL: server.openAIBaseURL, apiKeyEnv: Self.variable)
                let error = await ProviderTestSupport.providerError {
                    try await provider.complete(
                        ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
                }
                Self.expectClean(error, name)
                #expect(error?.message.contains("[REDACTED]") == true, "\(name): \(String(describing: error))")
                for text in Self.texts(try #require(error)) {
                    // The key's second half (a tail has no "sk-" for the patterns to catch), as sent.
                    #expect(!text.contains("sentinel-7f3a9c2e1b5d".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!))
                    #expect(!text.contains(Self.sentinel.dropFirst(12)), "\(name) kept part of the key: \(text)")
                }
            }
        }
    }

    @Test("an error body that escapes the key, masks it or cuts it short leaves none of it in the error")
    func escapedMaskedAndCutKeysInErrors() async throws {
        try await withFakeProviderServer { server in
            let escaped = "\\u0073" + Self.sentinel.dropFirst().replacingOccurrences(of: "-", with: "\\u002d")
            let masked = "swtc" + String(repeating: "*", count: 12) + "1b5d"
            try await server.script([
                // Shapes ErrorBody does not read: the raw body becomes the message.
                "m-escaped-500": ["status": 500, "body": .string(#"{"detail":[{"msg":"upstream rejected key \#(escaped)"}]}"#)],
                "m-escaped-200": ["status": 200, "body": .string(#"{"broken": "\#(escaped)""#)],
                "m-masked": ["kind": "unauthorized", "message": .string("Incorrect API key provided: \(masked)")],
                "m-cut": ["kind": "server_error", "message": .string("key \(Self.sentinel.dropLast(3)) refused")],
            ])
            let provider = OpenAIProvider(
                transport: ProviderTestSupport.transport(), environment: [Self.variable: Self.sentinel])
            for name in ["m-escaped-500", "m-escaped-200", "m-masked", "m-cut"] {
                let model = ModelSpec(name: name, provider: .openai, baseURL: server.openAIBaseURL, apiKeyEnv: Self.variable)
                let error = await ProviderTestSupport.providerError {
                    try await provider.complete(
                        ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
                }
                Self.expectClean(error, name)
                for text in Self.texts(error!) {
                    #expect(!text.contains("\\u002d"), "\(name) kept the escaped key: \(text)")
                    #expect(!text.contains("1b5d"), "\(name) kept the masked key: \(text)")
                }
            }
        }
    }

    /// A security review's catalog sent the worker's DATABASE_URL and AWS key to its own server.
    @Test("a worker sends no variable a catalog may not name, nor one its SWITCHYARD_KEY_VARIABLES leaves out")
    func refusedKeyVariables() async throws {
        let environment = [
            "DATABASE_URL": "postgresql://w:Sup3rSecretDbPass@db/switchyard", "AWS_SECRET_ACCESS_KEY": Self.sentinel,
            "SWITCHYARD_KEY_VARIABLES": "OPENAI_API_KEY",
        ]
        let provider = OpenAIProvider(transport: ProviderTestSupport.transport(), environment: environment)
        for variable in ["DATABASE_URL", "AWS_SECRET_ACCESS_KEY"] {
            let model = ModelSpec(name: "m", provider: .openai, baseURL: "http://127.0.0.1:1/steal", apiKeyEnv: variable)
            let refused = await ProviderTestSupport.providerError {
                try await provider.complete(
                    ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(5)))
            }
            // Refused before any call (a call to port 1 would be connection_failed).
            #expect(refused?.code == .missingAPIKey, "\(String(describing: refused))")
            #expect(refused?.message.contains("api_key_env is not read: \(variable)") == true)
            #expect(refused?.description.contains("Sup3rSecret") == false)
        }
        // Nor may the table hold one (an admin's UPDATE by hand).
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                "INSERT INTO switchyard.models (name, provider, api_key_env) VALUES ('m', 'openai', 'OPENAI_API_KEY')")
            await #expect(throws: PostgresError.self) {
                try await pool.query("UPDATE switchyard.models SET api_key_env = 'PGPASSWORD' WHERE name = 'm'")
            }
        }
    }

    @Test("a missing key names its variable, and a key read once is redacted from logs")
    func missingKeyAndLogs() async throws {
        let model = ModelSpec(
            name: "m", provider: .openai, baseURL: "http://127.0.0.1:1/v1", apiKeyEnv: "SWITCHYARD_TEST_OTHER_KEY")
        let provider = OpenAIProvider(
            transport: ProviderTestSupport.transport(), environment: [Self.variable: Self.sentinel])
        let missing = await ProviderTestSupport.providerError {
            try await provider.complete(
                ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(5)))
        }
        #expect(missing?.code == .missingAPIKey)
        #expect(missing?.description.contains("SWITCHYARD_TEST_OTHER_KEY") == true)
        #expect(missing?.message.contains("is not set in this worker's environment") == true)
        Self.expectClean(missing, "missing key")
        // Set to blanks: said so, not "not set" (a walkthrough looked for a variable it had set).
        let blankProvider = OpenAIProvider(
            transport: ProviderTestSupport.transport(), environment: ["SWITCHYARD_TEST_OTHER_KEY": "  "])
        let blank = await ProviderTestSupport.providerError {
            try await blankProvider.complete(
                ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(5)))
        }
        #expect(blank?.code == .missingAPIKey)
        #expect(blank?.message.contains("SWITCHYARD_TEST_OTHER_KEY, named by model m's api_key_env, is set but blank") == true,
                "\(String(describing: blank))")

        // Reading the key registers it: any log line that would show it shows [REDACTED].
        var withKey = model
        withKey.apiKeyEnv = Self.variable
        let refused = await ProviderTestSupport.providerError {
            try await provider.complete(
                ProviderCall(request: ProviderTestSupport.request("hi"), model: withKey, timeout: .seconds(5)))
        }
        #expect(refused?.code == .connectionFailed)
        let lines = LogLines()
        let logger = Logger(label: "test") { lines.append($0) }
        logger.error("attempt failed with key \(Self.sentinel)", ["error": refused?.description ?? ""])
        let line = try #require(lines.all.first)
        #expect(lines.all.count == 1)
        #expect(!line.contains(Self.sentinel))
        #expect(line.contains("[REDACTED]"))
    }

    @Test("key-shaped text is scrubbed from any error message")
    func scrubbing() {
        let error = ProviderError(
            .unauthorized, "bad key sk-proj-abcdef123456, Authorization: Bearer abcdef.123456, api_key=\"zyxwvu987\"",
            model: "m")
        #expect(error.message == "bad key [REDACTED], Authorization: Bearer [REDACTED], api_key=\"[REDACTED]\"")
        #expect(ProviderError(.badRequest, "a normal message", model: "m").message == "a normal message")
        // The sentence's full stop after a key stays (a walkthrough's 401 read "…provided: [REDACTED] You…").
        #expect(ProviderError(.unauthorized, "Incorrect API key provided: sk-ant-test-SECRET456. You can find it.", model: "m")
            .message == "Incorrect API key provided: [REDACTED]. You can find it.")
        #expect(ProviderError(.unauthorized, "Incorrect API key provided: abc123xyz. Check it.", model: "m")
            .message == "Incorrect API key provided: [REDACTED]. Check it.")
        #expect(ProviderError(.unauthorized, "Authorization: Bearer abcdef.123456.", model: "m")
            .message == "Authorization: Bearer [REDACTED].")
        #expect(ProviderError(.unauthorized, "key gsk_ab12************wxyz refused", model: "m").message
            == "key [REDACTED] refused")
        // A long run of key-like characters (a base64 image echoed back) with no mask in it: the
        // scrub takes time in proportion (it used to backtrack from every position), and the
        // message is kept to its first 4,000 characters.
        let echoed = ProviderError(.badRequest, "bad image " + String(repeating: "QUJD", count: 50_000), model: "m")
        #expect(echoed.message.count == ProviderError.messageLimit)
        #expect(echoed.message.hasPrefix("bad image QUJD") && echoed.message.hasSuffix("…"))
    }
}

/// Log lines collected by a test's logger.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}
