import Foundation
import QueueModel

/// One generated submission and what must be said about it.
struct GeneratedInput: Sendable, CustomStringConvertible {
    /// The hostile category (or "valid").
    var kind: String
    /// The request's bytes, which may be anything: not JSON, not UTF-8, with NUL bytes.
    var request: [UInt8]
    var priority = "interactive"
    var metadata: [UInt8] = Array("{}".utf8)
    var maxAttempts = 3
    /// A refusal must contain one of these; empty when the input is valid and must be accepted.
    var expected: [String]

    var isValid: Bool { expected.isEmpty }
    var hasOptions: Bool { priority != "interactive" || metadata != Array("{}".utf8) || maxAttempts != 3 }

    /// The JSONL line: the bare request, or an envelope when options are set.
    var line: [UInt8] {
        guard hasOptions else { return request }
        let priorityText = JSONValue.string(priority).jsonText
        return Array(#"{"request":"#.utf8) + request + Array(#","priority":\#(priorityText),"metadata":"#.utf8)
            + metadata + Array(#","max_attempts":\#(maxAttempts)}"#.utf8)
    }

    /// The kind and the start of the request, for failure messages (not megabytes of bytes).
    var description: String {
        "\(kind): \(String(decoding: request.prefix(120), as: UTF8.self)) (\(request.count) bytes)"
    }

    /// Whether an error message says what was expected.
    func matches(_ message: String) -> Bool {
        expected.contains { message.contains($0) }
    }
}

/// Generates hostile and valid submissions, deterministically from a seed. The limits below are
/// what the test database is set to (lower than the defaults, so "huge" stays cheap to send; no
/// lower than the floors the schema allows).
struct HostileInputs {
    static let maxRequestBytes = 20_000
    static let maxDepth = 32
    static let maxMessages = 100
    static let maxContentChars = 10_000
    static let maxMetadataBytes = 1_000

    /// Sets the limits above in a test database.
    static let settingsSQL = """
        UPDATE switchyard.settings SET value = CASE name
            WHEN 'max_request_bytes' THEN '\(maxRequestBytes)' WHEN 'max_request_depth' THEN '\(maxDepth)'
            WHEN 'max_messages' THEN '\(maxMessages)' WHEN 'max_content_chars' THEN '\(maxContentChars)'
            WHEN 'max_metadata_bytes' THEN '\(maxMetadataBytes)' END
        WHERE name IN ('max_request_bytes', 'max_request_depth', 'max_messages', 'max_content_chars', 'max_metadata_bytes')
        """

    static let kinds = [
        "deep nesting", "huge content", "huge request", "too many messages", "invalid UTF-8", "raw NUL byte",
        "NUL escape", "not an object", "messages not an array", "malformed message", "wrong field type",
        "SQL where a name belongs", "unknown field", "bad options", "not JSON", "missing parts",
    ]

    /// Strings a valid request may carry anywhere text goes: they must be stored as sent.
    static let awkwardTexts = [
        "'; DROP TABLE switchyard.jobs; --", "\" OR 1=1 --", "Robert'); DELETE FROM switchyard.results;--",
        "$1 $2 %s %d {{template}}", "\\\\server\\share \\n not a newline", "<script>alert(1)</script>",
        "naïve café — 中文 — עברית — 🚀🔥", "line one\nline two\ttabbed", "{\"looks\": [\"like\", \"json\"]}",
        "SELECT pg_sleep(10);", "\u{200B}zero\u{200B}width", "COPY switchyard.jobs TO PROGRAM 'id'",
    ]

    var random: SeededRandom
    /// Whether the input goes through the command line (client-side checks answer first).
    let client: Bool

    init(seed: UInt64, client: Bool) {
        random = SeededRandom(seed: seed)
        self.client = client
    }

    static func bytes(_ value: JSONValue) -> [UInt8] { Array(value.jsonText.utf8) }

    func message(_ content: JSONValue, role: String = "user") -> JSONValue {
        ["role": .string(role), "content": content]
    }

    mutating func sentence() -> String {
        random.chance(0.3) ? random.pick(Self.awkwardTexts) : random.text(random.int(1...80))
    }

    /// A valid request, with options, that must be accepted and stored exactly.
    mutating func valid() -> GeneratedInput {
        var messages: [JSONValue] = []
        if random.chance(0.3) { messages.append(message(.string(sentence()), role: "system")) }
        for turn in 0..<random.int(1...4) {
            let content: JSONValue =
                random.chance(0.25) ? [["type": "text", "text": .string(sentence())]] : .string(sentence())
            messages.append(message(content, role: turn % 2 == 0 ? "user" : "assistant"))
        }
        var request: [String: JSONValue] = ["messages": .array(messages)]
        if random.chance(0.4) { request["temperature"] = .number(Double(random.int(0...20)) / 10) }
        if random.chance(0.4) { request["max_tokens"] = .number(Double(random.int(1...4096))) }
        if random.chance(0.2) { request["stop"] = [.string(random.pick(["\n", "END", "'; --"]))] }
        if random.chance(0.2) { request["user"] = .string(sentence()) }
        if random.chance(0.2) { request["metadata"] = ["note": .string(sentence())] }
        var input = GeneratedInput(kind: "valid", request: Self.bytes(.object(request)), expected: [])
        input.priority = random.pick(["interactive", "background"])
        if random.chance(0.3) { input.metadata = Self.bytes(["team": .string(sentence())]) }
        return input
    }

    /// The `index`th hostile input: the categories take turns, each with random details.
    mutating func hostile(_ index: Int) -> GeneratedInput {
        let kind = Self.kinds[index % Self.kinds.count]
        var input = GeneratedInput(kind: kind, request: [], expected: [])
        let hello = Self.bytes(["messages": [message("hello")]])
        switch kind {
        case "deep nesting":
            let depth = client && random.chance(0.5) ? random.int(257...3000) : random.int(Self.maxDepth...400)
            let open = random.chance(0.5) ? "[" : "{\"a\":"
            let close = open == "[" ? "]" : "}"
            let field = random.pick(["tools", "response_format", "metadata", "messages"])
            let nested =
                String(repeating: open, count: depth - 1) + (open == "[" ? "[]" : "{}")
                + String(repeating: close, count: depth - 1)
            input.request = Array(#"{"messages":[{"role":"user","content":"hi"}],"\#(field)x":\#(nested)}"#.utf8)
            if field != "messages" {  // an allowed field, so the depth is what is refused
                input.request = Array(#"{"messages":[{"role":"user","content":"hi"}],"\#(field)":\#(nested)}"#.utf8)
            }
            input.expected =
                depth + 1 > 256 && client
                ? ["deeper than 256 levels"] : ["deeper than the limit of \(Self.maxDepth) levels"]
        case "huge content":
            let length = random.int(Self.maxContentChars + 1...Self.maxRequestBytes - 200)
            let text = JSONValue.string(random.text(length))
            input.request = Self.bytes([
                "messages": [message(random.chance(0.5) ? text : [["type": "text", "text": text]])]
            ])
            input.expected = ["characters, over the limit of \(Self.maxContentChars)"]
        case "huge request":
            // Each message within the content limit, together over the byte limit.
            let count = random.int(3...6)
            let messages = (0..<count).map { _ in
                message(.string(random.text(Self.maxContentChars - random.int(0...50))))
            }
            input.request = Self.bytes(["messages": .array(messages)])
            input.expected = ["bytes, over the limit of \(Self.maxRequestBytes) bytes"]
        case "too many messages":
            let count = random.int(Self.maxMessages + 1...Self.maxMessages * 4)
            input.request = Self.bytes(["messages": .array((0..<count).map { _ in message("x") })])
            input.expected = ["messages, over the limit of \(Self.maxMessages)"]
        case "invalid UTF-8":
            let bad: [UInt8] = random.pick([
                [0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF5, 0x80, 0x80, 0x80], [0x80],
            ])
            input.request = splice(bad, into: hello)
            input.expected = client ? ["not valid UTF-8"] : ["invalid byte sequence for encoding \"UTF8\""]
        case "raw NUL byte":
            input.request = splice([0x00], into: hello)
            input.expected = client ? ["contains a NUL byte"] : ["invalid byte sequence for encoding \"UTF8\": 0x00"]
        case "NUL escape":
            let where_ = random.int(0...3)
            let poisoned = JSONValue.string("a\u{0}b")
            let request: JSONValue =
                switch where_ {
                case 0: ["messages": [message(poisoned)]]
                case 1: ["messages": [["role": poisoned, "content": "hi"]]]
                case 2: ["messages": [message("hi")], "user": poisoned]
                default: ["messages": [message("hi")], "metadata": ["k\u{0}": "v"]]
                }
            input.request = Self.bytes(request)
            input.expected =
                client
                ? ["contains a NUL character", "has a key with a NUL character"]
                : ["unsupported Unicode escape sequence"]
        case "not an object":
            input.request = Array(random.pick(["[]", "[1, 2]", "\"hello\"", "42", "true", "null"]).utf8)
            input.expected = ["request must be a JSON object, got", "a line must be a JSON object"]
        case "messages not an array":
            let messages = random.pick(["\"hi\"", "42", "{\"role\":\"user\"}", "null", "true"])
            input.request = Array(#"{"messages":\#(messages)}"#.utf8)
            input.expected = ["request.messages must be an array, got"]
        case "malformed message":
            let (message, expected) = random.pick([
                ("\"hi\"", "request.messages[0] must be an object with role and content"),
                ("[1]", "request.messages[0] must be an object with role and content"),
                (#"{"role":7,"content":"hi"}"#, "request.messages[0].role must be a string"),
                (#"{"role":"user","content":42}"#, "content must be a string or an array of parts, got number"),
                (
                    #"{"role":"user","content":{"text":"hi"}}"#,
                    "content must be a string or an array of parts, got object"
                ),
                (
                    #"{"role":"user","content":["hi"]}"#,
                    "request.messages[0].content[0] must be an object with a string type"
                ),
                (
                    #"{"role":"user","content":[{"text":"hi"}]}"#,
                    "request.messages[0].content[0] must be an object with a string type"
                ),
                (
                    #"{"role":"user","content":[{"type":"text","text":5}]}"#,
                    "request.messages[0].content[0].text must be a string"
                ),
            ])
            input.request = Array(#"{"messages":[\#(message)]}"#.utf8)
            input.expected = [expected]
        case "wrong field type":
            let (field, value, expected) = random.pick([
                ("temperature", "\"hot\"", "request.temperature must be a number, got string"),
                ("max_tokens", "\"100\"", "request.max_tokens must be a whole number, got string"),
                ("max_tokens", "1.5", "request.max_tokens must be a whole number, got 1.5"),
                ("max_tokens", "-3", "request.max_tokens must be between 1 and 2147483647, got -3"),
                ("stream", "\"yes\"", "request.stream must be a boolean, got string"),
                ("tools", "{}", "request.tools must be an array, got object"),
                ("stop", "5", "request.stop must be a string or an array, got number"),
                ("model", "7", "request.model must be a string, got number"),
                ("response_format", "\"json\"", "request.response_format must be an object, got string"),
                ("tool_choice", "3", "request.tool_choice must be a string or an object, got number"),
                ("n", "[1]", "request.n must be a whole number, got array"),
            ])
            input.request = Array(#"{"messages":[{"role":"user","content":"hi"}],"\#(field)":\#(value)}"#.utf8)
            input.expected = [expected]
        case "SQL where a name belongs":
            let injection = random.pick(Self.awkwardTexts.prefix(3).map { $0 }) + random.text(random.int(0...5))
            switch random.int(0...3) {
            case 0:
                input.request = Self.bytes(["messages": [message("hi", role: injection)]])
                input.expected = ["role must be system, developer, user, assistant or tool"]
            case 1:
                input.request = Self.bytes(["messages": [message("hi")], "model": .string(injection)])
                input.expected = ["request.model names an unknown model"]
            case 2:
                input.request = hello
                input.priority = injection
                input.expected = ["priority must be interactive or background"]
            default:
                input.request = Self.bytes(["messages": [message("hi")], injection: true])
                input.expected = ["request has an unknown field"]
            }
        case "unknown field":
            let name =
                random.pick(["prompt", "__proto__", "$where", "constructor", "x_", "messages "])
                + random.text(random.int(0...4))
            if random.chance(0.5) {
                input.request = Self.bytes(["messages": [message("hi")], name: 1])
                input.expected = ["request has an unknown field"]
            } else {
                input.request = Self.bytes(["messages": [["role": "user", "content": "hi", name: 1]]])
                input.expected = ["request.messages[0] has an unknown field"]
            }
        case "bad options":
            input.request = hello
            switch random.int(0...3) {
            case 0:
                input.priority = random.pick(["urgent", "", "INTERACTIVE", "low"])
                input.expected = ["priority must be interactive or background"]
            case 1:
                input.maxAttempts = random.pick([0, 101, -5, 1000])
                input.expected = ["max_attempts must be between 1 and 100", "--max-attempts must be a whole number"]
            case 2:
                input.metadata = Array(random.pick(["[1]", "\"x\"", "42", "[]"]).utf8)
                input.expected = ["metadata must be a JSON object", "--metadata must be a JSON object"]
            default:
                input.metadata = Self.bytes(["blob": .string(random.text(Self.maxMetadataBytes + random.int(1...2000)))]
                )
                input.expected = ["bytes, over the limit of \(Self.maxMetadataBytes) bytes"]
            }
        case "not JSON":
            let text = random.pick([
                #"{"messages": ["#, #"{"messages": [],}"#, "{'messages': []}", #"{messages: []}"#,
                #"{"messages": [{"role": "user", "content": NaN}]}"#, #"{"messages": [] "#, "{\"messages\": x}",
            ])
            input.request = Array(text.utf8)
            input.expected = client ? ["not valid JSON"] : ["invalid input syntax for type json"]
        default:  // missing parts
            let (text, expected) = random.pick([
                ("{}", "request.messages is missing"), (#"{"messages":[]}"#, "request.messages must not be empty"),
                (#"{"messages":[{"content":"hi"}]}"#, "request.messages[0].role is missing"),
                (#"{"messages":[{"role":"user"}]}"#, "request.messages[0].content is missing"),
            ])
            input.request = Array(text.utf8)
            input.expected = [expected]
        }
        return input
    }

    /// `bytes` inside the first string value of `json` (after its opening quote).
    mutating func splice(_ bytes: [UInt8], into json: [UInt8]) -> [UInt8] {
        let quotes = json.indices.filter { json[$0] == 0x22 }
        let at = quotes[min(quotes.count - 1, random.pick([0, 4, 8]))] + 1  // inside a key or a value
        return Array(json[..<at]) + bytes + Array(json[at...])
    }
}
