import Synchronization

/// This worker's heartbeats, failed and renewed: the housekeeper's sign that the database may
/// have been out for everyone.
///
/// A review made the database read-only for longer than the lease: every worker's heartbeats
/// failed, and once it took writes again the housekeeper rescued the jobs of live workers (its
/// own among them) before they could renew, discarding 15 finished answers. A restart is covered
/// in SQL (`sql/0037`: no lease expires sooner than a lease after the server started); an outage
/// the server lived through leaves no such mark, so the housekeeper keeps its own.
///
/// Only a run of failures counts (one missed heartbeat lapses no lease: they come three to a
/// lease): two or more, or failures that kept this worker from the database for two-thirds of a
/// lease, from its last heartbeat that went through (a bare record: from the first failed one's
/// sending) to the last failure or the heartbeat that ended the run (a heartbeat that waits out a
/// connection attempt fails once in 15 s: a failover's 40 s had one counted failure, and the
/// housekeeper rescued 32 live jobs the moment the standby was promoted). One stuck 10 s on a dead
/// connection counts too, its interval and its timeout making two-thirds of a lease: a lease's
/// hold of the fleet's rescues is the lesser harm. A heartbeat that does not
/// fail but is still on its way, or goes through, that long after the one before counts too (a
/// 22 s promotion failed none). It counts for a bounded time, so a worker whose heartbeats fail
/// now and then, or for good, does not stop rescues for the whole fleet. Past that bound a run
/// still holds rescues back from when the database answers again until this worker's next
/// heartbeat says whether it was the database (the heartbeat goes through: the run ends) or this
/// worker (it fails again): a review's 75 s read-only outage outlasted the bound, and the first
/// round after it rescued 26 live jobs before any heartbeat could be sent.
final class HeartbeatRecord: Sendable {
    private struct Run {
        var start: ContinuousClock.Instant
        /// When the run's first failed heartbeat was sent.
        var since: ContinuousClock.Instant
        var failures = 1
        var lastFailure: ContinuousClock.Instant
        var end: ContinuousClock.Instant?
        /// When the database first answered the housekeeper again during this run.
        var databaseBack: ContinuousClock.Instant?

        init(start: ContinuousClock.Instant, since: ContinuousClock.Instant) {
            self.start = start
            self.since = min(since, start)
            self.lastFailure = start
        }

        /// Whether the run is long enough that other workers' leases may have lapsed with them
        /// alive (they renew three times a lease: missing two-thirds of one, they may), to its
        /// last failure or the heartbeat that ended it (a failure and a quick retry that waited out
        /// the rest of a 27 s promotion: 15 s to the failure, 31 s to the end, and 32 live jobs
        /// taken at the promotion).
        func isOutage(lease: Duration) -> Bool { failures >= 2 || (end ?? lastFailure) - since >= lease * 2 / 3 }
    }

    /// The run of failures going on, the last one that ended, and when a heartbeat last went through.
    private let runs = Mutex<(current: Run?, last: Run?, success: ContinuousClock.Instant?)>((nil, nil, nil))
    /// The worker's lease and heartbeat interval, when known: a heartbeat on its way, or gone
    /// through, two-thirds of a lease (and two intervals) after the one before counts as an outage.
    private let lease: Duration?
    private let interval: Duration
    /// The time (a test's own clock: sleeps overshot by seconds on a loaded machine).
    private let clock: @Sendable () -> ContinuousClock.Instant

    /// A record for a worker of `lease` and `interval` (nil: only failures count).
    init(lease: Duration? = nil, interval: Duration = .zero, now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.lease = lease
        self.interval = interval
        self.clock = now
    }

    /// How long after a heartbeat went through the next one is late.
    private func lateAfter(_ window: Duration) -> Duration { max(window * 2 / 3, interval * 2) }

    /// A heartbeat sent at `sent` (nil: now) failed. A quick retry's failure (`counted` false) is
    /// not one more in the run, but the time the run lasted runs on to it.
    func failed(counted: Bool = true, sent: ContinuousClock.Instant? = nil) {
        let now = clock()
        let sent = sent ?? now
        runs.withLock { runs in
            if runs.current == nil {
                // A worker's record (its lease known) counts from its last heartbeat that went
                // through: counted from the failed one's sending, a 27 s promotion's one failure
                // and its retry made 17 s, while the other worker's leases, renewed 36 s before,
                // had lapsed; its 32 live jobs were taken at the promotion (4 of 4 runs). A
                // heartbeat stuck 10 s on a dead connection then counts too: a lease's hold of
                // the fleet's rescues is the lesser harm.
                runs.current = Run(start: now, since: lease == nil ? sent : runs.success ?? sent)
                runs.current?.failures = counted ? 1 : 0
            } else {
                if counted { runs.current?.failures += 1 }
                runs.current?.lastFailure = now
            }
        }
    }

    /// The database took the housekeeper's tenure statement (a write). Noted once a
    /// run is past its bound of two `window`s, the first time only: an answer in a flapping outage's
    /// early part would otherwise stand for its end, and answers after each of this worker's own
    /// failures would hold rescues back for good.
    func databaseAnswered(within window: Duration) {
        let now = clock()
        runs.withLock { runs in
            guard let run = runs.current, run.databaseBack == nil, now - run.start >= window * 2 else { return }
            runs.current?.databaseBack = now
        }
    }

    /// A heartbeat went through. Returns how long since the last one that did (or since the
    /// first failure's sending), when this one ends a run of failures or came late (it waited out
    /// an outage without failing).
    @discardableResult
    func succeeded() -> Duration? {
        let now = clock()
        return runs.withLock { runs in
            defer { runs.success = now }
            guard var run = runs.current else {
                // None failed, but this one waited out the outage (a connection attempt retried
                // for 15 s, and went through as the standby was promoted 22 s after the kill): a
                // walkthrough's housekeeper, its heartbeat late but never failed, rescued 32 live
                // jobs at the promotion.
                if let lease, let previous = runs.success, now - previous >= lateAfter(lease) {
                    var late = Run(start: previous, since: previous)
                    late.failures = 0
                    late.lastFailure = now
                    late.end = now
                    runs.last = late
                    return now - previous
                }
                return nil
            }
            run.end = now
            runs.last = run
            runs.current = nil
            return now - run.since
        }
    }

    /// Whether other workers' leases may have lapsed with them alive: two or more heartbeats in a
    /// row failed (or failures for two-thirds of a `window`), and that run is going on (for at most
    /// two `window`s from its start, or, the database having answered since its last failure,
    /// until the next heartbeat, for at most a `window` from that answer) or ended less than
    /// `window` ago.
    func outageRecently(within window: Duration) -> Bool {
        let now = clock()
        return runs.withLock { runs in
            // A heartbeat on its way for two-thirds of a lease (failed or not yet), for at most two
            // `window`s: the housekeeper's own statement may go through before it does.
            if lease != nil, runs.current == nil, let success = runs.success, now - success >= lateAfter(window),
                now - success < window * 2
            {
                return true
            }
            if let run = runs.current, run.isOutage(lease: window) {
                if now - run.start < window * 2 { return true }
                guard let back = run.databaseBack, back > run.lastFailure else { return false }
                return now - back < window
            }
            if let run = runs.last, run.isOutage(lease: window), let end = run.end { return now - end < window }
            return false
        }
    }
}
