import Foundation
import Postgres

/// One partition of the live queue, as the `switchyard.queue_depth` view shows it.
public struct QueueDepth: Sendable, Hashable {
    /// `interactive` or `background`.
    public var priority: String
    /// Jobs that could run now.
    public var queued: Int
    /// Jobs waiting for their `run_at` (retries, scheduled work).
    public var scheduled: Int
    /// Jobs a worker holds.
    public var running: Int
    /// Queued or scheduled jobs with a deadline.
    public var withDeadline: Int
    /// Jobs held for their tenant's limits (paused, or its budget spent: `sql/0088`), in neither
    /// `queued` nor `scheduled`.
    public var held: Int
    /// The job that has waited longest to run, and since when.
    public var oldestJobID: Int64?
    /// Since when it could run.
    public var oldestWaitingSince: Date?
    /// How long it has waited, in seconds.
    public var oldestWaitSeconds: Double?

    init(row: PostgresRow) throws {
        priority = try row.decode("priority")
        queued = try row.decode("queued")
        scheduled = try row.decode("scheduled")
        running = try row.decode("running")
        withDeadline = try row.decode("with_deadline")
        held = try row.decode("held")
        oldestJobID = try row.decode("oldest_job_id", as: Int64?.self)
        oldestWaitingSince = try row.decode("oldest_waiting_since", as: Date?.self)
        oldestWaitSeconds = try row.decode("oldest_wait_s", as: Double?.self)
    }

    /// The partition as JSON (snake_case keys, as in SQL).
    public var json: JSONValue {
        [
            "priority": .string(priority), "queued": .number(Double(queued)),
            "scheduled": .number(Double(scheduled)), "running": .number(Double(running)),
            "with_deadline": .number(Double(withDeadline)), "held": .number(Double(held)),
            "oldest_job_id": oldestJobID.map { .number(Double($0)) } ?? .null,
            "oldest_waiting_since": oldestWaitingSince.map { .string($0.postgresText) } ?? .null,
            "oldest_wait_s": .optional(oldestWaitSeconds),
        ]
    }
}
