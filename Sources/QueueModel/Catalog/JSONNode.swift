import Foundation

/// A JSON value parsed with number literals kept as written and object members kept in order.
///
/// The catalog needs this where `JSONValue` (numbers as `Double`) is not enough: prices become
/// `Decimal`s from their literal text (`0.002` stays exactly 0.002, never 0.00200000000000000004),
/// a duplicated key is reported instead of silently keeping the last one, and problems name the
/// line and column where the text stops being JSON.
enum JSONNode: Sendable, Hashable {
    case null
    case bool(Bool)
    /// The number's literal text, as it appears in the document.
    case number(String)
    case string(String)
    case array([JSONNode])
    /// Members in document order.
    case object([Member])

    /// An object member.
    struct Member: Sendable, Hashable {
        var key: String
        var value: JSONNode
    }

    /// Parses a document.
    /// - Throws: `QueueError.invalidInput` naming the line and column of the first syntax error.
    init(parsing data: Data) throws {
        var parser = Parser(bytes: Array(data))
        self = try parser.document()
    }

    /// The same value as a `JSONValue` (numbers become `Double`s), for settings kept as JSON.
    var jsonValue: JSONValue {
        switch self {
        case .null: .null
        case .bool(let value): .bool(value)
        case .number(let text): .number(Double(text) ?? 0)
        case .string(let value): .string(value)
        case .array(let elements): .array(elements.map(\.jsonValue))
        case .object(let members):
            .object(Dictionary(members.map { ($0.key, $0.value.jsonValue) }, uniquingKeysWith: { _, last in last }))
        }
    }

    /// The JSON type's name, for messages ("expected a string, got an array").
    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    var members: [Member]? { if case .object(let members) = self { members } else { nil } }
    var stringValue: String? { if case .string(let value) = self { value } else { nil } }

    /// The number as an exact decimal, parsed from its literal text.
    var decimalValue: Decimal? {
        guard case .number(let text) = self else { return nil }
        return Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))
    }

    /// The number as an integer, when it is a whole number that fits.
    var intValue: Int? {
        guard let decimal = decimalValue, decimal == decimal.rounded(0), abs(decimal) <= Decimal(1 << 53) else {
            return nil
        }
        return NSDecimalNumber(decimal: decimal).intValue
    }
}

extension Decimal {
    /// The value rounded half-up to `places` decimal places.
    func rounded(_ places: Int) -> Decimal {
        var value = self
        var result = Decimal()
        NSDecimalRound(&result, &value, places, .plain)
        return result
    }
}

/// A recursive-descent JSON parser over UTF-8 bytes (RFC 8259), nesting limited to 128 levels.
private struct Parser {
    let bytes: [UInt8]
    var index = 0
    var depth = 0

    init(bytes: [UInt8]) {
        // A UTF-8 byte order mark is allowed before the document.
        self.bytes = bytes
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { index = 3 }
    }

    mutating func document() throws -> JSONNode {
        let value = try self.value()
        skipWhitespace()
        guard index == bytes.count else { throw failure("unexpected text after the end of the document") }
        return value
    }

    private mutating func value() throws -> JSONNode {
        skipWhitespace()
        guard index < bytes.count else { throw failure("the document ends where a value was expected") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw failure("unexpected character \(describe(bytes[index])) where a value was expected")
        }
    }

    private mutating func object() throws -> JSONNode {
        try enter()
        defer { depth -= 1 }
        index += 1
        var members: [JSONNode.Member] = []
        skipWhitespace()
        if peek(UInt8(ascii: "}")) {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard peek(UInt8(ascii: "\"")) else { throw failure("expected a member name in double quotes") }
            let key = try string()
            skipWhitespace()
            guard peek(UInt8(ascii: ":")) else { throw failure("expected ':' after member name \"\(key)\"") }
            index += 1
            members.append(JSONNode.Member(key: key, value: try value()))
            skipWhitespace()
            if peek(UInt8(ascii: ",")) {
                index += 1
            } else if peek(UInt8(ascii: "}")) {
                index += 1
                return .object(members)
            } else {
                throw failure("expected ',' or '}' after the value of \"\(key)\"")
            }
        }
    }

