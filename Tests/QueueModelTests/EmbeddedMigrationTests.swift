import Foundation
import QueueModel
import Testing

@Suite("Embedded migrations")
struct EmbeddedMigrationTests {
    @Test("every file in sql/ is compiled into the binaries, with the same SQL")
    func matchesTheDirectory() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appending(path: "sql")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }.sorted()
        // SwiftPM re-runs build plugins when the package changes, not when a file appears in sql/.
        let hint = "a migration in sql/ is not in the build: run `touch Package.swift` and build again"
        #expect(Migration.all.map { String(format: "%04d_%@.sql", $0.version, $0.name) } == files, "\(hint)")
        for migration in Migration.all {
            let file = directory.appending(path: String(format: "%04d_%@.sql", migration.version, migration.name))
            #expect(try String(contentsOf: file, encoding: .utf8) == migration.sql, "\(hint) (\(file.lastPathComponent) changed)")
        }
    }
}
