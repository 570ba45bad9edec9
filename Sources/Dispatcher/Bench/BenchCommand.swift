import Foundation
import Postgres
import QueueModel

/// What every benchmark scenario gets: the database and how to run the C baselines.
struct BenchContext: Sendable {
    let configuration: PostgresConfiguration
    /// The private cluster the run started, if it started one.
    let cluster: PrivatePostgres?

    /// The same context on another database of the same server.
    func on(_ database: PostgresConfiguration) -> BenchContext {
        BenchContext(configuration: database, cluster: cluster)
    }

    /// Runs `pgbench` (libpq, no Swift) with a custom script, for a time or a number of
    /// transactions per client.
    /// - Returns: transactions per second, or nil when pgbench is not installed.
    @discardableResult
    func pgbench(
        script: String, seconds: Int? = nil, clients: Int = 1, transactions: Int? = nil, extendedProtocol: Bool = false
    ) async throws -> Double? {
        guard let pgbench = Self.findPgbench() else { return nil }
        let file = FileManager.default.temporaryDirectory.appending(path: "switchyard-bench-\(UUID().uuidString).sql")
        try script.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        var arguments = ["-n", "-c", String(clients), "-j", String(clients), "-f", file.path]
        if let transactions { arguments += ["-t", String(transactions)] } else { arguments += ["-T", String(seconds ?? 5)] }
        if extendedProtocol { arguments += ["-M", "extended"] }
        arguments.append(configuration.effectiveConnectionString)
        let finalArguments = arguments
        let output = try await BlockingWork.run { try ChildProcess.run(pgbench, finalArguments) }
        guard output.status == 0 else {
            throw QueueError(.database, "pgbench failed: \(output.output.prefix(1500))")
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
    static let scenarios = [
        "client", "routing", "throughput", "latency", "isolation", "tenants", "bloat", "backlog", "scale", "memory",
    ]

    static let usage = """
        usage: dispatcher bench [SCENARIO…] [--json FILE] [--database-url URL]

        Measures speed and prints a table; every figure is shown next to a baseline measured in the
        same run (these machines are shared and noisy: compare ratios, not absolute figures).
        Run it from a release build: swift build -c release && .build/release/dispatcher bench

        scenarios (default: all):
          client     SELECT 1 round trips and pipelined inserts, against pgbench
          routing    routing decisions per second and per-decision latency, 20-model catalog
          throughput enqueue (single-row submits, bulk CLI) and drain (worker processes, routing,
                     write-back) against the same cycle as raw SQL (the ceiling), three rounds
                     of each, alternated
          latency    pickup latency at idle and under load, LISTEN/NOTIFY and --poll-only
          isolation  interactive queue wait with 100,000 background jobs queued and every slot busy
          tenants    five tenants' queue wait behind one tenant's 2,000 slow jobs, with the claim's
                     shares among tenants and without
          bloat      drain throughput with a snapshot held open, against without
          backlog    drain throughput with 1,000,000 queued against 10,000, seven rounds of
                     each, alternated
          scale      drain throughput for 1, 2, 4 and 8 worker processes
          memory     a worker's peak RSS at concurrency 256

        options:
          --jobs N          jobs per run (default 100000)
          --workers N       worker processes (default 2)
          --concurrency N   per worker (default 64)
          --hold DURATION   the longest bloat holds its snapshot (default 2m; it lets go when
                            its drain ends)
          --backlog N       the large queue of backlog (default 1000000)
          --decisions N     routing decisions timed (default 200000; a small count keeps a run
                            under valgrind --tool=callgrind short)

        Without DATABASE_URL or --database-url it starts a private Postgres (fsync off) and removes
        it afterwards.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher bench",
            options: ["database-url", "json", "jobs", "workers", "concurrency", "hold", "backlog", "decisions"]
        )
        let jobs = try arguments.integer("jobs", default: 100_000, range: 1_000...10_000_000)
        let workers = try arguments.integer("workers", default: 2, range: 1...64)
        let concurrency = try arguments.integer("concurrency", default: 64, range: 1...10_000)
        let hold = try arguments.duration("hold", default: .seconds(120))
        let backlog = try arguments.integer("backlog", default: 1_000_000, range: 10_000...100_000_000)
        let decisions = try arguments.integer("decisions", default: 200_000, range: 1_000...100_000_000)
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
        // Checked first: a path found unwritable after a run of many minutes lost its figures.
        if let path = arguments.value("json") { try OutputFile.check(path) }
        #if DEBUG
        printError("warning: this is a debug build; figures will be far below a release build's.")
        #endif
        var cluster: PrivatePostgres?
        var configuration: PostgresConfiguration
        if let given = try Database.optionalConfiguration(arguments) {
            configuration = given
        } else {
            // Like a production server: checkpoints spread out, autovacuum on (the bloat scenario
            // depends on it); durability off, as a throwaway cluster affords (both sides of every
            // comparison run on it).
            var settings = PrivatePostgres.fastSettings
            settings["max_wal_size"] = "4GB"
            settings["autovacuum_naptime"] = "5s"
            let started = try await PrivatePostgres.start(settings: settings)
            cluster = started
            configuration = started.configuration()
        }
        configuration.applicationName = "switchyard-bench"
        let context = BenchContext(configuration: configuration, cluster: cluster)
        let fleet = BenchFleet(context: context)
        let queue = QueueBenchmarks(fleet: fleet, jobs: jobs, workers: workers, concurrency: concurrency)
        let latency = LatencyBenchmarks(fleet: fleet, concurrency: concurrency)
        var report = BenchReport(database: configuration.target)
        print("benchmarking against \(configuration.target) on \(report.machine.cores) cores (\(report.machine.cpu))")
        do {
            for scenario in chosen {
                switch scenario {
                case "client": try await ClientBenchmarks.run(context, report: &report)
                case "routing": RoutingBenchmarks.run(report: &report, decisions: decisions)
                case "throughput": try await queue.throughput(report: &report)
                case "latency": try await latency.latency(report: &report)
                case "isolation": try await latency.isolation(report: &report)
                case "tenants": try await latency.tenants(report: &report)
                case "bloat": try await queue.bloat(report: &report, hold: hold)
                case "backlog": try await queue.backlog(report: &report, large: backlog)
                case "scale": try await queue.scale(report: &report)
                case "memory": try await queue.memory(report: &report)
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
