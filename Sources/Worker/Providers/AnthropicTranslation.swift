import Foundation
import QueueModel

/// Translation between OpenAI Chat Completions and Anthropic's Messages API, so jobs are
/// submitted and results stored in one shape whatever model ran them. Pure.
///
/// Requests: system and developer messages become the top-level `system`; `max_tokens` (or
/// `max_completion_tokens`) is required by Anthropic, so a default fills in; `stop` becomes
/// `stop_sequences`; `temperature` is capped at Anthropic's maximum of 1; `user` becomes
/// `metadata.user_id`; tools, tool calls and tool results, text and image parts are carried over
/// (text parts of whitespace alone dropped, and a closing assistant prefill's trailing whitespace,
/// as Anthropic refuses them; stop sequences of whitespace alone are applied to the answer by the
/// worker instead); `top_p` goes only without
/// `temperature` (newer Claude models refuse both); `parallel_tool_calls: false` becomes
/// `disable_parallel_tool_use`; `cache_control` marks on content parts, messages and tools stay
/// on the blocks they mark (Anthropic's prompt cache caches only up to such marks); consecutive
/// messages of one role merge. What Anthropic has no equivalent for is refused
/// (`refuseUntranslatable`), never dropped.
enum AnthropicTranslation {
    /// The Messages API body for an OpenAI-shaped request.
    /// - Parameters:
    ///   - request: the OpenAI-shaped request object.
    ///   - model: the catalog entry (its upstream name is sent as `model`).
    ///   - defaultMaxTokens: used when the request sets no `max_tokens`.
    /// - Throws: `ProviderError.badRequest` for a request without messages or with an unknown
    ///   role; `.unsupportedRequest` for a content part or parameter Anthropic cannot take, a
    ///   `cache_control` that is not an object or more than four of them, a message left empty, or
    ///   no message but system ones.
    static func messagesRequest(
        from request: [String: JSONValue], model: ModelSpec, defaultMaxTokens: Int
    ) throws -> JSONValue {
        guard let messages = request["messages"]?.arrayValue, !messages.isEmpty else {
            throw ProviderError(
                .badRequest, "the request has no messages array",
                hint: "submit {\"messages\":[{\"role\":\"user\",\"content\":\"…\"}]}", model: model.name)
        }
        try refuseUntranslatable(request, model: model)
        var system: [JSONValue] = []
        var turns: [(role: String, blocks: [JSONValue])] = []
        func append(_ role: String, _ blocks: [JSONValue]) {
            guard !blocks.isEmpty else { return }
            if let last = turns.last, last.role == role {
                turns[turns.count - 1].blocks += blocks
            } else {
                turns.append((role, blocks))
            }
        }
        /// Anthropic refuses a message without content; dropping it would change the conversation.
        func appendTurn(_ role: String, _ blocks: [JSONValue], index: Int) throws {
            guard !blocks.isEmpty else {
                throw ProviderError(
                    .unsupportedRequest,
                    "messages[\(index)] (\(role)) has no content once its empty text parts are dropped, and "
                        + "Anthropic models refuse an empty message",
                    hint: "give the message some text or remove it; meanwhile the job moves to the next model",
                    model: model.name)
            }
            append(role, blocks)
        }
        for (index, message) in messages.enumerated() {
            let role = message["role"]?.stringValue ?? ""
            switch role {
            case "system", "developer":
                let blocks = try contentBlocks(message["content"], model: model).filter { $0["type"] == "text" }
                let mark = try cacheMark(message["cache_control"], of: "messages[\(index)]", model: model)
                if mark == nil, !blocks.contains(where: { $0["cache_control"] != nil }) {
                    let text = blocks.compactMap { $0["text"]?.stringValue }.joined(separator: "\n")
                    if !Self.isBlank(text) { system.append(["type": "text", "text": .string(text)]) }
                } else {
                    // Marked parts stay blocks of their own, so the cache ends where the mark is.
                    system += marking(blocks, with: mark)
                }
            case "user":
                let mark = try cacheMark(message["cache_control"], of: "messages[\(index)]", model: model)
                try appendTurn("user", marking(try contentBlocks(message["content"], model: model), with: mark), index: index)
            case "assistant":
                let mark = try cacheMark(message["cache_control"], of: "messages[\(index)]", model: model)
                try appendTurn(
                    "assistant",
                    marking(
                        try contentBlocks(message["content"], model: model)
                            + toolUses(message["tool_calls"], index: index, model: model),
                        with: mark),
                    index: index)
            case "tool", "function":
                let parts = try contentBlocks(message["content"], model: model)
                let id = message["tool_call_id"]?.stringValue ?? message["name"]?.stringValue ?? ""
                // Text alone as a string; with an image (a screenshot a tool took), the blocks, which
                // a tool_result takes too (the marks come off them: see below).
                let content: JSONValue =
                    parts.allSatisfy { $0["type"] == "text" }
                    ? .string(parts.compactMap { $0["text"]?.stringValue }.joined(separator: "\n"))
                    : .array(parts.map { var block = $0; block["cache_control"] = nil; return block })
                var result: JSONValue = ["type": "tool_result", "tool_use_id": .string(id), "content": content]
                // Anthropic takes a mark on the tool_result, not inside its content.
                if let mark = try cacheMark(message["cache_control"], of: "messages[\(index)]", model: model)
                    ?? parts.last(where: { $0["cache_control"] != nil })?["cache_control"]
                {
                    result["cache_control"] = mark
                }
                append("user", [result])
            default:
                throw ProviderError(
                    .badRequest, "a message has the role \"\(role)\", which chat completions do not define",
                    hint: "use system, developer, user, assistant or tool", model: model.name)
            }
        }
        guard !turns.isEmpty else {
            // Anthropic answers `"messages": []` with a 400; an OpenAI model may answer a system prompt alone.
            throw ProviderError(
                .unsupportedRequest,
                "the request has only system messages, and Anthropic models need at least one user message",
                hint: "add a user message to run the job on an Anthropic model; meanwhile it moves to the next model",
                model: model.name)
        }

        // A closing assistant turn is a prefill, which Anthropic refuses with trailing whitespace
        // ("final assistant content cannot end with trailing whitespace"); the answer continues it.
        if turns[turns.count - 1].role == "assistant", let last = turns[turns.count - 1].blocks.last,
            last["type"] == "text", let text = last["text"]?.stringValue
        {
            var trimmed = text
            while let character = trimmed.last, character.isWhitespace { trimmed.removeLast() }
            turns[turns.count - 1].blocks[turns[turns.count - 1].blocks.count - 1]["text"] = .string(trimmed)
        }

        var body: [String: JSONValue] = [
            "model": .string(model.upstreamName),
            "messages": .array(
                turns.map { turn in
                    let content: JSONValue =
                        turn.blocks.count == 1 && turn.blocks[0]["type"] == "text"
                            && turn.blocks[0]["cache_control"] == nil
                        ? turn.blocks[0]["text"]! : .array(turn.blocks)
                    return ["role": .string(turn.role), "content": content]
                }),
        ]
        let maxTokens =
            request["max_tokens"]?.intValue ?? request["max_completion_tokens"]?.intValue ?? defaultMaxTokens
        body["max_tokens"] = .number(Double(maxTokens))
        if system.contains(where: { $0["cache_control"] != nil }) {
            body["system"] = .array(system)
        } else if !system.isEmpty {
            body["system"] = .string(system.compactMap { $0["text"]?.stringValue }.joined(separator: "\n\n"))
        }
        if let temperature = request["temperature"]?.doubleValue { body["temperature"] = .number(min(1, temperature)) }
        // Newer Claude models refuse both ("cannot both be specified"); OpenAI advises one or the other.
        if body["temperature"] == nil, let topP = request["top_p"]?.doubleValue { body["top_p"] = .number(topP) }
        if let topK = request["top_k"]?.intValue { body["top_k"] = .number(Double(topK)) }
        // Anthropic refuses a stop sequence of whitespace alone ("\n", common with OpenAI models):
        // those are applied to the answer instead (`blankStops`, `chatCompletion`).
        let kept = stopSequences(request).filter { !Self.isBlank($0.stringValue ?? "x") }
        if !kept.isEmpty { body["stop_sequences"] = .array(kept) }
        if let user = request["user"]?.stringValue { body["metadata"] = ["user_id": .string(user)] }
        if let tools = request["tools"]?.arrayValue, !tools.isEmpty {
            body["tools"] = .array(
                try tools.enumerated().map { index, item in try tool(item, of: "tools[\(index)]", model: model) })
        }
        var choice = request["tool_choice"].flatMap(toolChoice)
        if request["parallel_tool_calls"]?.boolValue == false, body["tools"] != nil, choice?["type"] != "none" {
            choice = choice ?? ["type": "auto"]
            choice?["disable_parallel_tool_use"] = true
        }
        if let choice { body["tool_choice"] = choice }
        let marks = (system + turns.flatMap(\.blocks) + (body["tools"]?.arrayValue ?? [])).count {
            $0["cache_control"] != nil
        }
        if marks > 4 {
            // Anthropic refuses the request whole (a 400, which fails the job on every model).
            throw ProviderError(
                .unsupportedRequest,
                "the request has \(marks) cache_control marks, and Anthropic takes at most 4",
                hint: "mark at most 4 places (the end of each prefix to cache); meanwhile the job moves to the next model",
                model: model.name)
        }
        // Not sent: `stream` (workers never stream; the answer is read whole), `seed` (Anthropic has
        // no seed, and OpenAI's is best effort only), and any other parameter not named here.
        return .object(body)
    }

