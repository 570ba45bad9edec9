import Foundation
import Postgres

/// One worker process, as the `switchyard.worker_status` view shows it.
public struct WorkerStatus: Sendable, Hashable {
    /// The worker's name (`--id`).
    public var id: String
    /// The machine it runs on.
    public var hostname: String?
    /// Its process id there.
    public var pid: Int?
    /// The Switchyard version it runs.
    public var version: String?
    /// Jobs it runs at once.
    public var concurrency: Int
    /// Jobs in flight at its last heartbeat.
    public var inFlight: Int
    /// Jobs it holds a lease on now.
    public var leased: Int
    /// When it first reported.
    public var startedAt: Date
    /// Its last heartbeat.
    public var heartbeatAt: Date
    /// Seconds since its last heartbeat.
    public var heartbeatAgeSeconds: Double
    /// A heartbeat in the last 30 seconds.
    public var alive: Bool
    /// The models this worker skips while others may call them (its environment lacks their
    /// key), with why; empty for a worker from before schema 95 too.
    public var skippedModels: [String: String]

    init(row: PostgresRow) throws {
        id = try row.decode("id")
        hostname = try row.decode("hostname", as: String?.self)
        pid = try row.decode("pid", as: Int?.self)
        version = try row.decode("version", as: String?.self)
        concurrency = try row.decode("concurrency")
        inFlight = try row.decode("in_flight")
        leased = try row.decode("leased")
        startedAt = try row.decode("started_at")
        heartbeatAt = try row.decode("heartbeat_at")
        heartbeatAgeSeconds = try row.decode("heartbeat_age_s")
        alive = try row.decode("alive")
        skippedModels = (try JSONValue(parsing: try row.decode("skipped_models", as: String.self)).objectValue ?? [:])
            .compactMapValues(\.stringValue)
    }

    /// The worker as JSON (snake_case keys, as in SQL).
    public var json: JSONValue {
        [
            "id": .string(id), "hostname": hostname.map(JSONValue.string) ?? .null,
            "pid": pid.map { .number(Double($0)) } ?? .null, "version": version.map(JSONValue.string) ?? .null,
            "concurrency": .number(Double(concurrency)), "in_flight": .number(Double(inFlight)),
            "leased": .number(Double(leased)), "started_at": .string(startedAt.postgresText),
            "heartbeat_at": .string(heartbeatAt.postgresText), "heartbeat_age_s": .optional(heartbeatAgeSeconds),
            "alive": .bool(alive), "skipped_models": .object(skippedModels.mapValues(JSONValue.string)),
        ]
    }
}
