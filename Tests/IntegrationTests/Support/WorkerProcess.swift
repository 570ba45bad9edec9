import Foundation
import Postgres

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

    /// Waits for the process to exit and returns its status.
    func wait() async -> Int32 {
        let child = child
        return (try? await BlockingWork.run { child.wait() }) ?? -1
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }
}
