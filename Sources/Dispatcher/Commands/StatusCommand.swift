import Foundation
import Postgres
import QueueModel

/// `dispatcher status`: one screen about the fleet, or the same as JSON.
enum StatusCommand {
    static let usage = """
        usage: dispatcher status [--window DURATION] [--json]

        One screen about the fleet: throughput, error rate and latency percentiles of the jobs that
        finished in the window (overall, per priority and per tier), the queue per partition and its
        oldest waiting job, the workers and their heartbeats, each model's calls, errors, timeouts,
        latency, fallbacks, cost and breaker, and the open alerts.

          --window DURATION   how far back to summarise (default 5m; e.g. 1h, 24h)
          --json              the same as one JSON object, a key per section

        The numbers come from SQL any client can run: switchyard.job_stats, switchyard.model_stats,
        switchyard.queue_depth, switchyard.worker_status, switchyard.alerts (docs/observability.md).
        A section that cannot be read (permissions, an error) says why in its place, and the exit
        status is then 1.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher status", options: ["window", "database-url"], flags: ["json"], takesWords: false)
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        let window = try arguments.duration("window", default: .seconds(300))
        guard window > .zero else { throw QueueError(.invalidInput, "--window must be longer than zero") }
        let pool = try Database.pool(arguments, applicationName: "switchyard-status", maxConnections: 1)
        defer { Task { await pool.close() } }
        try await Migrator().requireCurrent(pool)
        let report = await StatusReport.load(StatusContext(pool: pool, window: window, at: nil))
        if arguments.flag("json") {
            print(report.json.prettyText)
        } else {
            print(report.lines().joined(separator: "\n"))
        }
        // Printed all the same; but a script must not take a report it could not read for a good one.
        guard report.unavailable.isEmpty else {
            printError("error: \(report.unavailable.count) of \(report.sections.count) sections unavailable: "
                       + report.unavailable.joined(separator: ", ")
                       + (report.deniedByRole ? DispatcherCommand.roleHint : ""))
            return ExitCode.failure
        }
        return ExitCode.success
    }
}
