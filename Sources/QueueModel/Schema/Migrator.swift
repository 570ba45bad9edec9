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
///
/// A migration waits for a table's lock at most `lockWait` per try: while an `ALTER TABLE` waits
/// behind a long transaction (a dashboard's, a `pg_dump`), every statement of the fleet on that
/// table queues behind it, and the workers stall. It lets go, pauses, and tries again, up to
/// `lockTries` times, then names the oldest open transactions.
public struct Migrator: Sendable {
    public let migrations: [Migration]
    /// How long one try of a migration waits for a lock.
    public var lockWait: Duration = .seconds(3)
    /// How many tries a migration gets before migrate gives up.
    public var lockTries = 20
    /// The pause between tries.
    public var lockPause: Duration = .seconds(2)
    /// Told about each try that timed out waiting for a lock.
    public var onLockWait: @Sendable (String) -> Void = { _ in }

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
            // Said, not waited out in silence: any session may hold an advisory lock (a review's
            // application role held this one, and migrate printed nothing until killed).
            if try await !connection.query("SELECT pg_try_advisory_lock($1)", [Self.lockKey]).scalar(Bool.self) {
                let holders = try await connection.query(
                    """
                    SELECT string_agg(format('pid %s (%s, %s)', a.pid, a.usename, coalesce(nullif(a.application_name, ''), 'no application name')), ', ')
                    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = ($1::bigint >> 32)::oid
                          AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1
                    """, [Self.lockKey]
                ).scalar(String?.self)
                onLockWait(
                    "waiting for the migration lock, held by \(holders ?? "another session"): another dispatcher migrate, "
                        + "or a session holding advisory lock \(Self.lockKey) (end it with pg_terminate_backend if it is not a migrate)")
                try await connection.query("SELECT pg_advisory_lock($1)", [Self.lockKey])
            }
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
            // Requests, tenants and answers are Unicode: on a LATIN1 database the third migration
            // failed, and on SQL_ASCII the submission checks could not read a character (a
            // review's no-break space passed them, and a hint cut one in half).
            let encoding = try await connection.query("SELECT current_setting('server_encoding')").scalar(String.self)
            guard encoding == "UTF8" else {
                throw QueueError(
                    .invalidInput,
                    "this database's encoding is \(encoding); Switchyard needs UTF8 (requests, tenants and answers are "
                        + "Unicode); nothing was applied",
                    hint: "Create a database for it with ENCODING 'UTF8' (CREATE DATABASE switchyard ENCODING 'UTF8' "
                        + "TEMPLATE template0) and migrate that one.")
            }
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
                    hint: "Run it as a superuser (it also creates Switchyard's roles), or as an operator's role with "
                        + "CREATE on the database (GRANT CREATE ON DATABASE … TO it), not as a worker's or an "
                        + "application's; later migrations need only membership in switchyard_admin.",
                    sqlState: error.sqlState)
            }
        }
        let status = try await status(on: connection)
        try Self.refuseMismatch(status)
        for (index, migration) in status.pending.enumerated() {
            var tries = 0
            while true {
                tries += 1
                do {
                    try await apply(migration, on: connection, earlierApplied: index > 0)
                    break
                } catch let error as QueueError
                    where (error.sqlState == .lockNotAvailable || error.sqlState == .deadlockDetected) && tries < lockTries
                {
                    // A deadlock with the fleet's statements (a claim holding one partition and
                    // asking for the table the migration locks: a review's upgrades saw claims
                    // chosen; the migration may be) rolled the whole migration back: tried again.
                    onLockWait(
                        "migration \(migration.version) (\(migration.name)) "
                            + (error.sqlState == .deadlockDetected
                                ? "deadlocked with another statement"
                                : "waited \(Arguments.format(lockWait)) for a lock")
                            + " (try \(tries) of \(lockTries)); letting the fleet's statements through, then trying again")
                    try await Task.sleep(for: lockPause)
                } catch let error as QueueError where error.sqlState == .lockNotAvailable {
                    throw QueueError(
                        .database,
                        "migration \(migration.version) (\(migration.name)) could not take its locks in "
                            + "\(lockTries) tries of \(Arguments.format(lockWait)); nothing of it was applied",
                        hint: "end the long transactions holding Switchyard's tables, then run migrate again. The "
                            + "oldest open now: " + (try await Self.oldestTransactions(on: connection)),
                        sqlState: error.sqlState)
                }
            }
        }
        return status.pending
    }

    /// What to do about a failure Postgres gives no hint for.
    private static func hint(for error: PostgresError, earlierApplied: Bool) -> String? {
        // The roles exist (another database of the server made them), and a migrating role that
        // is not a superuser becomes a member of switchyard_admin, which only a role with CREATEROLE
        // (or the ADMIN option on it) may grant, itself included. An operator's walkthrough ran
        // migrate with the workers' URL: told to grant switchyard_admin to "this role", it would
        // have made the fleet's login an admin.
        guard error.sqlState == .insufficientPrivilege, error.message.contains("switchyard_admin") else { return nil }
        return "Run migrate as an operator's role: the one that ran the first migrate, or another member of "
            + "switchyard_admin (not a worker's or an application's role: DATABASE_URL may be theirs). A role "
            + "becomes a member only through a superuser's GRANT switchyard_admin TO it, or by migrating with "
            + "CREATEROLE." + (earlierApplied ? " The migrations before this one are applied." : "")
    }

    /// One migration in its own transaction, waiting at most `lockWait` for each lock.
    private func apply(_ migration: Migration, on connection: PostgresConnection, earlierApplied: Bool) async throws {
        try await connection.withTransaction { connection in
            do {
                let milliseconds =
                    lockWait.components.seconds * 1000 + lockWait.components.attoseconds / 1_000_000_000_000_000
                try await connection.query(
                    "SELECT set_config('lock_timeout', $1, true)", ["\(max(milliseconds, 1))ms"])
                try await connection.execute(script: migration.sql)
            } catch let error as PostgresError {
                throw QueueError(
                    .database,
                    "migration \(migration.version) (\(migration.name)) failed: \(error.message)",
                    hint: error.hint ?? Self.hint(for: error, earlierApplied: earlierApplied)
                        ?? "Nothing of this migration was applied; fix the cause and run migrate again.",
                    sqlState: error.sqlState
                )
            }
            try await connection.query(
                "INSERT INTO switchyard.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                [migration.version, migration.name, migration.checksum]
            )
        }
    }

    /// The three oldest open transactions of other sessions on this database, for a person.
    static func oldestTransactions(on connection: PostgresConnection) async throws -> String {
        let rows = try await connection.query(
            """
            SELECT pid, coalesce(nullif(application_name, ''), usename::text, '?') AS who, state,
                   extract(epoch FROM now() - xact_start)::bigint AS age_s, left(query, 60) AS query
            FROM pg_catalog.pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
            ORDER BY xact_start LIMIT 3
            """
        )
        let sessions = try rows.map { row in
            "pid \(try row.decode("pid", as: Int.self)) (\(try row.decode("who", as: String.self)), "
                + "\(try row.decode("state", as: String?.self) ?? "?") for \(try row.decode("age_s", as: Int.self)) s: "
                + "\(try row.decode("query", as: String?.self) ?? "")"
        }
        return sessions.isEmpty ? "none (they have ended: run migrate again)" : sessions.joined(separator: "; ")
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
                // An older `dispatcher` says "up to date" at its own version (an upgrade's old
                // one first on PATH): the hint names the schema this release brings.
                hint: "Run `dispatcher migrate` of this release (schema \(migrations.last?.version ?? 0), "
                    + "`dispatcher --version`) against this database first."
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
