import Foundation
import QueueModel
import Testing

@Suite("JSON text: parsing and writing")
struct JSONValueTests {
    @Test("a decimal amount is written with its own digits, not a binary approximation")
    func decimalNumbers() {
        #expect(JSONValue.number(Decimal(string: "0.058292")!).jsonText == "0.058292")
        #expect(JSONValue.number(Decimal(string: "1234.5678901234")!).jsonText == "1234.5678901234")
    }

    @Test("small and large amounts are written without an exponent, with the same digits")
    func noExponent() throws {
        // `dispatcher result` printed a job's cost as 4.375e-05.
        let cases: [(Double, String)] = [
            (4.375e-05, "0.00004375"), (-4.375e-05, "-0.00004375"), (1.5e-7, "0.00000015"),
            (0.1, "0.1"), (123.25, "123.25"), (2.5e+17, "250000000000000000"), (1.25e+20, "125000000000000000000"),
            (1e-30, "1e-30"), (1.5e+300, "1.5e+300"),
        ]
        for (value, text) in cases {
            #expect(JSONValue.number(value).jsonText == text, "\(value)")
            #expect(try JSONValue(parsing: text) == .number(value), "\(text)")
        }
    }

    @Test("pretty text: two spaces a level, sorted keys, empty containers inline, reads back the same")
    func pretty() throws {
        let value: JSONValue = ["b": [1, ["x": nil]], "a": "s/lash", "c": [:], "d": [], "cost": 4.375e-05]
        #expect(value.prettyText == """
            {
              "a": "s/lash",
              "b": [
                1,
                {
                  "x": null
                }
              ],
              "c": {},
              "cost": 0.00004375,
              "d": []
            }
            """)
        #expect(try JSONValue(parsing: value.prettyText) == value)
        #expect(JSONValue.string("x").prettyText == #""x""#)
    }

    @Test("round trips: escapes, non-ASCII, surrogate pairs, numbers, nesting")
    func roundTrip() throws {
        let text = #"{"a":[1,-2.5,3e2,true,false,null],"b":"quote \" backslash \\ newline \n tab \t nul-free \u0001","c":"Grüße 世界 😀 \ud83d\ude00","d":{}}"#
        let value = try JSONValue(parsing: text)
        #expect(value["a"] == [1, -2.5, 300, true, false, nil])
        #expect(value["b"]?.stringValue == "quote \" backslash \\ newline \n tab \t nul-free \u{1}")
        #expect(value["c"]?.stringValue == "Grüße 世界 😀 😀")
        #expect(try JSONValue(parsing: value.jsonText) == value)
        #expect(value.jsonText == #"{"a":[1,-2.5,300,true,false,null],"b":"quote \" backslash \\ newline \n tab \t nul-free \u0001","c":"Grüße 世界 😀 😀","d":{}}"#)
    }

    /// An SQL walkthrough's `--metadata '{"order_id": 9007199254740993}'` was stored and printed
    /// as 9007199254740992.0, without a word.
    @Test("a number with more digits than a Double keeps is kept as written; one with fewer reads as before")
    func exactNumbers() throws {
        let text = #"{"big":123456789012345678901234567890,"id":9007199254740993,"neg":-9007199254740993,"#
            + #""p":0.1000000000000000055511151231257827,"plain":1.5,"small":0.000123}"#
        let value = try JSONValue(parsing: text)
        #expect(value.jsonText == text)
        // Zeros at the end carry no digit a Double loses.
        #expect(try JSONValue(parsing: "1.000000000000000000") == 1 && JSONValue(parsing: "2500000000000000000000") == 2.5e21)
        #expect(try JSONValue(parsing: value.prettyText) == value)
        #expect(value["id"] == .exactNumber("9007199254740993") && value["id"]?.intValue == 9_007_199_254_740_993)
        #expect(value["neg"]?.intValue == -9_007_199_254_740_993)
        #expect(try JSONValue(parsing: "9007199254740993.000").intValue == 9_007_199_254_740_993)
        #expect(value["p"]?.doubleValue == 0.1 && value["p"]?.intValue == nil && value["big"]?.intValue == nil)
        #expect(value["big"]?.typeName == "a number")
        #expect(value["plain"] == 1.5 && value["small"] == 0.000123)
        // 15 significant digits, leading zeros not among them: a Double keeps them.
        #expect(try JSONValue(parsing: "0.000123456789012345") == .number(0.000123456789012345))
        #expect(try JSONValue(parsing: "1234567890123456") == .exactNumber("1234567890123456"))
        // Encoded exactly too (as an integer, or a decimal).
        let encoded = try JSONEncoder().encode(["id": value["id"]!])
        #expect(String(decoding: encoded, as: UTF8.self) == #"{"id":9007199254740993}"#)
    }

    @Test("agrees with Foundation's JSONSerialization on generated documents")
    func agreesWithFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        func random(_ depth: Int) -> JSONValue {
            switch depth > 3 ? Int.random(in: 0..<4, using: &generator) : Int.random(in: 0..<6, using: &generator) {
            case 0: return .number(Double(Int.random(in: -1_000_000...1_000_000, using: &generator)) / 8)
            case 1: return .string(String((0..<Int.random(in: 0..<12, using: &generator)).map { _ in
                ["a", "\"", "\\", "\n", "é", "世", "😀", " ", "\u{7}"].randomElement(using: &generator)!
            }))
            case 2: return .bool(Bool.random(using: &generator))
            case 3: return .null
            case 4: return .array((0..<Int.random(in: 0..<5, using: &generator)).map { _ in random(depth + 1) })
            default:
                var members: [String: JSONValue] = [:]
                for index in 0..<Int.random(in: 0..<5, using: &generator) { members["k\(index)"] = random(depth + 1) }
                return .object(members)
            }
        }
        for _ in 0..<500 {
            let value = random(0)
            let text = value.jsonText
            #expect(try JSONValue(parsing: text) == value)
            // Foundation reads our text back to the same structure.
            let foundation = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
            let again = try JSONSerialization.data(withJSONObject: foundation, options: [.fragmentsAllowed, .sortedKeys])
            #expect(try JSONValue(parsing: again) == value)
        }
    }

    @Test(
        "malformed text is refused with where it went wrong",
        arguments: [
            ("{\"a\":}", "unexpected character at byte 6"), ("[1,2", "unexpected end of input"),
            ("{\"a\" 1}", "expected ':'"), ("\"\\x\"", "an invalid escape"), ("01x", "unexpected text after"),
            ("\"\\ud800\"", "an unpaired surrogate"), ("[1,]", "unexpected character"), ("tru", "unexpected end"),
            ("\"a\u{1}b\"", "a control character in a string"), ("", "unexpected end of input"),
            // Infinity to a Double, and JSON cannot write it back (it was stored as null).
            // Valid JSON, so not called invalid (a review's submit of 1e400 read "not valid JSON").
            ("{\"n\":1e999999}", "not JSON this program can read: a number past ±1.8e308 at byte 6 (1e999999)"),
            ("[-1e400]", "a number past ±1.8e308 at byte 2 (-1e400), more than a 64-bit float holds"),
        ]
    )
    func malformed(text: String, reason: String) {
        let error = #expect(throws: QueueError.self) { try JSONValue(parsing: text) }
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "")")
    }

    @Test("invalid UTF-8 and excessive nesting are refused")
    func limits() {
        var bytes = Data("\"".utf8)
        bytes.append(contentsOf: [0xC3, 0x28])
        bytes.append(contentsOf: Data("\"".utf8))
        #expect(throws: QueueError.self) { try JSONValue(parsing: bytes) }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        let error = #expect(throws: QueueError.self) { try JSONValue(parsing: deep) }
        #expect(error?.message.contains("nested deeper than 512 levels") == true)
    }

    @Test("the raw text of a value at a path: as written, or nil when the path leads nowhere")
    func rawText() {
        let data = Data(#" {"a": [1, {"b\u0022": 2}, {"c": 12345678901234567890, "d": [ true ]}], "e": "x"} "#.utf8)
        #expect(JSONValue.rawText(in: data, at: [.key("a"), .index(2), .key("c")]) == "12345678901234567890")
        #expect(JSONValue.rawText(in: data, at: [.key("a"), .index(2), .key("d")]) == "[true]")
        #expect(JSONValue.rawText(in: data, at: [.key("a"), .index(1), .key("b\"")]) == "2")
        #expect(JSONValue.rawText(in: data, at: [.key("e")]) == #""x""#)
        #expect(JSONValue.rawText(in: data, at: []) == #"{"a":[1,{"b\u0022":2},{"c":12345678901234567890,"d":[true]}],"e":"x"}"#)
        #expect(JSONValue.rawText(in: Data(#"{"s": " a \" b "}"#.utf8), at: [.key("s")]) == #"" a \" b ""#)
        for nowhere: [JSONPathStep] in [[.key("z")], [.key("a"), .index(3)], [.key("a"), .index(-1)], [.key("e"), .key("f")], [.index(0)]] {
            #expect(JSONValue.rawText(in: data, at: nowhere) == nil, "\(nowhere)")
        }
        #expect(JSONValue.rawText(in: Data(#"{"a": [1, "#.utf8), at: [.key("a"), .index(1)]) == nil)
        #expect(JSONValue.rawText(in: Data("[]".utf8), at: [.index(0)]) == nil)
    }
}
