import Foundation
import QueueModel

extension WorkerService {
    /// The model a job's outcome names: the one that answered, else the last one tried, else
    /// `none` (unroutable, postponed, or stopped before any call).
    static func model(of outcome: JobOutcome) -> String {
        let trail: [AttemptRecord]
        switch outcome {
        case .succeeded(let answer): return answer.model
        case .failed(let failure): trail = failure.trail
        case .cancelled(let calls): trail = calls
        default: trail = []
        }
        return trail.last { $0.model != nil }?.model ?? "none"
    }

    /// Counts a written (or refused) outcome, and logs the jobs worth a line: every line carries the
    /// job, its model and its attempt. Successes log at debug: at volume they are what metrics are for.
    func record(_ completion: Completion, of job: Job, model: String, written: Bool) {
        let priority = job.priority.rawValue
        guard written else {
            metrics.resultsRejected.increment([priority])
            return
        }
        switch completion.kind {
        case .result:
            switch completion.status {
            case "succeeded":
                metrics.jobsCompleted.increment([priority])
                logger.debug(
                    "job succeeded",
                    [
                        "job": job.id, "model": model, "attempt": job.attempt, "priority": priority,
                        "tier": completion.tier ?? "", "latency_ms": Int((completion.latencyMS ?? 0).rounded()),
                    ]
                )
            case "failed":
                metrics.jobsFailed.increment([priority])
                logger.warning(
                    "job failed",
                    [
                        "job": job.id, "model": model, "attempt": job.attempt, "priority": priority,
                        "error": completion.error?["code"]?.stringValue ?? "unknown",
                    ]
                )
            case "cancelled":
                metrics.jobsCancelled.increment([priority])
                logger.info("job cancelled while running", ["job": job.id, "model": model, "attempt": job.attempt])
            default:
                break
            }
        case .retry:
            metrics.jobsRetried.increment([priority])
        case .release:
            metrics.jobsReleased.increment([priority])
            logger.info("job released unfinished at shutdown", ["job": job.id, "model": model, "attempt": job.attempt])
        default:
            metrics.jobsPostponed.increment([priority])
        }
    }
}
