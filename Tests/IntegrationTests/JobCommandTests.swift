import Foundation
import Postgres
import QueueModel
import Testing

/// `dispatcher cancel` and `wait` with many ids, as an operator pipes them in.
@Suite("Job commands with ids on stdin")
struct JobCommandTests {
    /// Runs `dispatcher ARGUMENTS < FILE` holding `input`.
    private func dispatcher(_ arguments: [String], stdin input: String, url: String) async throws -> (status: Int32, output: String) {
        let file = try Scratch.makeDirectory("job-ids").appendingPathComponent("ids").path
        try Data(input.utf8).write(to: URL(fileURLWithPath: file))
        let words = [WorkerProcess.binary("dispatcher")] + arguments + ["--database-url", url]
        let line = words.map { "'\($0)'" }.joined(separator: " ") + " < '\(file)'"
        return try await BlockingWork.run { try ChildProcess.run("/bin/sh", ["-c", line]) }
    }

    @Test("cancel - takes 1,500 ids from stdin: each once, in order, past a round trip's thousand")
    func cancelFromStdin() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let jobs = try await store.submit(batch: (0..<1_500).map { _ in Submission(request: hello, priority: .background) })
            #expect(try await store.cancel(jobs[7]) == "cancelled")
            let url = pool.configuration.effectiveConnectionString
            // Spaces and newlines both separate; a repeated id is cancelled (and printed) once.
            let input = jobs.prefix(750).map(String.init).joined(separator: " ") + "\n"
                + jobs.dropFirst(750).map(String.init).joined(separator: "\n") + "\n\(jobs[3])\n"
            let (status, output) = try await dispatcher(["cancel", "-", "999999"], stdin: input, url: url)
            #expect(status == 6, "\(output.suffix(500))")
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.count == 1_501, "\(output.suffix(500))")
            #expect(lines.first == "\(jobs[0])  cancelled")
            #expect(lines[7] == "\(jobs[7])  already cancelled")
            #expect(lines[1_499] == "\(jobs[1_499])  cancelled")
            #expect(lines.last == "999999  not found")
            #expect(lines.filter { $0.hasSuffix("  cancelled") && !$0.contains("already") }.count == 1_499)
            let left = try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self)
            #expect(left == 0)
            let cancelled = try await pool.query(
                "SELECT count(*) FROM switchyard.results WHERE status = 'cancelled' AND job_id = ANY ($1)", [jobs]
            ).scalar(Int.self)
            #expect(cancelled == 1_500)

            // wait - reads its ids the same way.
            let waited = try await dispatcher(["wait", "-", "--timeout", "30s"], stdin: "\(jobs[0])\n", url: url)
            #expect(waited.status == 3 && waited.output.contains("\(jobs[0])  cancelled"), "\(waited.output)")
            // Nothing but whitespace, or a word that is no id: said, exit 2, nothing cancelled.
            let empty = try await dispatcher(["cancel", "-"], stdin: " \n", url: url)
            #expect(empty.status == 2 && empty.output.contains("no job id on stdin"), "\(empty.output)")
            let word = try await dispatcher(["cancel", "-"], stdin: "\(jobs[1]) twelve\n", url: url)
            #expect(word.status == 2 && word.output.contains("\"twelve\" is not a job id"), "\(word.output)")
        }
    }
}
