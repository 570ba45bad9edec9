import Foundation
import QueueModel

/// How a worker runs.
struct WorkerConfiguration: Sendable {
    var identity: WorkerIdentity
    /// Jobs run at once.
    var concurrency: Int
    /// Slots background work may not take, kept for interactive jobs.
    var reservedInteractiveSlots: Int
    /// The share of slots, and of each model's max_concurrency and rate budget, kept so.
    var reserveInteractiveShare: Double
    /// How long a claim holds a job without a heartbeat.
    var lease: Duration = .seconds(30)
    /// How often leases are renewed; a third of the lease by default.
    var heartbeatInterval: Duration = .seconds(10)
    /// A worker's connections give up on data unacknowledged this long (`tcp_user_timeout`; a
    /// `--database-url` may set its own): a statement sent into a dead link fails and is tried
    /// again on a new connection, well inside a lease, instead of after TCP's 15 minutes.
    static let tcpUserTimeoutMilliseconds = 10_000
    /// The slow poll that catches what notifications missed (and scheduled jobs coming due).
    var pollInterval: Duration = .seconds(1)
    /// Never LISTEN (for servers behind a transaction-mode pooler).
    var pollOnly = false
    /// How long shutdown waits for running jobs before releasing them.
    var shutdownGrace: Duration = .seconds(30)
    /// Claim this many jobs, let them finish, then stop and exit 0 (nil: no limit): a supervisor
    /// starts the process afresh, and with it the memory a library leaks (`--max-jobs`).
    var maxJobs: Int?
    var retryPolicy = RetryPolicy()
    /// How often the elected housekeeper rescues expired leases and expires overdue jobs.
    var housekeepingInterval: Duration = .seconds(2)
    /// The most outcomes written in one statement.
    var completionBatchLimit = 500
    /// Connections in the worker's pool (LISTEN uses its own); `WorkerCommand` sizes it from the concurrency.
    var poolSize = 4

    init(identity: WorkerIdentity, reserveInteractiveShare: Double = 0.25) {
        self.identity = identity
        self.concurrency = identity.concurrency
        self.reserveInteractiveShare = reserveInteractiveShare
        self.reservedInteractiveSlots = Self.reserved(concurrency: identity.concurrency, share: reserveInteractiveShare)
    }

    /// Slots kept for interactive work: the share of the concurrency, rounded up, but always
    /// leaving background work at least one slot.
    static func reserved(concurrency: Int, share: Double) -> Int {
        RoutingState.reserved(of: concurrency, share: share)
    }

    /// How many slots may be asked for per claim when a freed slot (not a notification) wakes the
    /// loop: waiting for a few to free up turns many one-job claims into one batch.
    var claimThreshold: Int { max(1, concurrency / 8) }
}
