import Synchronization

/// When this worker's heartbeats last failed: the housekeeper's sign that the database may have
/// been out for everyone.
///
/// A review made the database read-only for longer than the lease: every worker's heartbeats
/// failed, and once it took writes again the housekeeper rescued the jobs of live workers (its
/// own among them) before they could renew, discarding 15 finished answers. A restart is covered
/// in SQL (`sql/0037`: no lease expires sooner than a lease after the server started); an outage
/// the server lived through leaves no such mark, so the housekeeper keeps its own.
final class HeartbeatRecord: Sendable {
    private let lastFailure = Mutex<ContinuousClock.Instant?>(nil)

    func failed() { lastFailure.withLock { $0 = .now } }

    /// Whether a heartbeat failed less than `window` ago: other workers' may have failed too,
    /// and their leases lapsed with nobody dead.
    func failedRecently(within window: Duration) -> Bool {
        lastFailure.withLock { $0.map { ContinuousClock.now - $0 < window } ?? false }
    }
}