    private mutating func array() throws -> JSONNode {
        try enter()
        defer { depth -= 1 }
        index += 1
        var elements: [JSONNode] = []
        skipWhitespace()
        if peek(UInt8(ascii: "]")) {
            index += 1
            return .array(elements)
        }
        while true {
            elements.append(try value())
            skipWhitespace()
            if peek(UInt8(ascii: ",")) {
                index += 1
            } else if peek(UInt8(ascii: "]")) {
                index += 1
                return .array(elements)
            } else {
                throw failure("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func string() throws -> String {
        index += 1  // the opening quote
        var utf8: [UInt8] = []
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard let text = String(validating: utf8, as: UTF8.self) else {
                    throw failure("a string is not valid UTF-8")
                }
                return text
            case UInt8(ascii: "\\"):
                utf8 += try escape()
            case 0..<0x20:
                throw failure("a control character inside a string must be escaped")
            default:
                utf8.append(byte)
            }
        }
        throw failure("a string is not closed")
    }

    private mutating func escape() throws -> [UInt8] {
        guard index < bytes.count else { throw failure("a string is not closed") }
        let byte = bytes[index]
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return [byte]
        case UInt8(ascii: "b"): return [0x08]
        case UInt8(ascii: "f"): return [0x0C]
        case UInt8(ascii: "n"): return [0x0A]
        case UInt8(ascii: "r"): return [0x0D]
        case UInt8(ascii: "t"): return [0x09]
        case UInt8(ascii: "u"):
            var scalar = try hexQuad()
            if (0xD800..<0xDC00).contains(scalar) {
                guard bytes[index...].starts(with: [UInt8(ascii: "\\"), UInt8(ascii: "u")]) else {
                    throw failure("a \\u escape starts a surrogate pair that is not completed")
                }
                index += 2
                let low = try hexQuad()
                guard (0xDC00..<0xE000).contains(low) else { throw failure("invalid low surrogate in a \\u escape") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw failure("a \\u escape is not a Unicode scalar") }
            return Array(String(Character(unicode)).utf8)
        default:
            throw failure("unknown escape \\\(describe(byte)) in a string")
        }
    }

    private mutating func hexQuad() throws -> UInt32 {
        guard index + 4 <= bytes.count,
            let value = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16)
        else { throw failure("a \\u escape needs four hex digits") }
        index += 4
        return value
    }

    private mutating func number() throws -> JSONNode {
        let start = index
        if peek(UInt8(ascii: "-")) { index += 1 }
        guard digits() > 0 else { throw failure("a number needs digits") }
        if bytes[start..<index].drop(while: { $0 == UInt8(ascii: "-") }).count > 1,
            bytes[start..<index].drop(while: { $0 == UInt8(ascii: "-") }).first == UInt8(ascii: "0")
        {
            throw failure("a number must not have leading zeros")
        }
        if peek(UInt8(ascii: ".")) {
            index += 1
            guard digits() > 0 else { throw failure("a number needs digits after the decimal point") }
        }
        if peek(UInt8(ascii: "e")) || peek(UInt8(ascii: "E")) {
            index += 1
            if peek(UInt8(ascii: "+")) || peek(UInt8(ascii: "-")) { index += 1 }
            guard digits() > 0 else { throw failure("a number needs digits in its exponent") }
        }
        return .number(String(decoding: bytes[start..<index], as: UTF8.self))
    }

    private mutating func digits() -> Int {
        let start = index
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        return index - start
    }

    private mutating func literal(_ word: String, _ value: JSONNode) throws -> JSONNode {
        guard bytes[index...].starts(with: word.utf8) else {
            throw failure("unexpected word where a value was expected")
        }
        index += word.utf8.count
        return value
    }

    private mutating func enter() throws {
        depth += 1
        guard depth <= 128 else { throw failure("the document nests deeper than 128 levels") }
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    private func peek(_ byte: UInt8) -> Bool { index < bytes.count && bytes[index] == byte }

    private func describe(_ byte: UInt8) -> String {
        (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    /// An error naming the line and column (1-based, in characters) of the current position.
    private func failure(_ message: String) -> QueueError {
        let position = min(index, bytes.count)
        let before = bytes[..<position]
        let line = before.filter { $0 == 0x0A }.count + 1
        let lineStart = before.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
        let column = String(decoding: bytes[lineStart..<position], as: UTF8.self).count + 1
        return QueueError(
            .invalidInput, "not valid JSON at line \(line), column \(column): \(message)",
            hint: "Fix the file's syntax (a JSON linter such as `python3 -m json.tool FILE` shows the spot)."
        )
    }
}
