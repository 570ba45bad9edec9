import Foundation

/// JSON text in and out, written for `JSONValue` directly.
///
/// Every job's request is parsed when it is claimed and every result is written as JSON, so this
/// is on the worker's hot path; Foundation's `JSONEncoder`/`JSONDecoder` went through `Codable`'s
/// generic containers and took a fifth of a worker's CPU. The output is compact with sorted keys
/// (equal values print equally) except where it is bound for `jsonb`, which orders keys itself;
/// the parser follows RFC 8259 and reports where it failed.
extension JSONValue {
    // MARK: Writing

    /// Appends the value's compact JSON text, as UTF-8 (appending to bytes is several times
    /// cheaper than appending to a `String`).
    /// - Parameter storable: bound for `jsonb`: write U+0000 as U+FFFD, the replacement character
    ///   (Postgres refuses `\u0000`, and an answer must not be refused for one stray byte), and
    ///   leave object keys unsorted (`jsonb` orders them itself).
    func write(into output: inout [UInt8], storable: Bool = false) {
        switch self {
        case .null: output.append(contentsOf: Self.nullBytes)
        case .bool(let value): output.append(contentsOf: value ? Self.trueBytes : Self.falseBytes)
        case .number(let value): Self.writeNumber(value, into: &output)
        case .exactNumber(let text): output.append(contentsOf: text.utf8)
        case .string(let value): Self.writeString(value, into: &output, storable: storable)
        case .array(let elements):
            output.append(0x5B)
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(0x2C) }
                element.write(into: &output, storable: storable)
            }
            output.append(0x5D)
        case .object(let members):
            output.append(0x7B)
            if storable || members.count < 2 {
                // Postgres orders a jsonb object's keys itself: no need to sort them here.
                var first = true
                for (key, value) in members {
                    if !first { output.append(0x2C) }
                    first = false
                    Self.writeString(key, into: &output, storable: storable)
                    output.append(0x3A)
                    value.write(into: &output, storable: storable)
                }
            } else {
                for (index, key) in members.keys.sorted().enumerated() {
                    if index > 0 { output.append(0x2C) }
                    Self.writeString(key, into: &output, storable: storable)
                    output.append(0x3A)
                    members[key]!.write(into: &output, storable: storable)
                }
            }
            output.append(0x7D)
        }
    }

    /// Appends the value's JSON text indented two spaces a level, keys sorted (as `jq` prints).
    func writePretty(into output: inout [UInt8], depth: Int) {
        func newline(_ depth: Int) {
            output.append(0x0A)
            output.append(contentsOf: repeatElement(0x20, count: 2 * depth))
        }
        switch self {
        case .array(let elements) where !elements.isEmpty:
            output.append(0x5B)
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(0x2C) }
                newline(depth + 1)
                element.writePretty(into: &output, depth: depth + 1)
            }
            newline(depth)
            output.append(0x5D)
        case .object(let members) where !members.isEmpty:
            output.append(0x7B)
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { output.append(0x2C) }
                newline(depth + 1)
                Self.writeString(key, into: &output)
                output.append(contentsOf: [0x3A, 0x20])
                members[key]!.writePretty(into: &output, depth: depth + 1)
            }
            newline(depth)
            output.append(0x7D)
        default:
            write(into: &output)
        }
    }

    private static let nullBytes = Array("null".utf8)
    private static let trueBytes = Array("true".utf8)
    private static let falseBytes = Array("false".utf8)
    private static let hexDigits = Array("0123456789abcdef".utf8)

    static func writeNumber(_ value: Double, into output: inout [UInt8]) {
        if value.rounded() == value, abs(value) < 9_007_199_254_740_992 {
            output.append(contentsOf: String(Int64(value)).utf8)
        } else if value.isFinite {
            output.append(contentsOf: plainDecimal("\(value)").utf8)
        } else {
            output.append(contentsOf: nullBytes)  // JSON has no NaN or infinity
        }
    }

    /// Swift's shortest round-trip text of a `Double`, with an exponent written out for the
    /// magnitudes people read (a cost of `4.375e-05` dollars is `0.00004375`); very large or very
    /// small numbers keep their exponent. The digits, and so the value, are the same.
    static func plainDecimal(_ text: String) -> String {
        guard let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }),
            let exponent = Int(text[text.index(after: e)...]), (-12...20).contains(exponent)
        else { return text }
        var mantissa = text[..<e]
        let negative = mantissa.hasPrefix("-")
        if negative { mantissa = mantissa.dropFirst() }
        let point = mantissa.firstIndex(of: ".")
        let whole = point.map { mantissa[..<$0] } ?? mantissa
        let fraction = point.map { mantissa[mantissa.index(after: $0)...] } ?? ""
        let digits = String(whole + fraction)
        // The decimal point's place in `digits`, after moving it by the exponent.
        let place = whole.count + exponent
        var plain: String
        if place <= 0 {
            plain = "0." + String(repeating: "0", count: -place) + digits
        } else if place >= digits.count {
            plain = digits + String(repeating: "0", count: place - digits.count)
        } else {
            plain = String(digits.prefix(place)) + "." + String(digits.dropFirst(place))
        }
        // Trailing zeros after a point, and a point left bare, carry nothing.
        if plain.contains(".") {
            while plain.hasSuffix("0") { plain.removeLast() }
            if plain.hasSuffix(".") { plain.removeLast() }
        }
        return (negative ? "-" : "") + plain
    }

    static func writeString(_ value: String, into output: inout [UInt8], storable: Bool = false) {
        output.append(0x22)
        // Most strings need no escaping: copied whole.
        let copied = value.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else { return false }
            output.append(contentsOf: bytes)
            return true
        }
        if copied == true {
            output.append(0x22)
            return
        }
        for byte in value.utf8 {
            switch byte {
            case 0x22: output.append(0x5C); output.append(0x22)
            case 0x5C: output.append(0x5C); output.append(0x5C)
            case 0x0A: output.append(0x5C); output.append(0x6E)
            case 0x0D: output.append(0x5C); output.append(0x72)
            case 0x09: output.append(0x5C); output.append(0x74)
            case 0x00 where storable: output.append(contentsOf: [0xEF, 0xBF, 0xBD])
            case 0..<0x20:
                output.append(contentsOf: [0x5C, 0x75, 0x30, 0x30, hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0xF)]])
            default: output.append(byte)
            }
        }
        output.append(0x22)
    }

    // MARK: Parsing

    /// Parses JSON text from UTF-8 bytes.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.failure("unexpected text after the JSON value") }
        return value
    }
}

