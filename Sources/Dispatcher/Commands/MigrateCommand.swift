import Foundation
import Postgres
import QueueModel

/// `dispatcher migrate [--status]`.
enum MigrateCommand {
    static let usage = """
        usage: dispatcher migrate [--status] [--database-url URL]

        Applies the schema migrations this binary carries, each in its own transaction. Safe to run
        twice, and from several machines at once (an advisory lock makes them take turns). Refuses a
        database migrated by a newer Switchyard. A migration waits at most 3 s for a table's lock (a
        long transaction elsewhere), then lets the fleet's statements through and tries again, up to
        20 times, saying so on stderr.

        The first run on a server creates the roles switchyard_submitter, switchyard_worker and
        switchyard_admin (shared by every database of the server), so it needs a superuser or a role
        with CREATEROLE; later runs need a member of switchyard_admin. See docs/security.md.

          --status   show applied and pending migrations; change nothing. Exit 0 up to date, 3
                     migrations pending, 1 a database this binary cannot migrate (newer or changed)
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher migrate", options: ["database-url"], flags: ["status"], takesWords: false)
        if arguments.flag("help") {
            print(usage)
            return 0
        }
        var configuration = try Database.configuration(arguments, applicationName: "switchyard-migrate")
        // What a migration finds wrong in stored data and cannot fix itself is the operator's to read.
        configuration.noticeHandler = { notice in
            if notice.severity == "WARNING" { printError("warning: \(notice.message)") }
        }
        let pool = PostgresPool(configuration, options: Database.commandOptions(maxConnections: 1))
        defer { Task { await pool.close() } }
        var migrator = Migrator()
        migrator.onLockWait = { printError($0) }
        if arguments.flag("status") {
            let status = try await migrator.status(pool)
            print(SchemaReport.render(status))
            // 3 says "run migrate"; a database this binary cannot migrate (newer, or changed) is a
            // failure, since migrate would refuse it: said on stderr too, for a script's log.
            if !status.unknown.isEmpty || !status.modified.isEmpty {
                func versions(_ list: [SchemaStatus.Applied]) -> String {
                    list.map { String($0.version) }.joined(separator: ", ")
                }
                let reasons = [
                    status.unknown.isEmpty ? nil : "a newer Switchyard applied \(versions(status.unknown))",
                    status.modified.isEmpty ? nil : "applied \(versions(status.modified)) differ from this binary's",
                ].compactMap { $0 }
                printError(
                    "error: this binary cannot migrate this database: \(reasons.joined(separator: "; "))"
                        + "\nhint: run the release that applied them (dispatcher --version says which schema a binary has)")
                return 1
            }
            return status.isCurrent ? 0 : 3
        }
        let applied = try await migrator.migrate(pool)
        if applied.isEmpty {
            print("schema is up to date (version \(migrator.migrations.last?.version ?? 0))")
        } else {
            for migration in applied { print("applied \(migration.version) \(migration.name)") }
        }
        return 0
    }
}

/// Renders a schema status for people.
enum SchemaReport {
    static func render(_ status: SchemaStatus) -> String {
        var lines: [String] = []
        // A newer or changed migration is listed once, as what it is (it was listed as applied too).
        let apart = Set(status.unknown.map(\.version) + status.modified.map(\.version))
        for applied in status.applied where !apart.contains(applied.version) {
            lines.append("  applied  \(pad(applied.version))  \(applied.name)  (\(applied.appliedAt.formatted(.iso8601)))")
        }
        for pending in status.pending { lines.append("  pending  \(pad(pending.version))  \(pending.name)") }
        for unknown in status.unknown { lines.append("  UNKNOWN  \(pad(unknown.version))  \(unknown.name)  (newer than this binary)") }
        for modified in status.modified { lines.append("  CHANGED  \(pad(modified.version))  \(modified.name)  (differs from this binary)") }
        let summary = status.isCurrent
            ? "schema version \(status.version): up to date"
            : "schema version \(status.version): \(status.pending.count) pending, \(status.unknown.count) unknown, "
                + "\(status.modified.count) changed"
        return ([summary] + lines).joined(separator: "\n")
    }

    private static func pad(_ version: Int) -> String {
        let digits = String(version)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
