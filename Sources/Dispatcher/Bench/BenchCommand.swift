import Foundation
import Postgres
import QueueModel

/// What every benchmark scenario gets: the database and how to run the C baselines.
struct BenchContext: Sendable {
    let configuration: PostgresConfiguration
    /// The private cluster the run started, if it started one.
    let cluster: PrivatePostgres?

    /// Runs `pgbench` (libpq, no Swift) with a custom script on one connection.
    /// - Returns: transactions per second, or nil when pgbench is not installed.
    func pgbench(script: String, seconds: Int, extendedProtocol: Bool = false) async throws -> Double? {
        guard let pgbench = Self.findPgbench() else { return nil }
        let file = FileManager.default.temporaryDirectory.appending(path: "switchyard-bench-\(UUID().uuidString).sql")
        try script.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        var arguments = ["-n", "-c", "1", "-T", String(seconds), "-f", file.path]
        if extendedProtocol { arguments += ["-M", "extended"] }
        arguments.append(configuration.connectionString)
        if let database = configuration.databaseOverride { arguments += ["-d", database] }
        let finalArguments = arguments
        let output = try await BlockingWork.run { try ChildProcess.run(pgbench, finalArguments) }
        guard output.status == 0 else {
            throw QueueError(.database, "pgbench failed: \(output.output.suffix(500))")
        }
        // "tps = 12345.678901 (without initial connection time)"
        let line = output.output.split(separator: "\n").first { $0.hasPrefix("tps = ") }
        return line.flatMap { Double($0.dropFirst(6).prefix { $0 != " " }) }
    }

    static func findPgbench() -> String? {
        if let onPath = try? ChildProcess.resolve("pgbench") { return onPath }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            let path = "/usr/lib/postgresql/\(version)/bin/pgbench"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }
}

/// `dispatcher bench [SCENARIO…]`.
enum BenchCommand {
    static let scenarios = ["client"]

    static let usage = """
        usage: dispatcher bench [SCENARIO…] [--json FILE] [--database-url URL]

        Measures speed and prints a table; every figure is shown next to a baseline measured in the
        same run (these machines are shared and noisy: compare ratios, not absolute figures).
        Run it from a release build: swift build -c release && .build/release/dispatcher bench

        scenarios (default: all):
          client     SELECT 1 round trips and pipelined inserts, against pgbench

        Without DATABASE_URL or --database-url it starts a private Postgres (fsync off) and removes
        it afterwards.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(words, command: "dispatcher bench", options: ["database-url", "json"])
        if arguments.flag("help") {
            print(usage)
            return 0
        }
        let chosen = arguments.positionals.isEmpty ? scenarios : arguments.positionals
        if let unknown = chosen.first(where: { !scenarios.contains($0) }) {
            throw QueueError(
                .invalidInput, "unknown benchmark scenario \"\(unknown)\"",
                hint: "Choose from: \(scenarios.joined(separator: ", "))."
            )
        }
        #if DEBUG
        printError("warning: this is a debug build; figures will be far below a release build's.")
        #endif
        var cluster: PrivatePostgres?
        var configuration: PostgresConfiguration
        if let given = try Database.optionalConfiguration(arguments) {
            configuration = given
        } else {
            let started = try await PrivatePostgres.start()
            cluster = started
            configuration = started.configuration()
        }
        configuration.applicationName = "switchyard-bench"
        let context = BenchContext(configuration: configuration, cluster: cluster)
        var report = BenchReport(database: configuration.target)
        print("benchmarking against \(configuration.target) on \(report.machine.cores) cores (\(report.machine.cpu))")
        do {
            for scenario in chosen {
                switch scenario {
                case "client": try await ClientBenchmarks.run(context, report: &report)
                default: break
                }
            }
        } catch {
            try? await cluster?.stop()
            throw error
        }
        try await cluster?.stop()
        if let path = arguments.value("json") {
            try report.writeJSON(to: path)
            print("wrote \(path)")
        }
        return 0
    }
}
