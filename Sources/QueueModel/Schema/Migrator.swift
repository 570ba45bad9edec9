import Foundation
import Postgres

/// What the database's schema looks like next to the migrations this binary carries.
public struct SchemaStatus: Sendable {
    /// A migration recorded in `switchyard.schema_migrations`.
    public struct Applied: Sendable, Hashable {
        public var version: Int
        public var name: String
        public var checksum: String
        public var appliedAt: Date
    }

    public var applied: [Applied]
    /// Known to this binary, not yet applied.
    public var pending: [Migration]
    /// Applied, but unknown to this binary: the database is newer than the binary.
    public var unknown: [Applied]
    /// Applied, but the SQL this binary carries for that version is different.
    public var modified: [Applied]

    /// True when the database has exactly this binary's migrations.
    public var isCurrent: Bool { pending.isEmpty && unknown.isEmpty && modified.isEmpty }
    /// The highest applied version, 0 for an empty database.
    public var version: Int { applied.map(\.version).max() ?? 0 }
}

/// Applies `sql/` migrations: each in its own transaction, recorded in
/// `switchyard.schema_migrations`, under an advisory lock so concurrent runs take turns.
public struct Migrator: Sendable {
    public let migrations: [Migration]

    /// The advisory lock every migrating process takes (the bytes of "SWYDMIGR").
    static let lockKey: Int64 = 0x5357_5944_4D49_4752

    public init(migrations: [Migration] = Migration.all) {
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// Brings the database up to this binary's latest migration.
    /// - Returns: the migrations applied by this call (empty when already current).
    /// - Throws: `QueueError.schemaMismatch` when the database has migrations this binary does
    ///   not know or that differ from its own, before changing anything.
    @discardableResult
    public func migrate(_ pool: PostgresPool) async throws -> [Migration] {
        try await pool.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock($1)", [Self.lockKey])
            do {
                let applied = try await apply(on: connection)
                try await connection.query("SELECT pg_advisory_unlock($1)", [Self.lockKey])
                return applied
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock($1)", [Self.lockKey])
                throw error
            }
        }
    }

    private func apply(on connection: PostgresConnection) async throws -> [Migration] {
        // Only the first migration creates the schema: CREATE SCHEMA, even IF NOT EXISTS, needs
        // CREATE on the database, which a member of switchyard_admin applying later ones lacks.
        let started = try await connection.query(
            "SELECT to_regclass('switchyard.schema_migrations') IS NOT NULL"
        ).scalar(Bool.self)
        if !started {
            do {
                try await connection.execute(
                    script: """
                        CREATE SCHEMA IF NOT EXISTS switchyard;
                        CREATE TABLE IF NOT EXISTS switchyard.schema_migrations (
                            version    integer     PRIMARY KEY,
                            name       text        NOT NULL,
                            checksum   text        NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now()
                        );
                        """
                )
            } catch let error as PostgresError where error.sqlState == .insufficientPrivilege {
                throw QueueError(
                    .database, "the first migration needs to create schema switchyard: \(error.message)",
                    hint: "Run it as a superuser (it also creates Switchyard's roles), or GRANT CREATE ON DATABASE "
                        + "to this role; later migrations need only membership in switchyard_admin.",
                    sqlState: error.sqlState)
            }
        }
        let status = try await status(on: connection)
        try Self.refuseMismatch(status)
        for migration in status.pending {
            try await connection.withTransaction { connection in
                do {
                    try await connection.execute(script: migration.sql)
                } catch let error as PostgresError {
                    throw QueueError(
                        .database,
                        "migration \(migration.version) (\(migration.name)) failed: \(error.message)",
                        hint: error.hint ?? "Nothing of this migration was applied; fix the cause and run migrate again.",
                        sqlState: error.sqlState
                    )
                }
                try await connection.query(
                    "INSERT INTO switchyard.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    [migration.version, migration.name, migration.checksum]
                )
            }
        }
        return status.pending
    }

    /// Compares the database with this binary's migrations without changing anything.
    public func status(_ pool: PostgresPool) async throws -> SchemaStatus {
        try await pool.withConnection { try await status(on: $0) }
    }

    /// Throws unless the database has exactly this binary's migrations; for processes that need
    /// the schema (workers) but must not change it.
    public func requireCurrent(_ pool: PostgresPool) async throws {
        let status = try await status(pool)
        try Self.refuseMismatch(status)
        if !status.pending.isEmpty {
            throw QueueError(
                .schemaBehind,
                "the database schema is at version \(status.version); this binary needs version "
                    + "\(migrations.last?.version ?? 0)",
                hint: "Run `dispatcher migrate` against this database first."
            )
        }
    }

    private func status(on connection: PostgresConnection) async throws -> SchemaStatus {
        let exists = try await connection.query(
            "SELECT to_regclass('switchyard.schema_migrations') IS NOT NULL"
        ).scalar(Bool.self)
        var applied: [SchemaStatus.Applied] = []
        if exists {
            let rows = try await connection.query(
                "SELECT version, name, checksum, applied_at FROM switchyard.schema_migrations ORDER BY version"
            )
            for row in rows {
                applied.append(
                    SchemaStatus.Applied(
                        version: try row.decode("version"), name: try row.decode("name"),
                        checksum: try row.decode("checksum"), appliedAt: try row.decode("applied_at")
                    )
                )
            }
        }
        let known = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0) })
        let appliedVersions = Set(applied.map(\.version))
        return SchemaStatus(
            applied: applied,
            pending: migrations.filter { !appliedVersions.contains($0.version) },
            unknown: applied.filter { known[$0.version] == nil },
            modified: applied.filter { record in known[record.version].map { $0.checksum != record.checksum } ?? false }
        )
    }

    private static func refuseMismatch(_ status: SchemaStatus) throws {
        if let newest = status.unknown.last {
            throw QueueError(
                .schemaMismatch,
                "the database has schema migration \(newest.version) (\(newest.name)), which this binary does not "
                    + "know: the database was migrated by a newer Switchyard",
                hint: "Run a Switchyard release that includes migration \(newest.version), or point DATABASE_URL at "
                    + "another database."
            )
        }
        if let changed = status.modified.first {
            throw QueueError(
                .schemaMismatch,
                "schema migration \(changed.version) (\(changed.name)) was applied with different SQL than this "
                    + "binary carries",
                hint: "Applied migrations must never be edited; add a new migration instead, and run the binary "
                    + "that applied it."
            )
        }
    }
}
