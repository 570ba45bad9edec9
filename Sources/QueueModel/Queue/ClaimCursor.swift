import Foundation

/// Where a worker's next claim starts reading each partition: after the last job it claimed
/// there, so that it does not step again over the index entries of the jobs already claimed,
/// which Postgres keeps while any session holds an older snapshot (see `sql/0012_held_snapshot.sql`).
///
/// A job that comes back behind the cursor (released at shutdown, rescued from a dead worker)
/// is found when the worker resets the cursor and reads from the head again: every poll interval.
public struct ClaimCursor: Sendable, Hashable {
    /// A position in a partition's queue order.
    public struct Position: Sendable, Hashable, Comparable {
        public var runAt: Date
        public var id: Int64

        public init(runAt: Date, id: Int64) {
            self.runAt = runAt
            self.id = id
        }

        public static func < (lhs: Position, rhs: Position) -> Bool {
            (lhs.runAt, lhs.id) < (rhs.runAt, rhs.id)
        }
    }

    /// How long before a claim a submission may have started and still be committing: its
    /// run_at is its transaction's start, so the cursor never passes what is that recent.
    public static let inFlightSubmissions: TimeInterval = 1

    public private(set) var interactive: Position?
    public private(set) var background: Position?

    /// From the head of both partitions.
    public init() {}

    /// Moves past the jobs one claim returned, held back to `inFlightSubmissions` before the
    /// claim's time (the database's, from `claimed_at`).
    /// - Parameter deadlineHorizon: how near a job's deadline must be for the claim to take it
    ///   first, out of the queue's order (`switchyard.escalation_horizon` for its `max_attempts`;
    ///   `sql/0077`). Such a background job does not move the cursor: it may stand past a backlog
    ///   not yet claimed, which the next claims would skip until the cursor's reset. Twice the
    ///   horizon is left out, for a policy read a moment before or after the database's.
    ///
    /// Nor do a partition's jobs of several tenants (`sql/0082`): each tenant's share of the
    /// claim stands anywhere in the queue's order. (A claim whose share went to one tenant alone
    /// moves the cursor past it, and may pass jobs without a tenant queued among that tenant's,
    /// found again at the cursor's reset.)
    ///
    /// Nor do jobs of a capped tenant (`Job.tenantCapped`, `sql/0096`): the claim takes them first,
    /// wherever they stand; moving past one, a worker passed 600 older jobs and idled until the
    /// reset (a review's drain took twice as long). The claim's other jobs move it as they would.
    public mutating func advance(past jobs: [Job], deadlineHorizon: (Int) -> Duration = Self.defaultHorizon) {
        let ordered = jobs.filter { !$0.tenantCapped }
        let shared = Set(
            Priority.allCases.filter { priority in
                Set(ordered.lazy.filter { $0.priority == priority }.map(\.tenant)).count > 1
            })
        for job in ordered where !shared.contains(job.priority) {
            guard let claimedAt = job.claimedAt else { continue }
            if job.priority == .background, let deadline = job.deadline,
                deadline.timeIntervalSince(claimedAt) <= 2 * deadlineHorizon(job.maxAttempts).seconds
            {
                continue
            }
            let settled = Position(runAt: claimedAt.addingTimeInterval(-Self.inFlightSubmissions), id: .min)
            let position = min(Position(runAt: job.runAt, id: job.id), settled)
            switch job.priority {
            case .interactive: interactive = max(interactive ?? position, position)
            case .background: background = max(background ?? position, position)
            }
        }
    }

    /// The escalation horizon with the default settings and no rule's `max_latency_ms`.
    public static func defaultHorizon(maxAttempts: Int) -> Duration {
        BackgroundPolicy().escalationHorizon(maxAttempts: maxAttempts)
    }

    /// A horizon past any deadline, for a worker that does not read the settings and rules: no
    /// background job with a deadline moves the cursor.
    public static func anyHorizon(maxAttempts: Int) -> Duration { .seconds(Int64(Int32.max)) }

    /// Back to the head of both partitions.
    public mutating func reset() {
        self = ClaimCursor()
    }
}