    /// OpenAI message content (a string, or an array of parts) as Anthropic content blocks.
    private static func contentBlocks(_ content: JSONValue?, model: ModelSpec) throws -> [JSONValue] {
        switch content {
        case nil, .null?: return []
        case .string(let text)?: return isBlank(text) ? [] : [["type": "text", "text": .string(text)]]
        case .array(let parts)?:
            return try parts.compactMap { part in
                switch part["type"]?.stringValue {
                case "text":
                    // Anthropic refuses a text block of whitespace alone; such a part says nothing anyway.
                    guard let text = part["text"], !text.isNull, !isBlank(text.stringValue ?? "x") else { return nil }
                    return try marking(["type": "text", "text": text], part, model: model)
                case "image_url":
                    let url = part["image_url"]?["url"]?.stringValue ?? part["image_url"]?.stringValue ?? ""
                    return try marking(["type": "image", "source": imageSource(url)], part, model: model)
                default:
                    throw ProviderError(
                        .unsupportedRequest,
                        "Anthropic models cannot take a content part of type \(part["type"]?.description ?? "null")",
                        model: model.name)
                }
            }
        case let other?:
            throw ProviderError(
                .badRequest, "a message's content is \(other.typeName); expected a string or an array of parts",
                model: model.name)
        }
    }

