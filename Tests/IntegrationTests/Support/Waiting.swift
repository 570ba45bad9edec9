import Postgres

/// A wait the test gave up on; says what it waited for.
struct WaitTimedOut: Error, CustomStringConvertible {
    var description: String
}

/// Polls `condition` until it holds; throws once `limit` has passed without it. The limit is
/// generous: a full test run loads both cores (on a slow day a worker's first housekeeping round
/// came over 30 s into its test, and several such waits gave up), and a wait that ends early only
/// costs time when something is wrong.
func waitUntil(
    _ what: String, limit: Duration = .seconds(90), every interval: Duration = .milliseconds(20),
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while true {
        if try await condition() { return }
        if clock.now >= deadline { throw WaitTimedOut(description: "timed out after \(limit) waiting until \(what)") }
        try await Task.sleep(for: interval)
    }
}

/// Waits until a statement of this pool's database that calls `function` waits for a lock (one a
/// test holds on purpose).
func waitUntilBlocked(_ pool: PostgresPool, calling function: String, _ what: String) async throws {
    try await waitUntil(what) {
        try await pool.query(
            """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '(%'
            """,
            [function]
        ).scalar(Int.self) == 1
    }
}

/// Takes a database away, as an outage would: no new connection allowed, and every session of
/// it ended, however many terminations that takes (a connection on its way in as the first ended
/// the others lived on: a test's worker wrote an outcome through it "with the database down").
func cutOff(_ database: String, on admin: PostgresConnection) async throws {
    try await admin.query("ALTER DATABASE \(database) ALLOW_CONNECTIONS false")
    try await waitUntil("every session of \(database) has ended") {
        try await admin.query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1", [database]
        ).scalar(Int.self) == 0
    }
}
