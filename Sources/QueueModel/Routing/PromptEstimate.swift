/// A cheap, deterministic estimate of a chat request's size in tokens, for checking that it fits
/// a model's context window (no tokenizer: that would differ per model and cost far more).
///
/// ASCII text counts one token per 4 bytes (the usual rule of thumb for English and code with
/// BPE tokenizers); every other Unicode scalar counts one token, since CJK and other scripts run
/// near one token per character. Each message adds 4 tokens of framing; an image part adds 85
/// (a low-detail image); `tools` count by the length of their JSON. The estimate leans high, so
/// a request that "fits" rarely hits a context-length error.
public struct PromptEstimate: Sendable, Hashable {
    /// Estimated tokens of the prompt: messages, framing and tools.
    public var promptTokens: Int
    /// The output the request may produce: `max_completion_tokens` or `max_tokens`, else
    /// `defaultOutputTokens`.
    public var outputTokens: Int
    /// Whether the request set its output limit.
    public var outputTokensGiven: Bool
    /// How many messages the request has.
    public var messageCount: Int

    /// Output tokens reserved when a request does not say how many it wants.
    public static let defaultOutputTokens = 256

    /// What a context window must hold: prompt plus output.
    public var totalTokens: Int { promptTokens + outputTokens }

    /// Estimates a chat-completions request body.
    public init(request: JSONValue) {
        let messages = request["messages"]?.arrayValue ?? []
        var tokens = 0
        for message in messages {
            tokens += 4
            switch message["content"] {
            case .string(let text): tokens += Self.tokens(in: text)
            case .array(let parts):
                for part in parts {
                    if let text = part["text"]?.stringValue {
                        tokens += Self.tokens(in: text)
                    } else if part["type"]?.stringValue?.hasPrefix("image") == true {
                        tokens += 85
                    }
                }
            default: break
            }
        }
        if let tools = request["tools"], !tools.isNull { tokens += Self.tokens(in: tools.jsonText) }
        promptTokens = tokens
        let limit = request["max_completion_tokens"]?.intValue ?? request["max_tokens"]?.intValue
        outputTokens = max(0, limit ?? Self.defaultOutputTokens)
        outputTokensGiven = limit != nil
        messageCount = messages.count
    }

    /// Estimated tokens in a piece of text: ASCII bytes / 4 (rounded up) plus one per other scalar.
    public static func tokens(in text: String) -> Int {
        var ascii = 0
        var other = 0
        for scalar in text.unicodeScalars {
            if scalar.isASCII { ascii += 1 } else { other += 1 }
        }
        return (ascii + 3) / 4 + other
    }

    /// The text of every message, with its role (string contents and text parts).
    public static func messageTexts(of request: JSONValue) -> [(role: String, text: String)] {
        (request["messages"]?.arrayValue ?? []).map { message in
            let role = message["role"]?.stringValue ?? ""
            switch message["content"] {
            case .string(let text): return (role, text)
            case .array(let parts): return (role, parts.compactMap { $0["text"]?.stringValue }.joined(separator: "\n"))
            default: return (role, "")
            }
        }
    }
}
