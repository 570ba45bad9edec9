import Postgres
import QueueModel

/// The demo and the simulation write their own catalog, settings, jobs and results. On a
/// database the user gave them (DATABASE_URL or --database-url) they first make sure it holds
/// nothing of Switchyard's yet: they would replace the catalog and mix made-up jobs with real ones.
enum ScratchDatabase {
    static func requireEmpty(_ pool: PostgresPool, target: String, for command: String) async throws {
        let used = try await pool.query(
            """
            SELECT EXISTS (SELECT 1 FROM switchyard.jobs) OR EXISTS (SELECT 1 FROM switchyard.results)
                   OR EXISTS (SELECT 1 FROM switchyard.models)
            """
        ).scalar(Bool.self)
        guard used else { return }
        throw QueueError(
            .invalidInput,
            "\(target) already has Switchyard jobs, results or a model catalog, and \(command) would replace the "
                + "catalog and mix its own made-up jobs and results in with them; nothing was changed",
            hint: "run it with DATABASE_URL unset (it starts a private Postgres of its own), or give "
                + "--database-url an empty database"
        )
    }
}
