import Foundation
import Postgres
import QueueModel
import Synchronization

/// Queue housekeeping — rescuing expired leases, expiring overdue jobs, creating results
/// partitions — run by exactly one worker at a time, elected by a session advisory lock: no
/// extra daemon to deploy, and when the elected worker dies its lock goes with its session, so
/// another takes over within one interval.
final class Housekeeper: Sendable {
    /// The advisory lock key ("SWYDHOUS").
    static let lockKey: Int64 = 0x5357_5944_484F_5553

    private let store: QueueStore
    private let interval: Duration
    private let logger: Logger
    private let stopped = StopFlag()

    init(store: QueueStore, interval: Duration, logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    func stop() { stopped.set() }

    func run() async {
        var lockConnection: PostgresConnection?
        var lastPartitionCheck: ContinuousClock.Instant?
        let clock = ContinuousClock()
        defer {
            if let lockConnection { Task { await lockConnection.close() } }
        }
        while !stopped.isSet && !Task.isCancelled {
            do {
                if lockConnection == nil {
                    let connection = try await PostgresConnection.connect(store.pool.configuration, threadName: "housekeeper")
                    if try await connection.query("SELECT pg_try_advisory_lock($1)", [Self.lockKey]).scalar(Bool.self) {
                        lockConnection = connection
                        logger.info("elected housekeeper")
                    } else {
                        await connection.close()
                    }
                }
                if let connection = lockConnection {
                    // The lock lives as long as this session: check it is still alive.
                    guard await connection.isReusable() else {
                        logger.warning("lost the housekeeper lock connection; standing down")
                        await connection.close()
                        lockConnection = nil
                        continue
                    }
                    // Partitions are made days ahead; checking hourly is plenty.
                    let partitionsDue = lastPartitionCheck.map { clock.now - $0 > .seconds(3600) } ?? true
                    try await keepHouse(partitions: partitionsDue)
                    if partitionsDue { lastPartitionCheck = clock.now }
                }
            } catch {
                logger.error("housekeeping failed", ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    private func keepHouse(partitions: Bool) async throws {
        let rescued = try await store.rescueExpired()
        for (job, outcome) in rescued {
            logger.warning("rescued a job whose lease expired", ["job": job, "outcome": outcome])
        }
        let expired = try await store.expireOverdue()
        if expired > 0 { logger.info("expired jobs not started by their deadline", ["count": expired]) }
        if partitions {
            let created = try await store.ensureResultPartitions()
            if created > 0 { logger.info("created results partitions", ["count": created]) }
        }
    }
}

/// A flag set once, read from anywhere.
final class StopFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
