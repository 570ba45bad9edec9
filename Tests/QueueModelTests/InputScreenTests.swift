import Foundation
import Testing

@testable import QueueModel

/// The client-side screen of submission input: UTF-8, NUL bytes, nesting, NUL characters.
@Suite("Input screen")
struct InputScreenTests {
    @Test(
        "well-formed UTF-8 passes, each kind of malformed sequence is found at its byte",
        arguments: [
            ([0x68, 0x69], nil),
            (Array("naïve 中文 🚀".utf8), nil),
            ([0x61, 0xFF], 1),  // never a UTF-8 byte
            ([0xC0, 0x80], 0),  // overlong NUL
            ([0xE0, 0x80, 0x80], 0),  // overlong three-byte form
            ([0xED, 0xA0, 0x80], 0),  // a surrogate
            ([0xF4, 0x90, 0x80, 0x80], 0),  // past U+10FFFF
            ([0x61, 0x80], 1),  // a continuation byte on its own
            ([0x61, 0xE2, 0x82], 1),  // cut short at the end
            ([0xC3, 0x28], 0),  // a lead byte not continued
        ] as [([UInt8], Int?)]
    )
    func utf8(bytes: [UInt8], invalidAt: Int?) {
        #expect(InputScreen.firstInvalidUTF8(bytes)?.0 == invalidAt)
    }

    @Test("text: refuses NUL bytes, malformed UTF-8 and deep nesting, naming the byte")
    func text() throws {
        #expect(try InputScreen.text(Array(#"{"a": "[[["}"#.utf8)) == #"{"a": "[[["}"#)
        let nul = try #require(throws: QueueError.self) { try InputScreen.text([0x7B, 0x00, 0x7D]) }
        #expect(nul.message == "contains a NUL byte (0x00) at byte 2")
        let latin1 = try #require(throws: QueueError.self) { try InputScreen.text([0x22, 0xE9, 0x22]) }
        #expect(latin1.message.hasPrefix("is not valid UTF-8: byte 2 (0xE9)"))
        let depth = InputScreen.maximumDepth
        let deep = Array((String(repeating: "[", count: depth + 1) + String(repeating: "]", count: depth + 1)).utf8)
        let tooDeep = try #require(throws: QueueError.self) { try InputScreen.text(deep) }
        #expect(tooDeep.message == "nests objects and arrays deeper than \(depth) levels (at byte \(depth + 1))")
        let deepEnough = Array((String(repeating: "[", count: depth) + String(repeating: "]", count: depth)).utf8)
        #expect(throws: Never.self) { try InputScreen.text(deepEnough) }
    }

    @Test("checkStrings names the field holding a NUL character, or the object whose key holds one")
    func nulCharacters() throws {
        let value: JSONValue = ["messages": [["role": "user", "content": "a\u{0}b"]]]
        let error = try #require(throws: QueueError.self) { try InputScreen.checkStrings(value, path: "request") }
        #expect(
            error.message == "request.messages[0].content contains a NUL character (\\u0000), which cannot be stored")
        let key: JSONValue = ["metadata": ["k\u{0}": "v"]]
        let keyError = try #require(throws: QueueError.self) { try InputScreen.checkStrings(key, path: "") }
        #expect(keyError.message == "metadata has a key with a NUL character (\\u0000)")
        #expect(throws: Never.self) { try InputScreen.checkStrings(["odd key": ["x": 1]], path: "request") }
        #expect(InputScreen.path("request", "odd key") == #"request["odd key"]"#)
    }
}

@Suite("Numbers in status JSON")
struct StatusNumberTests {
    @Test("small rates keep their digits; larger figures are given to the thousandth", arguments: [
        (0.00782, 0.00782), (0.0004, 0.0004), (0.123456789, 0.123457), (12.34567, 12.346), (0, 0), (-0.00002, -0.00002),
    ])
    func rounding(value: Double, expected: Double) {
        #expect(JSONValue.optional(value) == .number(expected))
    }
}

@Suite("Money in the savings report")
struct SavingsMoneyTests {
    @Test("to the cent from a dollar up; two significant digits below", arguments: [
        ("1234.567", "$1,234.57"), ("0.5", "$0.50"), ("0.00123", "$0.0012"), ("0.0000008", "$0.00000080"),
        ("0", "$0.00"), ("-0.0042", "-$0.0042"), ("-3.456", "-$3.46"), ("0.0995", "$0.10"), ("0.000999", "$0.0010"),
        ("-0.0995", "-$0.10"), ("0.996", "$1.00"),
    ])
    func money(value: String, expected: String) {
        #expect(SavingsReport.money(Decimal(string: value)!) == expected)
    }

    /// A walkthrough read the demo's negative figures (its hash rule's keys on dearer models than
    /// the rule's primary) as the product costing more.
    @Test("a report below zero by model says why; one that saved says nothing more")
    func belowZeroExplained() {
        func report(byModel: Decimal) -> String {
            SavingsReport(since: nil, rows: [
                .init(priority: nil, jobs: 10, cost: 1 - byModel, baseline: 1, saved: byModel, savedByCheaperModel: byModel,
                      savedByOffPeak: 0, escalatedJobs: 0, escalatedCost: 0),
            ]).text
        }
        #expect(report(byModel: Decimal(string: "-0.2")!).hasSuffix(
            "below zero by model: jobs ran on dearer models than their rules' primaries (a hash rule spreads affinity "
                + "keys over its models, best_quality picks by quality, a fallback leaves a failing primary)"))
        #expect(!report(byModel: Decimal(string: "0.2")!).contains("below zero"))
    }
}
