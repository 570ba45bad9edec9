import Foundation
import QueueModel

extension AnthropicTranslation {
    /// An Anthropic `message` as an OpenAI `chat.completion`, and its token usage.
    ///
    /// Text blocks join into `message.content`; `tool_use` blocks become `tool_calls`;
    /// `stop_reason` maps to `finish_reason` (end_turn and stop_sequence → stop, max_tokens →
    /// length, tool_use → tool_calls, refusal → content_filter); prompt tokens include cache
    /// writes and reads, as OpenAI counts them, with reads also in
    /// `usage.prompt_tokens_details.cached_tokens` and writes in `usage.cache_creation_input_tokens`.
    /// - Parameters:
    ///   - message: the Messages API response body.
    ///   - model: the upstream name, used when the body does not say.
    ///   - created: the `created` timestamp to stamp.
    ///   - body: the body's bytes, which a tool call's arguments are copied from as written: through
    ///     a `Double`, a 64-bit id in them (`1234567890123456789`) came back as `1.2345678901234568e+18`.
    ///   - stops: the request's stop sequences Anthropic refuses (whitespace alone, `blankStops`),
    ///     applied here: the text ends before the first, as the model would have stopped there.
    /// - Returns: nil when the body is not a message (no `content` array).
    static func chatCompletion(
        from message: JSONValue, body: Data? = nil, stops: [String] = [], model: String, created: Date
    ) -> (JSONValue, TokenUsage)? {
        guard let blocks = message["content"]?.arrayValue else { return nil }
        var text = blocks.filter { $0["type"] == "text" }.compactMap { $0["text"]?.stringValue }.joined()
        let cut = stops.compactMap { text.range(of: $0)?.lowerBound }.min()
        if let cut { text = String(text[..<cut]) }
        // Stopped in its text, the model would not have gone on to call a tool.
        let toolUses = cut == nil ? blocks.indices.filter { blocks[$0]["type"] == "tool_use" } : []
        let toolCalls: [JSONValue] = toolUses.map { index in
            let block = blocks[index]
            let written = body.flatMap { JSONValue.rawText(in: $0, at: [.key("content"), .index(index), .key("input")]) }
            // The written text only where it is the object that was read (a repeated "content" or
            // "input" member, which the parse takes the last of, must not swap the arguments).
            let arguments =
                written.flatMap { text in
                    (try? JSONValue(parsing: text)) == block["input"] ? Secrets.redact(text) : nil
                } ?? (block["input"] ?? [:]).jsonText
            return [
                "id": block["id"] ?? "", "type": "function",
                "function": ["name": block["name"] ?? "", "arguments": .string(arguments)],
            ]
        }
        var assistant: [String: JSONValue] = [
            "role": "assistant", "content": text.isEmpty && !toolCalls.isEmpty ? .null : .string(text),
        ]
        if !toolCalls.isEmpty { assistant["tool_calls"] = .array(toolCalls) }

        // Anthropic counts input apart from cache reads and writes; OpenAI's prompt_tokens, which
        // results.tokens_in stores, is all three. Each is priced apart (Pricing).
        let usage = message["usage"]
        let cacheReads = TokenUsage.count(usage?["cache_read_input_tokens"])
        let cacheWrites = TokenUsage.count(usage?["cache_creation_input_tokens"])
        let tokens = TokenUsage(
            promptTokens: TokenUsage.count(usage?["input_tokens"]) + cacheWrites + cacheReads,
            completionTokens: TokenUsage.count(usage?["output_tokens"]), cachedTokens: cacheReads,
            cacheWriteTokens: cacheWrites)

        let completion: JSONValue = [
            "id": message["id"] ?? "", "object": "chat.completion",
            "created": .number(created.timeIntervalSince1970.rounded(.down)),
            "model": message["model"] ?? .string(model),
            "choices": [
                [
                    "index": 0, "message": .object(assistant),
                    "finish_reason": .string(cut == nil ? finishReason(message["stop_reason"]?.stringValue) : "stop"),
                ]
            ],
            "usage": tokens.openAIUsage,
        ]
        return (completion, tokens)
    }

    /// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
    static func finishReason(_ stopReason: String?) -> String {
        switch stopReason {
        case "max_tokens", "model_context_window_exceeded": "length"
        case "tool_use": "tool_calls"
        case "refusal": "content_filter"
        default: "stop"  // end_turn, stop_sequence, pause_turn, or none given
        }
    }
}
