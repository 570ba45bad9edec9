import Foundation
import QueueModel

extension AnthropicTranslation {
    /// Refuses the Chat Completions parameters the Messages API has no equivalent for: several
    /// choices (`n` > 1), a `response_format` other than text, `logprobs` / `top_logprobs`,
    /// `logit_bias`, non-zero `presence_penalty` / `frequency_penalty`, the legacy
    /// `functions` / `function_call` (not translated: a request using them was sent without its
    /// tools, and answered in plain text), and audio output or web search (`modalities` other than
    /// text, `audio`, `web_search_options`), and tools other than functions (`custom`).
    ///
    /// Dropping them would store an answer as if it honoured them (free text where JSON was asked
    /// for, one choice where three were), so the request is refused instead, as LiteLLM does by
    /// default; the error is `unsupportedRequest`, which moves the job to the next model.
    /// - Throws: `ProviderError.unsupportedRequest` naming every such parameter the request sets.
    static func refuseUntranslatable(_ request: [String: JSONValue], model: ModelSpec) throws {
        func isSet(_ key: String) -> JSONValue? {
            guard let value = request[key], !value.isNull else { return nil }
            return value
        }
        var refused: [String] = []
        if let choices = isSet("n"), (choices.doubleValue ?? 1) > 1 { refused.append("n = \(choices)") }
        if let format = isSet("response_format"), format["type"] != "text" {
            refused.append("response_format of type \(format["type"]?.description ?? format.description)")
        }
        if isSet("logprobs")?.boolValue == true { refused.append("logprobs") }
        if let top = isSet("top_logprobs"), top.doubleValue != 0 { refused.append("top_logprobs") }
        if let bias = isSet("logit_bias"), bias.objectValue?.isEmpty != true { refused.append("logit_bias") }
        for key in ["presence_penalty", "frequency_penalty"] {
            if let penalty = isSet(key), penalty.doubleValue != 0 { refused.append("\(key) = \(penalty)") }
        }
        for key in ["functions", "function_call"] where isSet(key) != nil {
            refused.append("\(key) (the legacy form of tools and tool_choice)")
        }
        // Asked for an answer a Messages call cannot give: spoken audio, a search of the web.
        if let modalities = isSet("modalities")?.arrayValue, modalities.contains(where: { $0 != "text" }) {
            refused.append("modalities \(JSONValue.array(modalities).description)")
        }
        for key in ["audio", "web_search_options"] where isSet(key) != nil { refused.append(key) }
        // A tool that is no function (OpenAI's `custom` tools take free-form text, not JSON
        // arguments) was sent with no name, and refused by Anthropic as a bad request.
        for (index, tool) in (isSet("tools")?.arrayValue ?? []).enumerated() {
            if let type = tool["type"]?.stringValue, type != "function" { refused.append("tools[\(index)] of type \(type)") }
        }
        guard !refused.isEmpty else { return }
        throw ProviderError(
            .unsupportedRequest,
            "Anthropic models have no equivalent of \(refused.joined(separator: ", ")); the request was not sent "
                + "rather than sent without them",
            hint: "the job moves to the next model of its plan; to run it on an Anthropic model, submit it without "
                + (refused.count == 1 ? "that parameter" : "those parameters"),
            model: model.name)
    }
}
