import Foundation
import Postgres
import QueueModel
import Synchronization
import Testing

@Suite("Schema migrations")
struct MigrationTests {
    @Test("migrate applies every migration once; a second run is a no-op")
    func migrateTwice() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            let first = try await Migrator().migrate(pool)
            #expect(first.map(\.version) == Migration.all.map(\.version))
            let second = try await Migrator().migrate(pool)
            #expect(second.isEmpty)
            let status = try await Migrator().status(pool)
            #expect(status.isCurrent)
            #expect(status.applied.count == Migration.all.count)
            // v1's shape: jobs partitioned by priority.
            let partitions = try await pool.query(
                """
                SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i
                JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'switchyard.jobs'::regclass
                """
            ).scalar(String.self)
            #expect(partitions == "jobs_background,jobs_interactive,jobs_unrouted")
            await pool.close()
        }
    }

    /// A walkthrough stored breaker_error_rate '30' and breaker_window_seconds '0' (any plain
    /// number was taken): 0058 sets such values back to their defaults, and keeps good ones.
    @Test("0058 sets a breaker rate over 1 and a window of 0 s back to their defaults")
    func breakerSettingsSetBack() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            let before = Migration.all.filter { $0.version < 58 }
            _ = try await Migrator(migrations: before).migrate(pool)
            try await pool.query("UPDATE switchyard.settings SET value = '30' WHERE name = 'breaker_error_rate'")
            try await pool.query("UPDATE switchyard.settings SET value = '0' WHERE name = 'breaker_window_seconds'")
            try await pool.query("UPDATE switchyard.settings SET value = '45' WHERE name = 'breaker_open_seconds'")
            _ = try await Migrator().migrate(pool)
            let values = Dictionary(uniqueKeysWithValues: try await pool.query(
                "SELECT name, value FROM switchyard.settings WHERE name LIKE 'breaker_%'"
            ).map { (try $0.decode("name", as: String.self), try $0.decode("value", as: String.self)) })
            #expect(values["breaker_error_rate"] == "0.02" && values["breaker_window_seconds"] == "60", "\(values)")
            #expect(values["breaker_open_seconds"] == "45")
            await pool.close()
        }
    }

    @Test("two concurrent migrates do not conflict")
    func concurrentMigrates() async throws {
        try await TestDatabase.withEmpty { configuration in
            let applied = try await withThrowingTaskGroup(of: [Migration].self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
                        defer { Task { await pool.close() } }
                        return try await Migrator().migrate(pool)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // One run applied everything, the other found nothing left to do.
            #expect(applied.map(\.count).sorted() == [0, Migration.all.count])
            let pool = PostgresPool(configuration)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.schema_migrations").scalar(Int.self)
                == Migration.all.count)
            await pool.close()
        }
    }

    @Test("a database migrated by a newer binary is refused, with a clear message, before any change")
    func refusesUnknownMigrations() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration)
            try await pool.query(
                "INSERT INTO switchyard.schema_migrations (version, name, checksum) VALUES (9999, 'from_the_future', 'x')"
            )
            let error = try await #require(throws: QueueError.self) { try await Migrator().migrate(pool) }
            #expect(error.code == .schemaMismatch)
            #expect(error.message.contains("9999"))
            #expect(error.message.contains("newer Switchyard"))
            await #expect(throws: QueueError.self) { try await Migrator().requireCurrent(pool) }
            await pool.close()
        }
    }

    @Test("every operator command refuses a database a newer Switchyard migrated, exit 1", arguments: [
        ["status"], ["report", "savings"], ["report", "--html", "-"], ["models", "prices"], ["models", "list"],
        ["models", "export"], ["background", "pause"], ["prune", "--older-than", "30d"],
    ])
    func operatorCommandsRefuseNewerSchema(_ command: [String]) async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration)
            defer { Task { await pool.close() } }
            try await pool.query(
                "INSERT INTO switchyard.schema_migrations (version, name, checksum) VALUES (9999, 'from_the_future', 'x')"
            )
            let binary = WorkerProcess.binary("dispatcher")
            let url = configuration.effectiveConnectionString
            let (status, output) = try await BlockingWork.run {
                try ChildProcess.run(binary, command + ["--database-url", url])
            }
            #expect(status == 1 && output.contains("newer Switchyard"), "\(command): exit \(status): \(output)")
        }
    }

    @Test("migrate --status on a newer or changed database lists each migration once, and says why it fails")
    func statusOfNewerSchema() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration)
            defer { Task { await pool.close() } }
            try await pool.query(
                "INSERT INTO switchyard.schema_migrations (version, name, checksum) VALUES (9999, 'from_the_future', 'x')")
            try await pool.query("UPDATE switchyard.schema_migrations SET checksum = 'edited' WHERE version = 10")
            let binary = WorkerProcess.binary("dispatcher")
            let url = configuration.effectiveConnectionString
            let (status, output) = try await BlockingWork.run {
                try ChildProcess.run(binary, ["migrate", "--status", "--database-url", url])
            }
            #expect(status == 1, "\(output)")
            #expect(output.components(separatedBy: " 9999 ").count == 2, "listed once: \(output)")
            #expect(output.components(separatedBy: " 0010 ").count == 2, "listed once: \(output)")
            #expect(output.contains("UNKNOWN  9999") && output.contains("CHANGED  0010"), "\(output)")
            #expect(output.contains("error: this binary cannot migrate this database: a newer Switchyard applied 9999; "
                + "applied 10 differ from this binary's"), "\(output)")
        }
    }

    @Test("an applied migration whose SQL changed is refused")
    func refusesEditedMigrations() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration)
            try await pool.query("UPDATE switchyard.schema_migrations SET checksum = 'edited' WHERE version = 1")
            let error = try await #require(throws: QueueError.self) { try await Migrator().migrate(pool) }
            #expect(error.code == .schemaMismatch)
            #expect(error.message.contains("different SQL"))
            await pool.close()
        }
    }

    /// A review's application role held the migration's advisory lock, and migrate printed
    /// nothing until it was killed.
    @Test("a migrate that waits for the migration lock says who holds it, and goes on once it is let go")
    func migrationLockHolderNamed() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await pool.close() } }
            let holder = try await PostgresConnection.connect(configuration)
            try await holder.query("SET application_name = 'stray-session'")
            try await holder.query("SELECT pg_advisory_lock(6005366778011141970)")
            var migrator = Migrator()
            let waits = Mutex<[String]>([])
            migrator.onLockWait = { message in waits.withLock { $0.append(message) } }
            let migrating = Task { [migrator] in try await migrator.migrate(pool) }
            try await waitUntil("migrate says what it waits for") { waits.withLock { !$0.isEmpty } }
            #expect(waits.withLock { $0 }.first?.contains("held by pid") == true, "\(waits.withLock { $0 })")
            #expect(waits.withLock { $0 }.first?.contains("stray-session") == true)
            try await holder.query("SELECT pg_advisory_unlock(6005366778011141970)")
            await holder.close()
            #expect(try await migrating.value.isEmpty)
        }
    }

    @Test("a migration waiting behind a long transaction lets the fleet through, retries, and names the holder")
    func migrationWaitsBriefly() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 3))
            try await Migrator(migrations: Array(Migration.all.prefix(28))).migrate(pool)
            // A dashboard's transaction that has read the jobs table and stays open.
            let holder = try await PostgresConnection.connect(configuration)
            try await holder.query("SET application_name = 'slow-dashboard'")
            try await holder.query("BEGIN")
            try await holder.query("SELECT count(*) FROM switchyard.jobs")
            var migrator = Migrator()  // 0029 alters switchyard.jobs
            migrator.lockWait = .milliseconds(200)
            migrator.lockTries = 3
            migrator.lockPause = .milliseconds(300)
            let waits = Mutex<[String]>([])
            migrator.onLockWait = { message in waits.withLock { $0.append(message) } }
            let migrating = Task { [migrator] in try await migrator.migrate(pool) }
            // Meanwhile the fleet's statements on the table go through (between tries at least):
            // each waits at most one try's lock wait, never the whole transaction.
            for _ in 0..<3 {
                try await pool.withConnection { connection in
                    try await connection.query("SET statement_timeout = '2s'")
                    try await connection.query("SELECT count(*) FROM switchyard.jobs")
                    try await connection.query("RESET statement_timeout")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            let error = await #expect(throws: QueueError.self) { try await migrating.value }
            #expect(error?.message.contains("29 (interactive_wait_through_postponement) could not take its locks in 3 tries") == true,
                    "\(String(describing: error))")
            #expect(error?.hint?.contains("slow-dashboard") == true, "\(String(describing: error?.hint))")
            #expect(waits.withLock { $0.count } == 2)
            #expect(try await Migrator().status(pool).version == 28, "nothing of 0029 was applied")
            // Once the transaction ends, migrate goes through.
            try await holder.query("COMMIT")
            await holder.close()
            try await Migrator().migrate(pool)
            #expect(try await Migrator().status(pool).isCurrent)
            await pool.close()
        }
    }

    /// A review's upgrades to sql/0088 saw claims deadlock with the migration's locks (the claims
    /// were chosen; the migration may be, and migrate failed then).
    @Test("a migration chosen as a deadlock's victim is tried again")
    func migrationDeadlockRetried() async throws {
        try await TestDatabase.withMigrated { configuration in
            // The migration is the victim: it looks for a deadlock 5 s into its wait, the other
            // session never. (With a second each, a loaded run's other session asked for dl_a over
            // a second after the migration began to wait: the migration's look found nothing, and
            // the other session's found the deadlock and was chosen.)
            let other = try await PostgresConnection.connect(configuration)
            defer { Task { await other.close() } }
            try await other.query(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET deadlock_timeout = ''5s''', current_database()); END $$")
            try await other.query("SET deadlock_timeout = '1h'")
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            try await pool.query("CREATE TABLE public.dl_a (x int)")
            try await pool.query("CREATE TABLE public.dl_b (x int)")
            try await other.query("BEGIN")
            try await other.query("LOCK TABLE public.dl_b IN ACCESS EXCLUSIVE MODE")
            var migrator = Migrator(migrations: Migration.all + [
                Migration(version: 9000, name: "crossing", sql: """
                    LOCK TABLE public.dl_a IN ACCESS EXCLUSIVE MODE;
                    LOCK TABLE public.dl_b IN ACCESS EXCLUSIVE MODE;
                    """)
            ])
            migrator.lockWait = .seconds(30)
            migrator.lockPause = .milliseconds(100)
            let waits = Mutex<[String]>([])
            migrator.onLockWait = { message in waits.withLock { $0.append(message) } }
            let migrating = Task { [migrator] in try await migrator.migrate(pool) }
            // The migration holds dl_a and waits for dl_b; then the other session asks for dl_a.
            try await waitUntil("the migration waits for dl_b") {
                try await pool.query(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'public.dl_b'::regclass AND NOT granted"
                ).scalar(Int.self) == 1
            }
            try await other.query("LOCK TABLE public.dl_a IN ACCESS EXCLUSIVE MODE")
            try await other.query("COMMIT")
            #expect(try await migrating.value.map(\.version) == [9000])
            #expect(waits.withLock { $0 }.first?.contains("9000 (crossing) deadlocked with another statement") == true,
                    "\(waits.withLock { $0 })")
        }
    }

    /// A review's LATIN1 database failed at the third migration, and a SQL_ASCII one migrated, but
    /// its submission checks could not read a no-break space.
    @Test("a database that is not UTF8 is refused before anything is applied, saying how to make one")
    func refusesOtherEncodings() async throws {
        try await TestDatabase.withEmpty { configuration in
            let admin = try await PostgresConnection.connect(configuration.withDatabase("postgres"))
            let name = "switchyard_ascii_\(UUID().uuidString.prefix(8).lowercased())"
            try await admin.query("CREATE DATABASE \(name) ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
            let pool = PostgresPool(configuration.withDatabase(name))
            let error = try await #require(throws: QueueError.self) { try await Migrator().migrate(pool) }
            #expect(error.message == "this database's encoding is SQL_ASCII; Switchyard needs UTF8 (requests, tenants and "
                + "answers are Unicode); nothing was applied")
            #expect(error.hint?.contains("ENCODING 'UTF8'") == true)
            #expect(try await pool.query("SELECT to_regnamespace('switchyard') IS NULL").scalar(Bool.self))
            await pool.close()
            try await admin.query("DROP DATABASE \(name) WITH (FORCE)")
            await admin.close()
        }
    }

    @Test("a failing migration leaves nothing behind and names itself")
    func failingMigrationRollsBack() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            let broken = Migrator(migrations: Migration.all + [
                Migration(version: 9000, name: "broken", sql: "CREATE TABLE switchyard.half (id int); SELECT 1/0;")
            ])
            let error = try await #require(throws: QueueError.self) { try await broken.migrate(pool) }
            #expect(error.message.contains("9000 (broken)"))
            #expect(error.message.contains("division by zero"))
            #expect(try await pool.query("SELECT to_regclass('switchyard.half') IS NULL").scalar(Bool.self))
            let status = try await broken.status(pool)
            #expect(status.pending.map(\.version) == [9000])
            // A worker built with the broken migration refuses to start on this database.
            let behind = try await #require(throws: QueueError.self) { try await broken.requireCurrent(pool) }
            #expect(behind.code == .schemaBehind)
            #expect(behind.hint?.contains("dispatcher migrate") == true)
            await pool.close()
        }
    }
}
