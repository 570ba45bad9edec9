import Foundation
import Postgres

/// Which Postgres server a connection reached: its address, its cluster and timeline, and whether
/// it is a standby.
///
/// After a failover, two processes on two timelines (or two system identifiers) are writing to
/// two databases: a fenced-off old primary taken back by some workers is a split brain that
/// nothing else showed (a walkthrough's 670 results went to the abandoned database in 18 s).
/// Workers log it when they start and when they are back after losing the database; `status`
/// shows it in its heading.
public struct ServerIdentity: Sendable, Equatable {
    /// `host:port` of the server's end of the connection, or `local socket, port 5432`.
    public var address: String
    /// The server's version number (`15.18`).
    public var version: String
    /// The cluster's system identifier: a streaming standby shares its primary's.
    public var systemIdentifier: String
    /// The WAL timeline of a primary: a promotion starts a new one. Nil on a standby, which tells
    /// only its last restartpoint's to a role that is not a superuser (it read 1 there while it
    /// replayed a promoted primary's timeline 2).
    public var timeline: Int?
    /// Whether the server is a standby (in recovery: it takes no writes).
    public var isStandby: Bool
    /// On a standby: when the last transaction it replayed was committed on the primary (nil
    /// before it replayed any, and on a primary). The primary may simply have committed nothing since.
    public var replayedCommitAt: Date?

    /// Reads it through one of the pool's connections. Every function it calls is open to any role.
    public static func read(_ pool: PostgresPool) async throws -> ServerIdentity {
        // A primary's timeline is its current WAL file's (its last checkpoint's lags a promotion).
        let rows = try await pool.query(
            """
            SELECT coalesce(CASE WHEN family(inet_server_addr()) = 6 THEN '[' || host(inet_server_addr()) || ']'
                                 ELSE host(inet_server_addr()) END || ':' || inet_server_port(),
                            'local socket, port ' || current_setting('port')) AS address,
                   split_part(current_setting('server_version'), ' ', 1) AS version,
                   (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
                   pg_is_in_recovery() AS standby,
                   CASE WHEN NOT pg_is_in_recovery()
                        THEN ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::integer END AS timeline,
                   CASE WHEN pg_is_in_recovery() THEN pg_last_xact_replay_timestamp() END AS replayed_commit_at
            """
        )
        guard let row = rows.first else { throw QueueError(.database, "the server's identity query returned no row") }
        return ServerIdentity(
            address: try row.decode("address"), version: try row.decode("version"),
            systemIdentifier: try row.decode("system_identifier"), timeline: try row.decode("timeline", as: Int?.self),
            isStandby: try row.decode("standby"), replayedCommitAt: try row.decode("replayed_commit_at", as: Date?.self))
    }

    /// `127.0.0.1:5432, PostgreSQL 15.18, system 7713219094587166974, timeline 2`, or `…, system
    /// 7713219094587166974, a standby`. Only the system and the timeline tell databases apart: one
    /// server reads as a socket to one process and as an address to another, and behind a proxy
    /// its own address shows.
    public var description: String {
        "\(address), PostgreSQL \(version), system \(systemIdentifier), "
            + (timeline.map { "timeline \($0)" } ?? "a standby")
    }

    /// For `--json`.
    public var json: JSONValue {
        [
            "address": .string(address), "version": .string(version), "system_identifier": .string(systemIdentifier),
            "timeline": timeline.map { .number(Double($0)) } ?? .null, "standby": .bool(isStandby),
            "replayed_commit_at": replayedCommitAt.map { .string($0.postgresText) } ?? .null,
        ]
    }
}
