/// One versioned schema change from `sql/NNNN_name.sql`.
public struct Migration: Sendable, Hashable {
    public let version: Int
    public let name: String
    public let sql: String

    /// A fingerprint of the SQL text, recorded when the migration is applied, so an applied
    /// migration that was later edited is noticed instead of silently diverging.
    public var checksum: String { StableHash.hex(sql) }

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// The migrations compiled into this binary, in version order.
    public static let all: [Migration] = EmbeddedMigrations.all
        .map { Migration(version: $0.version, name: $0.name, sql: $0.sql) }
        .sorted { $0.version < $1.version }
}