/// One step of a path into a JSON document: a member of an object, or an element of an array.
public enum JSONPathStep: Sendable, Hashable {
    case key(String)
    case index(Int)
}

extension JSONValue {
    /// The text of the value at `path` in `data` as written (whitespace between tokens left out),
    /// or nil when the document is not valid up to it or has nothing there. For numbers a
    /// `Double` cannot hold exactly (a tool call's 64-bit id, `1234567890123456789`): parsed and
    /// written again, they came back as `1.2345678901234568e+18`. The first of repeated member
    /// names is taken.
    public static func rawText(in data: Data, at path: [JSONPathStep]) -> String? {
        data.withUnsafeBytes { raw -> String? in
            var parser = JSONParser(bytes: raw.bindMemory(to: UInt8.self))
            return try? parser.rawText(at: path)
        }
    }
}

extension JSONParser {
    /// See `JSONValue.rawText(in:at:)`; throws on a document not valid up to the value.
    mutating func rawText(at path: [JSONPathStep]) throws -> String? {
        skipWhitespace()
        for step in path {
            guard position < bytes.count else { return nil }
            switch step {
            case .key(let wanted):
                guard bytes[position] == 0x7B else { return nil }
                position += 1
                var found = false
                while !found {
                    skipWhitespace()
                    guard position < bytes.count, bytes[position] == 0x22 else { return nil }  // `}` too: not there
                    let key = try string()
                    skipWhitespace()
                    guard position < bytes.count, bytes[position] == 0x3A else { throw failure("expected ':'") }
                    position += 1
                    skipWhitespace()
                    if key == wanted {
                        found = true
                    } else {
                        _ = try value(depth: 1)
                        skipWhitespace()
                        guard position < bytes.count, bytes[position] == 0x2C else { return nil }
                        position += 1
                    }
                }
            case .index(let wanted):
                guard bytes[position] == 0x5B, wanted >= 0 else { return nil }
                position += 1
                for _ in 0..<wanted {
                    skipWhitespace()
                    _ = try value(depth: 1)
                    skipWhitespace()
                    guard position < bytes.count, bytes[position] == 0x2C else { return nil }
                    position += 1
                }
                skipWhitespace()
                guard position < bytes.count, bytes[position] != 0x5D else { return nil }
            }
        }
        let start = position
        _ = try value(depth: 0)
        // Compact: whitespace outside strings dropped (the value is valid JSON, checked above).
        var compact: [UInt8] = []
        compact.reserveCapacity(position - start)
        var inString = false
        var escaped = false
        for byte in bytes[start..<position] {
            if inString {
                if escaped { escaped = false } else if byte == 0x5C { escaped = true } else if byte == 0x22 { inString = false }
            } else if byte == 0x22 {
                inString = true
            } else if byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
                continue
            }
            compact.append(byte)
        }
        return String(decoding: compact, as: UTF8.self)
    }
}

