import Foundation
import Postgres
import QueueModel

/// `worker` processes started by this `dispatcher` (for the demo and the benchmarks), on this
/// machine. They exit by themselves if this process dies.
enum LocalWorkers {
    /// The `worker` next to this `dispatcher`.
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appending(path: "worker").path
    }

    /// Starts worker processes against a database; their output goes to `log`.
    static func start(
        _ count: Int, concurrency: Int, database: PostgresConfiguration, extra: [String] = [],
        environment extraEnvironment: [String: String] = [:], log: String, idPrefix: String = "worker"
    ) throws -> [ChildProcess] {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw QueueError(
                .notFound, "cannot find the worker binary at \(binary)",
                hint: "Build both products first: swift build -c release (worker sits next to dispatcher)."
            )
        }
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = database.effectiveConnectionString
        environment["SWITCHYARD_EXIT_WITH_PARENT"] = "1"
        environment["SWITCHYARD_LOG_LEVEL"] = environment["SWITCHYARD_LOG_LEVEL"] ?? "warning"
        for (key, value) in extraEnvironment { environment[key] = value }
        return try (0..<count).map { index in
            try ChildProcess.spawn(
                binary, ["--concurrency", String(concurrency), "--id", "\(idPrefix)-\(index + 1)"] + extra,
                environment: environment, standardOutput: .file(log), standardError: .file(log)
            )
        }
    }

    /// Stops workers gracefully (SIGTERM: running jobs finish or go back to the queue) and waits.
    static func stop(_ workers: [ChildProcess]) async {
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { _ = try? await BlockingWork.run { worker.wait() } }
    }
}
