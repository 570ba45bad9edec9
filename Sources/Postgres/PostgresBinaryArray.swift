import Foundation

/// A one-dimensional array parameter in Postgres's binary format.
///
/// A batch of text or JSON sent as a text-format array (or as one JSON document) is quoted and
/// escaped here and lexed again by the server; in binary each element is a length and its bytes.
/// A `jsonb` element is its JSON text (the server still parses each document once, into jsonb).
/// Elements are appended in order; `nil` appends a NULL.
public struct PostgresBinaryArray: PostgresEncodable {
    /// The element types this can carry, with their array types.
    public enum Element: Sendable {
        case int8, int4, float8, text, jsonb, timestamptz

        var type: PostgresType {
            switch self {
            case .int8: .int8
            case .int4: .int4
            case .float8: .float8
            case .text: .text
            case .jsonb: .jsonb
            case .timestamptz: .timestamptz
            }
        }

        var arrayType: UInt32 {
            switch self {
            case .int8: 1016
            case .int4: 1007
            case .float8: 1022
            case .text: 1009
            case .jsonb: 3807
            case .timestamptz: 1185
            }
        }
    }

    public let element: Element
    /// Each element as its length (big-endian Int32, -1 for NULL) and bytes.
    private var elements: [UInt8] = []
    public private(set) var count = 0
    private var hasNull = false

    public init(of element: Element, capacity: Int = 0) {
        self.element = element
        elements.reserveCapacity(capacity * 12)
    }

    public mutating func append(_ value: Int64?) {
        precondition(element == .int8, "an Int64 in an array of \(element)")
        guard let value else { return appendNull() }
        appendLength(8)
        appendBigEndian(UInt64(bitPattern: value))
    }

    public mutating func append(_ value: Int32?) {
        precondition(element == .int4, "an Int32 in an array of \(element)")
        guard let value else { return appendNull() }
        appendLength(4)
        appendBigEndian(UInt32(bitPattern: value))
    }

    public mutating func append(_ value: Double?) {
        precondition(element == .float8, "a Double in an array of \(element)")
        guard let value else { return appendNull() }
        appendLength(8)
        appendBigEndian(value.bitPattern)
    }

    /// Appends a `text` element.
    public mutating func append(_ value: String?) {
        precondition(element == .text, "a String in an array of \(element)")
        guard let value else { return appendNull() }
        appendLength(value.utf8.count)
        elements.append(contentsOf: value.utf8)
    }

    /// Appends a `timestamptz` element (as the text form would: dates beyond it as infinity).
    public mutating func append(_ value: Date?) {
        precondition(element == .timestamptz, "a Date in an array of \(element)")
        guard let value else { return appendNull() }
        appendLength(8)
        appendBigEndian(UInt64(bitPattern: PostgresTimestamp.microsecondsSince2000(value)))
    }

    /// Appends a `jsonb` element written by `write` as JSON text (UTF-8), straight into the buffer.
    public mutating func appendJSON(_ write: (inout [UInt8]) -> Void) {
        precondition(element == .jsonb, "JSON in an array of \(element)")
        let start = elements.count
        appendLength(0)
        elements.append(1)  // jsonb's binary format version
        write(&elements)
        let length = UInt32(elements.count - start - 4)
        for offset in 0..<4 { elements[start + offset] = UInt8(truncatingIfNeeded: length >> (24 - 8 * offset)) }
    }

    public mutating func appendNull() {
        appendLength(-1)
        hasNull = true
    }

    private mutating func appendLength(_ length: Int) {
        appendBigEndian(UInt32(bitPattern: Int32(length)))
        count += 1
    }

    private mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        var bigEndian = value.bigEndian
        withUnsafeBytes(of: &bigEndian) { elements.append(contentsOf: $0) }
    }

    public var postgresBinary: PostgresBinaryValue? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(20 + elements.count)
        func int32(_ value: Int32) {
            var bigEndian = UInt32(bitPattern: value).bigEndian
            withUnsafeBytes(of: &bigEndian) { bytes.append(contentsOf: $0) }
        }
        int32(count == 0 ? 0 : 1)  // dimensions (an empty array has none)
        int32(hasNull ? 1 : 0)
        int32(Int32(bitPattern: element.type.oid))
        if count > 0 {
            int32(Int32(count))
            int32(1)  // lower bound
        }
        bytes.append(contentsOf: elements)
        return PostgresBinaryValue(type: element.arrayType, bytes: bytes)
    }

    /// The array literal, for the rare caller that needs text (the binary form is what is sent).
    public var postgresText: String {
        var text = "{"
        var position = 0
        func read(_ size: Int) -> UInt64 {
            var value: UInt64 = 0
            for _ in 0..<size {
                value = value << 8 | UInt64(elements[position])
                position += 1
            }
            return value
        }
        for index in 0..<count {
            if index > 0 { text += "," }
            let length = Int(Int32(bitPattern: UInt32(read(4))))
            guard length >= 0 else {
                text += "NULL"
                continue
            }
            let element: String
            switch self.element {
            case .int8: element = String(Int64(bitPattern: read(8)))
            case .int4: element = String(Int32(bitPattern: UInt32(read(4))))
            case .float8: element = Double(bitPattern: read(8)).postgresText
            case .timestamptz:
                let microseconds = Int64(bitPattern: read(8))
                element = microseconds == .max ? "infinity" : microseconds == .min ? "-infinity"
                    : PostgresTimestamp.date(microsecondsSince2000: microseconds).postgresText
            case .text, .jsonb:
                let skip = self.element == .jsonb ? 1 : 0
                element = String(decoding: elements[(position + skip)..<(position + length)], as: UTF8.self)
                position += length
            }
            text += "\"" + element.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                + "\""
        }
        return text + "}"
    }
}
