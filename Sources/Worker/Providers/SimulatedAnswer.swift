import Foundation
import QueueModel

/// A simulated model's answer: a function of the model's name and the request alone, so the same
/// request gets the same text and token counts in every process and on every run.
enum SimulatedAnswer {
    /// A rough prompt size: a quarter of the characters of every message's text, plus 4 per
    /// message for the role and framing (the usual rule of thumb for English and code).
    static func promptTokens(_ request: JSONValue) -> Int {
        let messages = request["messages"]?.arrayValue ?? []
        return messages.reduce(0) { total, message in
            total + 4 + (text(of: message["content"]).count + 3) / 4
        }
    }

    /// The chat completion for a request.
    /// - Parameters:
    ///   - request: the OpenAI-shaped request.
    ///   - model: the simulated model (its name is in the answer and the seed).
    ///   - settings: for the range of output lengths.
    ///   - created: the `created` stamp (the only part that varies between runs).
    static func completion(
        for request: JSONValue, model: ModelSpec, settings: SimulatedSettings, created: Date
    ) -> (JSONValue, TokenUsage) {
        var canonical = request
        canonical["model"] = nil
        canonical["stream"] = nil
        canonical["stream_options"] = nil
        let seed = StableHash.hash(model.name + "\u{0}" + canonical.jsonText)
        var random = SimulatedRandom(seed: seed)

        let span = UInt64(settings.outputTokensMax - settings.outputTokensMin + 1)
        var completionTokens = settings.outputTokensMin + Int(random.next() % span)
        var finishReason = "stop"
        if let maxTokens = request["max_tokens"]?.intValue ?? request["max_completion_tokens"]?.intValue,
            maxTokens > 0, maxTokens < completionTokens
        {
            completionTokens = maxTokens
            finishReason = "length"
        }
        // One word per token: the text's length tracks the usage it reports.
        let words = (0..<completionTokens).map { _ in vocabulary[Int(random.next() % UInt64(vocabulary.count))] }
        let content = "[\(model.name)] " + words.joined(separator: " ")
        let usage = TokenUsage(promptTokens: promptTokens(request), completionTokens: completionTokens)
        let response: JSONValue = [
            "id": .string("chatcmpl-sim-\(StableHash.hex(String(seed)))"),
            "object": "chat.completion",
            "created": .number(created.timeIntervalSince1970.rounded(.down)),
            "model": .string(model.name),
            "system_fingerprint": "switchyard-simulated",
            "choices": [
                [
                    "index": 0, "message": ["role": "assistant", "content": .string(content)],
                    "finish_reason": .string(finishReason),
                ]
            ],
            "usage": usage.openAIUsage,
        ]
        return (response, usage)
    }

    /// The text of a message's content: a string, or the text parts of an array.
    private static func text(of content: JSONValue?) -> String {
        switch content {
        case .string(let text)?: text
        case .array(let parts)?: parts.compactMap { $0["text"]?.stringValue }.joined(separator: "\n")
        default: ""
        }
    }

    private static let vocabulary = [
        "queue", "worker", "route", "model", "tier", "lease", "token", "cache", "shard", "ring", "hash", "batch",
        "latency", "budget", "answer", "prompt", "signal", "vector", "switch", "yard", "train", "track", "rail",
        "engine", "signal", "junction", "freight", "timetable", "platform", "points", "siding", "depot", "the",
        "a", "of", "and", "to", "in", "is", "that", "for", "on", "with", "as", "it", "by", "this", "from",
    ]
}
