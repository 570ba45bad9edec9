import Foundation

/// A JSON document as a Swift value: what requests, responses, settings and trails are made of.
///
/// `Sendable` and `Hashable`, unlike `[String: Any]`, so it can cross tasks and be compared in
/// tests. Numbers are `Double`s (exact for integers up to 2^53, plenty for token counts), but for
/// one parsed with more significant digits than a `Double` keeps, which is kept as written
/// (`exactNumber`).
public enum JSONValue: Sendable, Hashable, Codable, CustomStringConvertible, ExpressibleByDictionaryLiteral,
    ExpressibleByArrayLiteral, ExpressibleByStringLiteral, ExpressibleByFloatLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral, ExpressibleByNilLiteral
{
    case null
    case bool(Bool)
    case number(Double)
    /// A number parsed with more than 15 significant digits (`9007199254740993`, an order id; a
    /// price to 30 places), kept as its text: as a `Double` the CLI stored and printed
    /// `9007199254740992.0` for it, without a word. Written back as it came; `doubleValue` and
    /// `intValue` read it.
    case exactNumber(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    // MARK: Parsing and printing

    /// Parses a JSON document (any value at the top level).
    /// - Throws: `QueueError.invalidInput` saying where the text stops being JSON.
    public init(parsing data: Data) throws {
        self = try data.withUnsafeBytes { raw in
            try JSONValue.parse(raw.bindMemory(to: UInt8.self))
        }
    }

    /// Parses a JSON document from text.
    public init(parsing text: String) throws {
        var text = text
        self = try text.withUTF8 { try JSONValue.parse($0) }
    }

    /// Compact JSON text with sorted keys (stable, so equal values print equally).
    public var jsonText: String {
        var output: [UInt8] = []
        output.reserveCapacity(256)
        write(into: &output)
        return String(decoding: output, as: UTF8.self)
    }

    /// Indented JSON text with sorted keys, for people.
    public var prettyText: String {
        var output: [UInt8] = []
        output.reserveCapacity(1024)
        writePretty(into: &output, depth: 0)
        return String(decoding: output, as: UTF8.self)
    }

    public var description: String { jsonText }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 9_007_199_254_740_992 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
        case .exactNumber(let text):
            if let whole = Int64(text) {
                try container.encode(whole)
            } else if let decimal = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")) {
                try container.encode(decimal)
            } else {
                try container.encode(Double(text) ?? 0)
            }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    // MARK: Access

    /// The member of an object, or nil.
    public subscript(key: String) -> JSONValue? {
        get { if case .object(let members) = self { members[key] } else { nil } }
        set {
            guard case .object(var members) = self else { return }
            members[key] = newValue
            self = .object(members)
        }
    }

    /// The element of an array, or nil when out of range.
    public subscript(index: Int) -> JSONValue? {
        if case .array(let elements) = self, elements.indices.contains(index) { elements[index] } else { nil }
    }

    public var stringValue: String? { if case .string(let value) = self { value } else { nil } }
    public var doubleValue: Double? {
        switch self {
        case .number(let value): value
        case .exactNumber(let text): Double(text)
        default: nil
        }
    }
    public var boolValue: Bool? { if case .bool(let value) = self { value } else { nil } }
    public var arrayValue: [JSONValue]? { if case .array(let value) = self { value } else { nil } }
    public var objectValue: [String: JSONValue]? { if case .object(let value) = self { value } else { nil } }
    public var isNull: Bool { self == .null }

    /// The number as an integer, when it is one.
    public var intValue: Int? {
        if case .exactNumber(let text) = self {
            // Whole with a fraction of zeros (`9007199254740993.0`); an exponent form is left out.
            let whole = text.firstIndex(of: ".").flatMap { point in
                text[text.index(after: point)...].allSatisfy { $0 == "0" } ? text[..<point] : nil
            }
            return Int(whole ?? Substring(text))
        }
        guard case .number(let value) = self, value.rounded() == value, abs(value) < 9.2e18 else { return nil }
        return Int(value)
    }

    /// The JSON type's name, for error messages ("expected a string, got an array").
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number, .exactNumber: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    // MARK: Literals

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
}

extension JSONValue {
    /// A decimal (a price, a cost) as a JSON number written with its own digits: `0.058292`, where
    /// going through `NSDecimalNumber.doubleValue` gives `0.05829199999999999`.
    public static func number(_ value: Decimal) -> JSONValue {
        .number(Double(value.description) ?? NSDecimalNumber(decimal: value).doubleValue)
    }
}