    /// A `cache_control` mark as Anthropic takes it: an object (`{"type": "ephemeral"}`, with a
    /// `ttl` if given), passed on as it is; nil when there is none.
    /// - Throws: `unsupportedRequest` for a mark of another type, which Anthropic would refuse.
    private static func cacheMark(_ mark: JSONValue?, of path: String, model: ModelSpec) throws -> JSONValue? {
        switch mark {
        case nil, .null?: return nil
        case .object?: return mark
        case let other?:
            throw ProviderError(
                .unsupportedRequest,
                "\(path).cache_control is \(other.typeName), and Anthropic takes an object such as {\"type\": \"ephemeral\"}",
                hint: "give the mark as an object; meanwhile the job moves to the next model", model: model.name)
        }
    }

    /// A content block with the `cache_control` mark of the part it came from, if any.
    private static func marking(_ block: JSONValue, _ part: JSONValue, model: ModelSpec) throws -> JSONValue {
        guard let mark = try cacheMark(part["cache_control"], of: "a content part", model: model) else { return block }
        var block = block
        block["cache_control"] = mark
        return block
    }

    /// The blocks of one message, its own `cache_control` mark on the last (Anthropic marks
    /// blocks, not messages).
    private static func marking(_ blocks: [JSONValue], with mark: JSONValue?) -> [JSONValue] {
        guard let mark, !blocks.isEmpty else { return blocks }
        var blocks = blocks
        blocks[blocks.count - 1]["cache_control"] = mark
        return blocks
    }

    /// `data:image/png;base64,…` → a base64 source (the scheme in any case, parameters such as
    /// `;charset=utf-8` left out of the media type); anything else → a URL source.
    private static func imageSource(_ url: String) -> JSONValue {
        guard url.prefix(5).lowercased() == "data:", let comma = url.firstIndex(of: ","),
            url[..<comma].lowercased().hasSuffix(";base64")
        else {
            return ["type": "url", "url": .string(url)]
        }
        let header = url[url.index(url.startIndex, offsetBy: 5)..<comma]
        var mediaType = String(header.prefix { $0 != ";" }).lowercased()
        // Browsers and some SDKs write image/jpg, which Anthropic refuses; the registered type is image/jpeg.
        if mediaType == "image/jpg" { mediaType = "image/jpeg" }
        return [
            "type": "base64", "media_type": .string(mediaType),
            "data": .string(String(url[url.index(after: comma)...])),
        ]
    }

    /// An assistant message's `tool_calls` as `tool_use` blocks.
    /// - Throws: `unsupportedRequest` for arguments that are not a JSON object, which Anthropic's
    ///   `input` must be (sent as null, the request was refused as the caller's fault, and no
    ///   other model tried; turned into `{}`, the conversation would have changed).
    private static func toolUses(_ calls: JSONValue?, index: Int, model: ModelSpec) throws -> [JSONValue] {
        try (calls?.arrayValue ?? []).map { call in
            // No arguments (an empty string, as some clients write it) is an empty object.
            let given = call["function"]?["arguments"]?.stringValue ?? "{}"
            let arguments = isBlank(given) ? "{}" : given
            guard let input = (try? JSONValue(parsing: arguments))?.objectValue else {
                throw ProviderError(
                    .unsupportedRequest,
                    "messages[\(index)].tool_calls: arguments \(arguments.prefix(60).debugDescription) are not a JSON "
                        + "object, and an Anthropic tool_use input must be one",
                    hint: "the job moves to the next model of its plan; to run it on an Anthropic model, give each "
                        + "tool call's arguments as a JSON object string, e.g. \"{}\"", model: model.name)
            }
            return [
                "type": "tool_use", "id": call["id"] ?? "", "name": call["function"]?["name"] ?? "",
                "input": .object(input),
            ]
        }
    }

