import Foundation
import Testing

@testable import QueueModel

@Suite("Write-back encoding")
struct CompletionEncodingTests {
    /// Strings that exercise both paths of the string writer: copied whole, and escaped.
    static let strings = [
        "", "plain", "quote \" inside", "back\\slash", "new\nline", "tab\t", "bell \u{7}", "nul \u{0} byte",
        "Grüße 世界 😀", "\u{1F}", "ends with quote\"",
    ]

    @Test("every outcome reads back as the values it was written from, NUL as U+FFFD, keys in any order")
    func readsBack() throws {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<300 {
            let text = Self.strings.randomElement(using: &generator)!
            let response: JSONValue = [
                "id": .string("chatcmpl-\(round)"), "choices": [["message": ["role": "assistant", "content": .string(text)]]],
                "usage": ["prompt_tokens": 6, "completion_tokens": 2], "object": "chat.completion", "z": nil, "a": true,
            ]
            let at = Date(timeIntervalSince1970: 1_795_745_131.597805)
            let completion = Completion(
                jobID: Int64(round), attempt: 2, kind: .result, status: "succeeded", taskClass: text, model: "m",
                provider: "simulated", tier: "primary", response: response,
                trail: [
                    AttemptRecord(attempt: 2, model: "m", provider: "simulated", tier: "primary", outcome: "error",
                                  httpStatus: 500, latencyMS: 12.3456789, error: text, worker: "w", at: at),
                    AttemptRecord(attempt: 2, outcome: "succeeded", at: at),
                ],
                tokensIn: 6, tokensOut: 2, cost: Decimal(string: "0.0000012"), baseCost: Decimal(string: "0.0000012"),
                primaryCost: Decimal(string: "0.5"), latencyMS: 1.5, metadata: ["rule": .string(text), "n": 3]
            )
            let decoded = try JSONValue(parsing: Completion.jsonText([completion]))
            let storable = text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}")
            let item = try #require(decoded.arrayValue?.first)
            #expect(item["id"] == .number(Double(round)))
            #expect(item["task_class"] == .string(storable))
            #expect(item["response"] == [
                "id": .string("chatcmpl-\(round)"),
                "choices": [["message": ["role": "assistant", "content": .string(storable)]]],
                "usage": ["prompt_tokens": 6, "completion_tokens": 2], "object": "chat.completion", "z": nil, "a": true,
            ])
            #expect(item["trail"] == [
                [
                    "attempt": 2, "model": "m", "provider": "simulated", "tier": "primary", "outcome": "error",
                    "http_status": 500, "latency_ms": 12.346, "error": .string(storable), "worker": "w",
                    "at": "2026-11-27T02:05:31.597805Z",
                ],
                ["attempt": 2, "outcome": "succeeded", "at": "2026-11-27T02:05:31.597805Z"],
            ])
            #expect(item["cost"] == "0.0000012")
            #expect(item["base_cost"] == "0.0000012")
            #expect(item["primary_cost"] == "0.5")
            #expect(item["metadata"] == ["rule": .string(storable), "n": 3])
            #expect(item["retry_at"] == nil && item["error"] == nil)
        }
    }

    @Test("outside the write-back, keys stay sorted: equal values print equally")
    func sortedElsewhere() {
        let value: JSONValue = ["b": 1, "a": ["d": "x\"y", "c": nil], "c": "z"]
        #expect(value.jsonText == #"{"a":{"c":null,"d":"x\"y"},"b":1,"c":"z"}"#)
    }
}
