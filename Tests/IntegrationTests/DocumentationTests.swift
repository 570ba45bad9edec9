import Foundation
import Postgres
import QueueModel
import Testing

/// The SQL in the docs and the psql commands in the README run as printed, with the real psql.
@Suite("Documentation examples run as printed")
struct DocumentationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The fenced code blocks of a Markdown file that are in a given language.
    static func codeBlocks(_ file: String, language: String) throws -> [String] {
        let text = try String(contentsOf: repository.appending(path: file), encoding: .utf8)
        var blocks: [String] = []
        var current: [String]?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line.hasPrefix("```\(language)") {
                current = []
            } else if current != nil, line.hasPrefix("```") {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else {
                current?.append(String(line))
            }
        }
        return blocks
    }

    static func psql() throws -> String {
        if let path = try? ChildProcess.resolve("psql") { return path }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions {
            let path = "/usr/lib/postgresql/\(version)/bin/psql"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw QueueError(.notFound, "psql is not installed")
    }

    /// Runs a shell command with DATABASE_URL set, returning status and output.
    static func shell(_ command: String, database: PostgresConfiguration) async throws -> (Int32, String) {
        let psqlDirectory = URL(fileURLWithPath: try psql()).deletingLastPathComponent().path
        let url = WorkerProcess.databaseURL(database)
        let script = "export DATABASE_URL='\(url)'; export PATH=\"$PATH:\(psqlDirectory)\"; \(command)"
        return try await BlockingWork.run { try ChildProcess.run("/bin/sh", ["-c", script]) }
    }

    @Test("every SQL example in docs/sql.md runs, in order, against a migrated database")
    func sqlExamples() async throws {
        let blocks = try Self.codeBlocks("docs/sql.md", language: "sql")
        #expect(blocks.count >= 10)
        try await TestDatabase.withMigrated { configuration in
            let file = FileManager.default.temporaryDirectory.appending(path: "sql-examples-\(UUID().uuidString).sql")
            try blocks.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let (status, output) = try await Self.shell(
                "psql \"$DATABASE_URL\" -v ON_ERROR_STOP=1 -X -q -f '\(file.path)'", database: configuration
            )
            #expect(status == 0, "psql failed:\n\(output)")
            // The examples submitted, cancelled and retried real jobs.
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await pool.close() } }
            let cancelled = try await pool.query(
                "SELECT job_id FROM switchyard.results WHERE status = 'cancelled'").map { try $0.decode("job_id", as: Int64.self) }
            #expect(cancelled.count == 1)
            #expect(try await pool.query(
                "SELECT count(*) FROM switchyard.jobs WHERE retry_of = ANY ($1::bigint[])", [cancelled]).scalar(Int.self) == 1)
        }
    }

    @Test("submitting with psql works exactly as the README shows")
    func readmePsql() async throws {
        let commands = try Self.codeBlocks("README.md", language: "sh").flatMap { $0.split(separator: "\n") }
            .map(String.init).filter { $0.hasPrefix("psql \"$DATABASE_URL\"") }
        #expect(!commands.isEmpty, "the README shows no psql command")
        try await TestDatabase.withMigrated { configuration in
            for command in commands {
                let (status, output) = try await Self.shell(command, database: configuration)
                #expect(status == 0, "\(command)\n\(output)")
            }
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await pool.close() } }
            let submitted = try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self)
                + (try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self))
            #expect(submitted >= 1)
        }
    }
}
