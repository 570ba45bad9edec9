/// The Chat Completions parameters Anthropic's Messages API has no equivalent for, read from a
/// request alone: the router leaves Anthropic models out of a plan for such a request (so `route
/// --explain` says so, and no attempt is spent on them), and the Anthropic adapter refuses the
/// call if one is planned anyway.
public enum AnthropicLimits {
    /// What the request sets that an Anthropic model cannot honour, each named as the refusal
    /// says it (`n = 2`, `response_format of type "json_object"`); empty when nothing.
    ///
    /// Several choices (`n` > 1), a `response_format` other than text, `logprobs` /
    /// `top_logprobs`, `logit_bias`, non-zero `presence_penalty` / `frequency_penalty`, the legacy
    /// `functions` / `function_call`, audio output or web search (`modalities` other than text,
    /// `audio`, `web_search_options`), and tools other than functions (`custom`).
    public static func untranslatable(_ request: [String: JSONValue]) -> [String] {
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
        return refused
    }
}
