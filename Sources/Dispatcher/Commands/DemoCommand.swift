import Foundation
import Postgres
import QueueModel

/// `dispatcher demo`: the whole product on embedded defaults.
enum DemoCommand {
    static let usage = """
        usage: dispatcher demo [--database-url URL]

        Starts a private Postgres (unless DATABASE_URL or --database-url names one), applies the
        schema, and shows it. Everything it starts is stopped and deleted when it ends.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(words, command: "dispatcher demo", options: ["database-url"])
        if arguments.flag("help") {
            print(usage)
            return 0
        }
        var cluster: PrivatePostgres?
        let configuration: PostgresConfiguration
        if let given = try Database.optionalConfiguration(arguments) {
            configuration = given
        } else {
            print("starting a private Postgres…")
            let started = try await PrivatePostgres.start()
            cluster = started
            configuration = started.configuration()
            print("  data in \(started.root.path), listening on port \(started.port)")
        }
        let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
        do {
            let migrator = Migrator()
            let applied = try await migrator.migrate(pool)
            print("migrated \(configuration.target): \(applied.count) migration(s) applied")
            print(SchemaReport.render(try await migrator.status(pool)))
            let tables = try await pool.query(
                """
                SELECT c.relname, CASE c.relkind WHEN 'p' THEN 'partitioned table' WHEN 'r' THEN 'table' END AS kind
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'switchyard' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                ORDER BY c.relname
                """
            )
            print("tables in schema switchyard:")
            for row in tables { print("  \(try row.decode("relname", as: String.self)) (\(try row.decode("kind", as: String.self)))") }
        } catch {
            await pool.close()
            try? await cluster?.stop()
            throw error
        }
        await pool.close()
        if let cluster {
            try await cluster.stop()
            print("stopped and removed the private Postgres")
        }
        return 0
    }
}
