import Foundation

/// A Swift value that can be sent as a bind parameter (`$1`, `$2`, …).
///
/// Parameters travel in Postgres's text format with an unspecified type, so the server infers the
/// type from the statement; add a cast (`$1::jsonb`) where the statement leaves it ambiguous. A
/// value with a `postgresBinary` form (`PostgresBinaryArray`) travels in binary with its type.
/// Values are never spliced into SQL text.
public protocol PostgresEncodable: Sendable {
    /// The value in Postgres's text input format.
    var postgresText: String { get }
    /// The value in Postgres's binary format with its type, when it is sent that way (nil, the
    /// default: it is sent as `postgresText`).
    var postgresBinary: PostgresBinaryValue? { get }
}

extension PostgresEncodable {
    public var postgresBinary: PostgresBinaryValue? { nil }
}

/// A parameter in binary format: its type's OID (the server needs it: binary is not inferred)
/// and its bytes.
public struct PostgresBinaryValue: Sendable {
    public var type: UInt32
    public var bytes: [UInt8]
}

extension String: PostgresEncodable {
    public var postgresText: String { self }
}

extension Substring: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Int: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Int16: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Int32: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Int64: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Bool: PostgresEncodable {
    public var postgresText: String { self ? "true" : "false" }
}

extension Double: PostgresEncodable {
    public var postgresText: String {
        if isNaN { return "NaN" }
        if isInfinite { return self < 0 ? "-Infinity" : "Infinity" }
        return String(self)
    }
}

extension Decimal: PostgresEncodable {
    // `Decimal.description` always uses "." whatever the locale.
    public var postgresText: String { description }
}

extension UUID: PostgresEncodable {
    public var postgresText: String { uuidString }
}

extension Date: PostgresEncodable {
    /// ISO 8601 in UTC with microseconds, Postgres's own precision.
    public var postgresText: String { PostgresTimestamp.format(self) }
}

extension Array: PostgresEncodable where Element: PostgresEncodable {
    /// An array literal, `{"a","b"}`, every element quoted and escaped.
    public var postgresText: String {
        var text = "{"
        for (index, element) in enumerated() {
            if index > 0 { text += "," }
            text += "\""
            for character in element.postgresText {
                if character == "\"" || character == "\\" { text.append("\\") }
                text.append(character)
            }
            text += "\""
        }
        return text + "}"
    }
}

/// A JSON document, sent and received as `json`/`jsonb` text.
public struct PostgresJSON: PostgresEncodable, PostgresDecodable, Hashable, CustomStringConvertible {
    /// The document's text.
    public var text: String

    public init(text: String) { self.text = text }

    /// Encodes a value with `JSONEncoder`.
    public init<T: Encodable>(encoding value: T, encoder: JSONEncoder = JSONEncoder()) throws {
        self.text = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Decodes the document with `JSONDecoder`.
    public func decode<T: Decodable>(_ type: T.Type, decoder: JSONDecoder = JSONDecoder()) throws -> T {
        try decoder.decode(type, from: Data(text.utf8))
    }

    /// The document parsed with `JSONSerialization` (dictionaries, arrays, numbers, strings, NSNull).
    public func object() throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
    }

    public var postgresText: String { text }
    public var description: String { text }

    public init(postgresText: String, type: PostgresType) throws {
        guard type == .json || type == .jsonb || type == .text || type == .unknown else {
            throw PostgresError(.decoding, "cannot decode a \(type) column as JSON")
        }
        self.text = postgresText
    }
}
