import Foundation
import QueueModel

/// Runs one claimed job: chooses models, calls them, falls back, and says how it ended.
///
/// Implementations must honour task cancellation promptly (the worker cancels a job's task when
/// the job is cancelled, its lease is lost, or shutdown runs out of grace) and must never throw:
/// every failure is an outcome.
protocol JobExecutor: Sendable {
    func execute(_ job: Job) async -> JobOutcome
}
