import Foundation
import QueueModel

/// The series one worker process exposes on `/metrics`.
///
/// Updated from the claim loop, the jobs' tasks, the heartbeat and the housekeeper; every update
/// is a short lock, never a suspension. Names follow Prometheus conventions (`_total` counters,
/// `_seconds` histograms); docs/observability.md lists them.
final class WorkerMetrics: Sendable {
    let registry = MetricsRegistry()

    let jobsClaimed: Counter
    let jobsCompleted: Counter
    let jobsFailed: Counter
    let jobsRetried: Counter
    let jobsCancelled: Counter
    let jobsReleased: Counter
    let jobsPostponed: Counter
    let resultsRejected: Counter
    let attempts: Counter
    let jobLatency: Histogram
    let attemptLatency: Histogram
    let inFlight: Gauge
    let concurrency: Gauge
    let leaseRenewals: Counter
    let leasesLost: Counter
    let rescues: Counter
    let expired: Counter
    let alertEvents: Counter
    let roundTrips: Counter
    let databaseErrors: Counter

    /// Bucket bounds (seconds) around the tier latency targets: 1.5 s primary, 3 s secondary,
    /// 10 s tertiary, with room on both sides.
    static let latencyBuckets: [Double] = [0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60, 120]

    init() {
        let priority = ["priority"]
        jobsClaimed = registry.counter(
            "switchyard_jobs_claimed_total", help: "Jobs claimed by this worker.", labels: priority)
        jobsCompleted = registry.counter(
            "switchyard_jobs_completed_total", help: "Jobs this worker finished with an answer (status succeeded).",
            labels: priority)
        jobsFailed = registry.counter(
            "switchyard_jobs_failed_total",
            help: "Jobs this worker ended as failed (no attempt left, or not retryable).",
            labels: priority)
        jobsRetried = registry.counter(
            "switchyard_jobs_retried_total", help: "Failed attempts sent back to the queue for a later retry.",
            labels: priority)
        jobsCancelled = registry.counter(
            "switchyard_jobs_cancelled_total", help: "Jobs cancelled while this worker ran them.", labels: priority)
        jobsReleased = registry.counter(
            "switchyard_jobs_released_total", help: "Jobs handed back unfinished at shutdown (attempt not spent).",
            labels: priority)
        jobsPostponed = registry.counter(
            "switchyard_jobs_postponed_total", help: "Jobs sent back to wait for a later time (attempt not spent).",
            labels: priority)
        resultsRejected = registry.counter(
            "switchyard_results_rejected_total",
            help: "Outcomes not written because this worker no longer held the job's lease.", labels: priority)
        attempts = registry.counter(
            "switchyard_attempts_total", help: "Model calls by model and outcome (succeeded, error, timeout, ...).",
            labels: ["model", "outcome"])
        jobLatency = registry.histogram(
            "switchyard_job_latency_seconds", help: "Time from claim to result of each job finished here (retries and postponements are not results).",
            labels: priority, buckets: Self.latencyBuckets)
        attemptLatency = registry.histogram(
            "switchyard_attempt_latency_seconds", help: "Duration of each model call, by model and tier.",
            labels: ["model", "tier"], buckets: Self.latencyBuckets)
        inFlight = registry.gauge("switchyard_jobs_in_flight", help: "Jobs running now.", labels: priority)
        concurrency = registry.gauge("switchyard_worker_concurrency", help: "Jobs this worker runs at once at most.")
        leaseRenewals = registry.counter(
            "switchyard_lease_renewals_total", help: "Job leases renewed by heartbeats.")
        leasesLost = registry.counter(
            "switchyard_leases_lost_total", help: "Jobs taken away from this worker (lease expired and rescued).")
        rescues = registry.counter(
            "switchyard_rescues_total", help: "Jobs with expired leases rescued by this worker's housekeeper.",
            labels: ["outcome"])
        expired = registry.counter(
            "switchyard_jobs_expired_total", help: "Queued jobs this worker's housekeeper ended past their deadline.")
        alertEvents = registry.counter(
            "switchyard_alert_events_total", help: "Alerts raised or cleared by this worker's housekeeper.",
            labels: ["kind", "event"])
        roundTrips = registry.counter(
            "switchyard_db_round_trips_total", help: "Statements this worker sent to Postgres, by operation.",
            labels: ["operation"])
        databaseErrors = registry.counter(
            "switchyard_db_errors_total", help: "Statements that failed, by operation.", labels: ["operation"])

        for priority in Priority.allCases.map(\.rawValue) {
            for counter in [
                jobsClaimed, jobsCompleted, jobsFailed, jobsRetried, jobsCancelled, jobsReleased, jobsPostponed,
                resultsRejected,
            ] {
                counter.touch([priority])
            }
            inFlight.set(0, [priority])
        }
        for operation in ["claim", "heartbeat", "complete"] {
            roundTrips.touch([operation])
            databaseErrors.touch([operation])
        }
        for outcome in ["requeued", "failed", "cancelled"] { rescues.touch([outcome]) }
    }

    /// Counts one statement, and its failure.
    func roundTrip(_ operation: String, failed: Bool = false) {
        roundTrips.increment([operation])
        if failed { databaseErrors.increment([operation]) }
    }

    /// Runs one database call and counts it (and its failure) under `operation`.
    func measure<T>(_ operation: String, _ body: () async throws -> T) async throws -> T {
        do {
            let value = try await body()
            roundTrip(operation)
            return value
        } catch {
            roundTrip(operation, failed: true)
            throw error
        }
    }

    /// The exposition text of every series.
    func render() -> String { registry.render() }
}
