import Foundation
import Postgres
import QueueModel
import Testing

@testable import Dispatcher

/// `dispatcher wait` (and `submit --wait`): a lost LISTEN connection is no timeout.
@Suite("Waiting for jobs")
struct JobWaiterTests {
    @Test("a wait whose LISTEN connection is cut waits on after the reconnect, until the job finishes")
    func waitSurvivesAReconnect() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let job = try await store.submit(
                Submission(request: ["messages": [["role": "user", "content": "hello"]]]))
            let waiting = Task { try await JobWaiter(store: store).wait(for: [job], timeout: .seconds(120), json: true) }
            @Sendable func listeners() async throws -> [Int] {
                try await pool.query(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %switchyard_results%' AND pid <> pg_backend_pid()"
                ).map { try $0.decode("pid", as: Int.self) }
            }
            try await waitUntil("the wait listens") { try await listeners().count == 1 }
            let first = try await listeners()
            try await pool.query("SELECT pg_terminate_backend($1)", [first[0]])
            try await waitUntil("the wait listens again") {
                let now = try await listeners()
                return now.count == 1 && now != first
            }
            // Its check after the reconnect has found the job still queued; it waits on.
            try await Task.sleep(for: .milliseconds(300))
            _ = try await store.cancel(job)
            #expect(try await waiting.value == ExitCode.jobNotSucceeded)
        }
    }
}
