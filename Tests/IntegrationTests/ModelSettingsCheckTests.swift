import Foundation
import QueueModel
import Testing
@testable import Worker

/// A setting of the wrong type that reached a worker anyway (a catalog stored before import
/// checked types) fails the call as `misconfigured`; it is never replaced by the default.
@Suite("Model settings of the wrong type, at call time")
struct ModelSettingsCheckTests {
    static let keyVariable = "SWITCHYARD_TEST_SETTINGS_KEY"

    /// A catalog entry as an older version could have stored it, with what the error must name.
    static let cases: [(provider: ProviderKind, settings: JSONValue, mentions: String)] = [
        (.anthropic, ["default_max_tokens": "4096"], "settings.default_max_tokens must be a positive whole number"),
        (.anthropic, ["default_max_tokens": 0], "settings.default_max_tokens must be a positive whole number"),
        (.openai, ["headers": ["HTTP-Referer: https://example.com"]], "settings.headers must be an object"),
        (.anthropic, ["headers": ["X-Title": 7]], "settings.headers must be an object whose values are strings"),
        (.openai, ["insecure_skip_tls_verify": "true"], "settings.insecure_skip_tls_verify must be true or false"),
        (.simulated, ["mode": 1], "settings.mode must be a string"),
        (.simulated, ["outages": "2025-06-01"], "settings.outages must be an array"),
    ]

    @Test(
        "the call fails as misconfigured, naming the model, the setting and its type; nothing is sent",
        arguments: cases)
    func wrongTypeIsMisconfigured(
        provider kind: ProviderKind, settings: JSONValue, mentions: String
    ) async throws {
        try await withFakeProviderServer { server in
            let model = ModelSpec(
                name: "m-\(kind.rawValue)", provider: kind,
                baseURL: kind == .anthropic ? server.anthropicBaseURL : server.openAIBaseURL,
                apiKeyEnv: kind == .simulated ? nil : Self.keyVariable, settings: settings)
            let factory = ProviderFactory(
                transport: ProviderTestSupport.transport(), environment: [Self.keyVariable: "test-key"])
            let error = await ProviderTestSupport.providerError {
                try await factory.provider(for: model).complete(
                    ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
            }
            #expect(error?.code == .misconfigured)
            #expect(
                error?.message.contains("model \(model.name)'s \(mentions)") == true, "\(String(describing: error))")
            #expect(error?.hint?.contains("import it again") == true)
            #expect(error?.decision(remainingBudget: .seconds(5)) == .nextCandidateAndMarkUnhealthy)
            let sent = try await server.count(for: model.name)
            #expect(sent == 0)
        }
    }

    @Test("settings of the right type still go out: headers sent, default_max_tokens used")
    func rightTypesAreUsed() async throws {
        try await withFakeProviderServer { server in
            let model = ModelSpec(
                name: "claude-settings", provider: .anthropic, baseURL: server.anthropicBaseURL,
                apiKeyEnv: Self.keyVariable, settings: ["default_max_tokens": 4096, "headers": ["X-Title": "yard"]])
            let provider = AnthropicProvider(
                transport: ProviderTestSupport.transport(), environment: [Self.keyVariable: "test-key"])
            _ = try await provider.complete(
                ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
            let sent = try #require(try await server.requests(for: "claude-settings").first)
            #expect(sent["body"]?["max_tokens"] == 4096)
            #expect(sent["headers"]?["x-title"] == "yard")
        }
    }
}