/// A recursive-descent JSON parser over UTF-8 bytes.
struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var position = 0
    /// Deeper documents are refused rather than risking the stack.
    static let maximumDepth = 512

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    func failure(_ reason: String) -> QueueError {
        QueueError(.invalidInput, "not valid JSON: \(reason) at byte \(position + 1)")
    }

    mutating func skipWhitespace() {
        while position < bytes.count {
            let byte = bytes[position]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            position += 1
        }
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < Self.maximumDepth else { throw failure("nested deeper than \(Self.maximumDepth) levels") }
        guard position < bytes.count else { throw failure("unexpected end of input") }
        switch bytes[position] {
        case 0x7B: return try object(depth: depth)
        case 0x5B: return try array(depth: depth)
        case 0x22: return .string(try string())
        case 0x74: try literal("true"); return .bool(true)
        case 0x66: try literal("false"); return .bool(false)
        case 0x6E: try literal("null"); return .null
        case 0x2D, 0x30...0x39: return try number()
        default: throw failure("unexpected character")
        }
    }

    mutating func literal(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw failure("unexpected end of input") }
        for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] {
            throw failure("unexpected character")
        }
        position += count
    }

    mutating func object(depth: Int) throws -> JSONValue {
        position += 1
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if position < bytes.count && bytes[position] == 0x7D {
            position += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == 0x22 else { throw failure("expected a string key") }
            let key = try string()
            skipWhitespace()
            guard position < bytes.count, bytes[position] == 0x3A else { throw failure("expected ':'") }
            position += 1
            skipWhitespace()
            members[key] = try value(depth: depth + 1)
            skipWhitespace()
            guard position < bytes.count else { throw failure("unexpected end of input") }
            if bytes[position] == 0x2C {
                position += 1
                continue
            }
            guard bytes[position] == 0x7D else { throw failure("expected ',' or '}'") }
            position += 1
            return .object(members)
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if position < bytes.count && bytes[position] == 0x5D {
            position += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try value(depth: depth + 1))
            skipWhitespace()
            guard position < bytes.count else { throw failure("unexpected end of input") }
            if bytes[position] == 0x2C {
                position += 1
                continue
            }
            guard bytes[position] == 0x5D else { throw failure("expected ',' or ']'") }
            position += 1
            return .array(elements)
        }
    }

    mutating func number() throws -> JSONValue {
        let start = position
        if bytes[position] == 0x2D { position += 1 }
        var digits = 0
        // Significant digits: from the first that is not a zero to the last, in the whole part and
        // the fraction. Up to 15, a Double keeps the value (written back with the same digits).
        var run = 0
        var significant = 0
        while position < bytes.count, (0x30...0x39).contains(bytes[position]) {
            if run > 0 || bytes[position] != 0x30 { run += 1 }
            if bytes[position] != 0x30 { significant = run }
            position += 1
            digits += 1
        }
        guard digits > 0 else { throw failure("expected a digit") }
        if position < bytes.count, bytes[position] == 0x2E {
            position += 1
            var fraction = 0
            while position < bytes.count, (0x30...0x39).contains(bytes[position]) {
                if run > 0 || bytes[position] != 0x30 { run += 1 }
                if bytes[position] != 0x30 { significant = run }
                position += 1
                fraction += 1
            }
            guard fraction > 0 else { throw failure("expected a digit after '.'") }
        }
        if position < bytes.count, bytes[position] == 0x65 || bytes[position] == 0x45 {
            position += 1
            if position < bytes.count, bytes[position] == 0x2B || bytes[position] == 0x2D { position += 1 }
            var exponent = 0
            while position < bytes.count, (0x30...0x39).contains(bytes[position]) {
                position += 1
                exponent += 1
            }
            guard exponent > 0 else { throw failure("expected a digit in the exponent") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        // Double("1e999999") is infinity, which JSON cannot write back: stored, it became null.
        guard let value = Double(text), value.isFinite else {
            // Valid JSON (`jsonb` keeps it), but past what a worker reads: "not valid JSON" said
            // the wrong thing.
            throw QueueError(
                .invalidInput, "not JSON this program can read: a number past ±1.8e308 at byte \(start + 1) "
                    + "(\(text.prefix(40))), more than a 64-bit float holds",
                hint: "write a smaller number, or send it as a string")
        }
        return significant > 15 ? .exactNumber(text) : .number(value)
    }

    mutating func string() throws -> String {
        position += 1  // the opening quote
        let start = position
        // Fast path: no escapes.
        while position < bytes.count {
            let byte = bytes[position]
            if byte == 0x22 {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<position])
                position += 1
                guard let text = String(validating: slice, as: UTF8.self) else {
                    throw failure("a string that is not valid UTF-8")
                }
                return text
            }
            if byte == 0x5C { break }
            guard byte >= 0x20 else { throw failure("a control character in a string") }
            position += 1
        }
        var scalars = Array(UnsafeBufferPointer(rebasing: bytes[start..<position]))
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            switch byte {
            case 0x22:
                guard let text = String(validating: scalars, as: UTF8.self) else {
                    throw failure("a string that is not valid UTF-8")
                }
                return text
            case 0x5C:
                guard position < bytes.count else { throw failure("unexpected end of input") }
                let escape = bytes[position]
                position += 1
                switch escape {
                case 0x22: scalars.append(0x22)
                case 0x5C: scalars.append(0x5C)
                case 0x2F: scalars.append(0x2F)
                case 0x62: scalars.append(0x08)
                case 0x66: scalars.append(0x0C)
                case 0x6E: scalars.append(0x0A)
                case 0x72: scalars.append(0x0D)
                case 0x74: scalars.append(0x09)
                case 0x75:
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        guard position + 1 < bytes.count, bytes[position] == 0x5C, bytes[position + 1] == 0x75 else {
                            throw failure("an unpaired surrogate")
                        }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw failure("an unpaired surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw failure("an unpaired surrogate")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw failure("an invalid \\u escape") }
                    scalars.append(contentsOf: String(scalar).utf8)
                default: throw failure("an invalid escape")
                }
            default:
                guard byte >= 0x20 else { throw failure("a control character in a string") }
                scalars.append(byte)
            }
        }
        throw failure("an unterminated string")
    }

    mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw failure("unexpected end of input") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            position += 1
            let digit: UInt8
            switch byte {
            case 0x30...0x39: digit = byte - 0x30
            case 0x61...0x66: digit = byte - 0x61 + 10
            case 0x41...0x46: digit = byte - 0x41 + 10
            default: throw failure("an invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
