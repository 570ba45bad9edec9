import Foundation

/// A column's type, by the OID the server reports for it.
public struct PostgresType: Hashable, Sendable, CustomStringConvertible {
    public let oid: UInt32
    public init(oid: UInt32) { self.oid = oid }

    public static let bool = PostgresType(oid: 16)
    public static let bytea = PostgresType(oid: 17)
    public static let name = PostgresType(oid: 19)
    public static let int8 = PostgresType(oid: 20)
    public static let int2 = PostgresType(oid: 21)
    public static let int4 = PostgresType(oid: 23)
    public static let text = PostgresType(oid: 25)
    public static let oidType = PostgresType(oid: 26)
    public static let json = PostgresType(oid: 114)
    public static let float4 = PostgresType(oid: 700)
    public static let float8 = PostgresType(oid: 701)
    public static let unknown = PostgresType(oid: 705)
    public static let bpchar = PostgresType(oid: 1042)
    public static let varchar = PostgresType(oid: 1043)
    public static let date = PostgresType(oid: 1082)
    public static let timestamp = PostgresType(oid: 1114)
    public static let timestamptz = PostgresType(oid: 1184)
    public static let interval = PostgresType(oid: 1186)
    public static let numeric = PostgresType(oid: 1700)
    public static let uuid = PostgresType(oid: 2950)
    public static let jsonb = PostgresType(oid: 3802)

    public var description: String {
        switch self {
        case .bool: "bool"
        case .int2: "int2"
        case .int4: "int4"
        case .int8: "int8"
        case .text: "text"
        case .varchar: "varchar"
        case .float4: "float4"
        case .float8: "float8"
        case .numeric: "numeric"
        case .timestamptz: "timestamptz"
        case .timestamp: "timestamp"
        case .date: "date"
        case .json: "json"
        case .jsonb: "jsonb"
        case .uuid: "uuid"
        default: "type \(oid)"
        }
    }

    var isInteger: Bool { self == .int2 || self == .int4 || self == .int8 || self == .oidType }
}

/// A Swift type that can be decoded from a column in Postgres's text format.
public protocol PostgresDecodable: Sendable {
    /// - Throws: `PostgresError` with code `.decoding` when the column's type or text does not fit.
    init(postgresText: String, type: PostgresType) throws
}

extension PostgresDecodable {
    static func mismatch(_ text: String, _ type: PostgresType) -> PostgresError {
        PostgresError(.decoding, "cannot decode \(type) value \(text.prefix(40).debugDescription) as \(Self.self)")
    }
}

extension String: PostgresDecodable {
    /// Any column decodes as its text representation.
    public init(postgresText: String, type: PostgresType) throws { self = postgresText }
}

extension FixedWidthInteger where Self: PostgresDecodable {
    fileprivate init(integerText text: String, type: PostgresType) throws {
        guard type.isInteger || type == .text || type == .unknown, let value = Self(text) else {
            throw Self.mismatch(text, type)
        }
        self = value
    }
}

extension Int: PostgresDecodable {
    public init(postgresText: String, type: PostgresType) throws { try self.init(integerText: postgresText, type: type) }
}

extension Int16: PostgresDecodable {
    public init(postgresText: String, type: PostgresType) throws { try self.init(integerText: postgresText, type: type) }
}

extension Int32: PostgresDecodable {
    public init(postgresText: String, type: PostgresType) throws { try self.init(integerText: postgresText, type: type) }
}

extension Int64: PostgresDecodable {
    public init(postgresText: String, type: PostgresType) throws { try self.init(integerText: postgresText, type: type) }
}

extension Bool: PostgresDecodable {
    public init(postgresText: String, type: PostgresType) throws {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw Self.mismatch(postgresText, type)
        }
    }
}

extension Double: PostgresDecodable {
    /// float4, float8 and integers. Never `numeric`: decode that as `Decimal` so money stays exact.
    public init(postgresText: String, type: PostgresType) throws {
        guard type == .float8 || type == .float4 || type.isInteger, let value = Double(postgresText) else {
            throw Self.mismatch(postgresText, type)
        }
        self = value
    }
}

extension Decimal: PostgresDecodable {
    /// numeric and integers, exactly (up to `Decimal`'s 38 significant digits).
    public init(postgresText: String, type: PostgresType) throws {
        guard type == .numeric || type.isInteger || type == .text || type == .unknown,
            let value = Decimal(string: postgresText, locale: Locale(identifier: "en_US_POSIX")),
            !value.isNaN
        else {
            throw Self.mismatch(postgresText, type)
        }
        self = value
    }
}

extension UUID: PostgresDecodable {
    public init(postgresText: String, type: PostgresType) throws {
        guard let value = UUID(uuidString: postgresText) else { throw Self.mismatch(postgresText, type) }
        self = value
    }
}

extension Date: PostgresDecodable {
    /// timestamptz, timestamp (read as UTC) and date. `infinity` maps to `distantFuture`.
    public init(postgresText: String, type: PostgresType) throws {
        guard type == .timestamptz || type == .timestamp || type == .date,
            let value = PostgresTimestamp.parse(postgresText)
        else {
            throw Self.mismatch(postgresText, type)
        }
        self = value
    }
}
