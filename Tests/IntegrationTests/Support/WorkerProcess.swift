import Foundation
import Postgres
import Testing

/// A real `worker` process, built alongside the tests, for tests that need several processes,
/// a SIGKILL, or a SIGTERM.
struct WorkerProcess {
    let child: ChildProcess
    let logFile: String

    /// The directory of the test binary, where SwiftPM also puts `worker` and `dispatcher`.
    static var productsDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    static func binary(_ name: String) -> String {
        productsDirectory.appending(path: name).path
    }

    /// Starts a worker against `configuration`'s database. It exits by itself if this process dies.
    static func start(
        _ configuration: PostgresConfiguration, id: String, arguments: [String] = [],
        environment: [String: String] = [:]
    ) throws -> WorkerProcess {
        let logFile = Scratch.path(id, suffix: ".log").path
        var processEnvironment = ProcessInfo.processInfo.environment
        processEnvironment["DATABASE_URL"] = databaseURL(configuration)
        processEnvironment["SWITCHYARD_EXIT_WITH_PARENT"] = "1"
        for (key, value) in environment { processEnvironment[key] = value }
        let child = try ChildProcess.spawn(
            binary("worker"), ["--id", id] + arguments, environment: processEnvironment,
            standardOutput: .file(logFile), standardError: .file(logFile)
        )
        return WorkerProcess(child: child, logFile: logFile)
    }

    /// A connection string another process can use for the same database.
    static func databaseURL(_ configuration: PostgresConfiguration) -> String {
        configuration.effectiveConnectionString
    }

    func terminate() { child.signal(SIGTERM) }
    func kill() { child.signal(SIGKILL) }

    /// Waits for the process to exit and returns its status. One still running after `limit` is
    /// recorded as an issue with the end of its log, and killed: a worker that never stopped hung
    /// a CI run for 13 minutes with nothing to say which (a time limit cannot end a test blocked in
    /// `waitpid`).
    func wait(limit: Duration = .seconds(180)) async -> Int32 {
        let child = child
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while clock.now < deadline {
            if let status = child.poll() { return status }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let tail = String(log.suffix(4000))
        Issue.record("the worker logging to \(logFile) had not exited \(limit) after the wait began; killed. Its log ends:\n\(tail)")
        child.signal(SIGKILL)
        return (try? await BlockingWork.run { child.wait() }) ?? -1
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }
}
