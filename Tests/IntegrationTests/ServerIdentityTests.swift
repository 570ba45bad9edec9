import Foundation
import Postgres
import QueueModel
import Testing

@testable import Dispatcher
@testable import Worker

/// Which server a process reached: workers log it and `status` shows it, so a failover that left
/// some processes on the old primary (a split brain) shows as two timelines or two systems.
@Suite("Server identity: address, cluster, timeline, standby")
struct ServerIdentityTests {
    static func identity(_ cluster: PrivatePostgres) async throws -> ServerIdentity {
        let pool = PostgresPool(cluster.configuration(), options: .init(maxConnections: 1))
        defer { Task { await pool.close() } }
        return try await ServerIdentity.read(pool)
    }

    @Test("a primary, its standby (the same system, read-only, replaying) and the standby promoted (a new timeline)")
    func primaryStandbyPromotion() async throws {
        try await withPrivateCluster { primary in
            let first = try await Self.identity(primary)
            #expect(first.address == "local socket, port \(primary.port)")
            #expect(!first.isStandby && first.timeline == 1 && first.replayedCommitAt == nil)
            #expect(!first.version.isEmpty && !first.version.contains(" "))
            #expect(!first.systemIdentifier.isEmpty && first.systemIdentifier.allSatisfy(\.isNumber))
            #expect(StatusReport.serverLine(first, at: Date()) == "database: \(first.description)")
            #expect(first.description.hasSuffix(", system \(first.systemIdentifier), timeline 1"))

            let standby = try await primary.startStandby()
            do {
                // A commit on the primary, replayed: the standby says when it was made.
                let writer = PostgresPool(primary.configuration(), options: .init(maxConnections: 1))
                try await writer.query("CREATE TABLE replayed (id int)")
                await writer.close()
                let reader = PostgresPool(standby.configuration(), options: .init(maxConnections: 1))
                try await waitUntil("the standby has replayed the commit") {
                    try await reader.query("SELECT to_regclass('replayed') IS NOT NULL").scalar(Bool.self)
                }
                await reader.close()
                let replica = try await Self.identity(standby)
                #expect(replica.isStandby && replica.timeline == nil)
                #expect(replica.description.hasSuffix(", system \(first.systemIdentifier), a standby"))
                #expect(replica.systemIdentifier == first.systemIdentifier)
                #expect(replica.address == "local socket, port \(standby.port)")
                #expect(replica.replayedCommitAt != nil)
                let line = StatusReport.serverLine(replica, at: Date())
                #expect(line.hasPrefix("database: \(replica.description): takes no writes; replayed up to a commit made "), "\(line)")
                #expect(replica.json["standby"] == .bool(true))

                // Connecting for writes to the standby alone: the hint says why, not "is it running".
                let readWrite = try PostgresConfiguration(
                    standby.connectionString() + " target_session_attrs=read-write connect_timeout=5")
                let refused = await #expect(throws: PostgresError.self) {
                    _ = try await PostgresConnection.connect(readWrite)
                }
                #expect(refused?.hint?.hasPrefix("No host in DATABASE_URL that answered takes writes") == true,
                        "\(String(describing: refused))")

                try await standby.promote()
                let promoted = try await Self.identity(standby)
                #expect(!promoted.isStandby && promoted.timeline == 2 && promoted.replayedCommitAt == nil)
                #expect(promoted.systemIdentifier == first.systemIdentifier)
            } catch {
                try? await standby.stop()
                throw error
            }
            try await standby.stop()
        }
    }

    @Test("a worker names its server when it starts")
    func workerLogsItsServer() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let capture = LogCapture()
            let service = WorkerService(
                configuration: WorkerServiceTests.configuration(concurrency: 1), pool: pool, executor: GatedExecutor(),
                logger: capture.logger(level: .notice))
            let running = Task { try await service.run() }
            let started = try await capture.waitFor { $0.contains(#"msg="worker started""#) }
            service.shutdown()
            try await running.value
            let identity = try await ServerIdentity.read(pool)
            #expect(started?.contains(#"server="\#(identity.description)""#) == true, "\(started ?? "none")")
        }
    }

    @Test("a heartbeat that ends a run of failures, or comes late, says how long since the last that went through")
    func heartbeatBackAfterFailures() {
        let record = HeartbeatRecord(lease: .seconds(30), interval: .seconds(10))
        #expect(record.succeeded() == nil)
        record.failed()
        record.failed(counted: false)
        let out = record.succeeded()
        #expect(out != nil && out! >= .zero)
        #expect(record.succeeded() == nil)
        // None failed, but one went through two-thirds of a lease after the one before: it waited
        // out an outage (a promotion within a connection attempt's 15 s), and says so too.
        let time = ManualInstant()
        let quick = HeartbeatRecord(lease: .milliseconds(60), interval: .zero, now: time.now)
        #expect(quick.succeeded() == nil)
        time.advance(by: .milliseconds(100))
        #expect(quick.succeeded() == .milliseconds(100))
        // Said as a warning once two-thirds of a lease went unrenewed: leases may have lapsed.
        #expect(WorkerService.heartbeatBackLevel(after: .seconds(28.7), lease: .seconds(30)) == .warning)
        #expect(WorkerService.heartbeatBackLevel(after: .seconds(12), lease: .seconds(30)) == .notice)
    }
}