    /// The request's `stop`, as a list.
    private static func stopSequences(_ request: [String: JSONValue]) -> [JSONValue] {
        switch request["stop"] {
        case .string(let stop)?: [.string(stop)]
        case .array(let all)?: all
        default: []
        }
    }

    /// The request's stop sequences of whitespace alone, which Anthropic refuses: the worker ends
    /// the answer's text at the first of them itself.
    static func blankStops(_ request: [String: JSONValue]) -> [String] {
        stopSequences(request).compactMap(\.stringValue).filter { !$0.isEmpty && isBlank($0) }
    }

    /// True for text of whitespace alone (or none), which Anthropic refuses as a text block.
    static func isBlank(_ text: String) -> Bool { text.allSatisfy(\.isWhitespace) }

    /// The Messages API body as JSON text, each tool call's `input` written as its `arguments`
    /// were (compacted) where they hold a number a `Double` cannot keep: parsed into the body,
    /// `{"snowflake": 1234567890123456789}` went out as `1.2345678901234568e+18`, and the model
    /// read a wrong id in its own history.
    static func bodyText(_ body: JSONValue, request: [String: JSONValue]) -> String {
        var written: [String: String] = [:]
        var repeated: Set<String> = []
        for message in request["messages"]?.arrayValue ?? [] {
            for call in message["tool_calls"]?.arrayValue ?? [] {
                guard let id = call["id"]?.stringValue, let arguments = call["function"]?["arguments"]?.stringValue,
                    arguments.utf8.count >= 16, holdsLongNumber(arguments),
                    let text = JSONValue.rawText(in: Data(arguments.utf8), at: []), text.hasPrefix("{")
                else { continue }
                if written.updateValue(text, forKey: id) != nil { repeated.insert(id) }
            }
        }
        for id in repeated { written[id] = nil }  // which is which cannot be told: as parsed
        guard !written.isEmpty else { return body.jsonText }
        // Each such input goes as a marker string no request holds, replaced in the text after.
        let nonce = UUID().uuidString
        var markers: [String: String] = [:]
        var body = body
        if var messages = body["messages"]?.arrayValue {
            for index in messages.indices {
                guard var blocks = messages[index]["content"]?.arrayValue else { continue }
                for block in blocks.indices {
                    guard blocks[block]["type"] == "tool_use", let id = blocks[block]["id"]?.stringValue,
                        let text = written[id]
                    else { continue }
                    let marker = "\u{0}\(nonce)-\(markers.count)\u{0}"
                    markers[JSONValue.string(marker).jsonText] = text
                    blocks[block]["input"] = .string(marker)
                }
                messages[index]["content"] = .array(blocks)
            }
            body["messages"] = .array(messages)
        }
        var text = body.jsonText
        for (marker, input) in markers { text = text.replacingOccurrences(of: marker, with: input) }
        return text
    }

    /// Whether JSON text holds a run of 16 digits or more: a number a `Double` may not keep.
    private static func holdsLongNumber(_ text: String) -> Bool {
        var run = 0
        for byte in text.utf8 {
            run = (0x30...0x39).contains(byte) ? run + 1 : 0
            if run >= 16 { return true }
        }
        return false
    }

    /// `{"type":"function","function":{name,description,parameters},"cache_control":…}` →
    /// `{name,description,input_schema,cache_control}`.
    private static func tool(_ tool: JSONValue, of path: String, model: ModelSpec) throws -> JSONValue {
        let function = tool["function"] ?? tool
        var result: [String: JSONValue] = [
            "name": function["name"] ?? "", "input_schema": function["parameters"] ?? ["type": "object"],
        ]
        if let description = function["description"] { result["description"] = description }
        if let mark = try cacheMark(tool["cache_control"], of: path, model: model) { result["cache_control"] = mark }
        return .object(result)
    }

    /// `none`, `auto`, `required`, or a named function → Anthropic's `tool_choice`.
    private static func toolChoice(_ choice: JSONValue) -> JSONValue? {
        switch choice {
        case "none": return ["type": "none"]
        case "auto": return ["type": "auto"]
        case "required": return ["type": "any"]
        default:
            guard let name = choice["function"]?["name"] else { return nil }
            return ["type": "tool", "name": name]
        }
    }
}
