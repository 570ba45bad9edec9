import Foundation
import Postgres
import QueueModel
import Synchronization

/// `dispatcher demo`: the whole product on embedded defaults.
enum DemoCommand {
    static let usage = """
        usage: dispatcher demo [--jobs N] [--workers N] [--catalog FILE] [--keep] [--database-url URL]

        Runs Switchyard end to end with nothing to set up and no API keys: a private Postgres
        (unless DATABASE_URL or --database-url names one, which must hold no Switchyard jobs,
        results or catalog yet: the demo replaces the catalog), the schema, a simulated catalog modelled
        on public list prices (premium, standard, cheap and open-source tiers; one model with
        off-peak prices), real worker processes, and a mixed workload — interactive chat,
        conversations that share affinity keys, a background batch — during which the default
        rule's primary model starts failing. Then it prints what happened: throughput, latency
        per tier, fallbacks, affinity kept, cost against running everything on the premium model.

        Ctrl-C stops everything cleanly. Nothing is left running or on disk, unless --keep: then
        the private Postgres stays up for psql until Ctrl-C.

          --jobs N        jobs to submit, 50 to 1000000 (default 1000)
          --workers N     worker processes, 1 to 32 (default 2)
          --catalog FILE  the simulated catalog (default examples/catalog.json, found in the working
                          directory or the repository this binary was built in)
          --keep          keep the database up after the summary, until Ctrl-C
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher demo", options: ["database-url", "jobs", "workers", "catalog"], flags: ["keep"],
            takesWords: false
        )
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        let total = try arguments.integer("jobs", default: 1000, range: 50...1_000_000)
        let workerCount = try arguments.integer("workers", default: 2, range: 1...32)
        let catalogPath = arguments.value("catalog") ?? Self.exampleFile("examples/catalog.json")
        guard let catalogData = FileManager.default.contents(atPath: catalogPath) else {
            throw QueueError(
                .invalidInput, "cannot read the demo catalog at \(catalogPath)",
                hint: "Run the demo from the repository (examples/catalog.json), or pass --catalog FILE."
            )
        }

        let interrupted = Mutex(false)
        let signals = SignalHandler {
            interrupted.withLock { $0 = true }
            printError("\nstopping: workers first, then the database…")
        }
        defer { signals.cancel() }
        let scratch = FileManager.default.temporaryDirectory.appending(path: "switchyard-demo-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }

        let given = try Database.optionalConfiguration(arguments)
        let workerNoun = workerCount == 1 ? "1 worker" : "\(workerCount) workers"
        print("Switchyard demo — \(given == nil ? "a private Postgres" : "your database"), simulated models, \(workerNoun), no API keys\n")
        var cluster: PrivatePostgres?
        let configuration: PostgresConfiguration
        if let given {
            configuration = given
            print("[1/5] using \(given.target)")
        } else {
            print("[1/5] starting a private Postgres…", terminator: "")
            let started: PrivatePostgres
            do {
                started = try await PrivatePostgres.start()
            } catch where interrupted.withLock({ $0 }) {
                // Ctrl-C reached initdb or the server too: its complaint is not the demo's error.
                print("")
                return 130
            }
            cluster = started
            configuration = started.configuration()
            print(" port \(started.port), data in \(started.root.path) (removed at the end)")
        }
        var workers: [ChildProcess] = []
        let pool = PostgresPool(configuration, options: .init(maxConnections: 4))
        func cleanUp() async {
            await LocalWorkers.stop(workers)
            await pool.close()
            try? await cluster?.stop()
        }
        do {
            let applied = try await Migrator().migrate(pool)
            if cluster == nil {
                try await ScratchDatabase.requireEmpty(pool, target: configuration.target, for: "the demo")
            }
            let failing = "gpt-4o-mini"
            let outageFile = scratch.appending(path: "\(failing)-down").path
            let catalog = try DemoWorkload.catalog(from: catalogData, outageFile: outageFile, failing: failing)
            let imported = try await CatalogStore(pool: pool).importDocument(catalog)
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.001", in: pool)
            let tiers = Set(imported.catalog.models.map(\.tier)).sorted().joined(separator: ", ")
            print(
                "[2/5] schema migrated (\(applied.count) migrations); catalog: \(imported.catalog.models.count) models "
                    + "(\(tiers)), \(imported.catalog.rules.count) rules; background ceiling $0.001/1K"
            )
            workers = try LocalWorkers.start(
                workerCount, concurrency: 16, database: configuration, log: scratch.appending(path: "workers.log").path
            )
            print("[3/5] started \(workerCount == 1 ? "1 worker process" : "\(workerCount) worker processes"), 16 slots each")

            let items = DemoWorkload.items(total: total)
            let counts = Dictionary(grouping: items, by: \.kind).mapValues(\.count)
            print(
                "[4/5] submitting \(items.count) jobs: \(counts["interactive"] ?? 0) interactive questions, "
                    + "\(counts["conversation"] ?? 0) conversation turns (affinity keys), "
                    + "\(counts["background"] ?? 0) background batch jobs"
            )
            try await drive(items, pool: pool, outageFile: outageFile, failing: failing, interrupted: interrupted)
            if interrupted.withLock({ $0 }) {
                await cleanUp()
                return 130
            }
            print("[5/5] summary\n")
            let premium = imported.catalog.models.max {
                Router.averagePricePer1K($0) < Router.averagePricePer1K($1)
            }!
            print(try await DemoSummary(pool: pool, failing: failing, premium: premium).render())
            if arguments.flag("keep") {
                // The outage was the demo's: a worker started on the kept database met it again
                // (a walkthrough's first call there was a simulated 503).
                try? FileManager.default.removeItem(atPath: outageFile)
                // This binary as another terminal finds it (a path from where the demo started).
                let dispatcher =
                    CommandLine.arguments.first.map {
                        $0.contains("/") ? URL(fileURLWithPath: $0).standardizedFileURL.path : "dispatcher"
                    } ?? "dispatcher"
                if given != nil {
                    // Not its URL: it may hold the password. The database is the user's, and stays.
                    print(
                        "\nthe demo's catalog, jobs and results stay in your database (\(configuration.target)); "
                            + "\(failing) answers again there; try: \(dispatcher) status")
                } else {
                    print(
                        "\nthe database stays up until Ctrl-C here (\(failing) answers again; its breaker closes at "
                            + "a worker's next probe); in another terminal:")
                    print("  export DATABASE_URL='\(configuration.effectiveConnectionString)'")
                    print("  \(dispatcher) status   (or top, or psql \"$DATABASE_URL\")")
                    fflush(nil)  // before waiting, also when stdout is a pipe or a file
                    await LocalWorkers.stop(workers)
                    workers = []
                    while !interrupted.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(200)) }
                }
            }
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
        return ExitCode.success
    }

    /// Submits the jobs at a steady pace, fails the primary model halfway, and shows progress
    /// until every job has finished.
    static func drive(
        _ items: [DemoWorkload.Item], pool: PostgresPool, outageFile: String, failing: String,
        interrupted: borrowing Mutex<Bool>
    ) async throws {
        let store = QueueStore(pool: pool)
        let live = isatty(1) == 1
        let clock = ContinuousClock()
        let started = clock.now
        var submitted = 0
        var outageStarted = false
        var lastPrint = clock.now
        let batch = 20
        while !interrupted.withLock({ $0 }) {
            if submitted < items.count {
                let next = items[submitted..<min(items.count, submitted + batch)].map(\.submission)
                _ = try await store.submit(batch: next)
                submitted += next.count
            }
            let row = try await pool.query(
                """
                SELECT (SELECT count(*) FROM switchyard.results) AS done,
                       (SELECT count(*) FROM switchyard.jobs WHERE lease_owner IS NOT NULL) AS running,
                       (SELECT count(*) FROM switchyard.results WHERE switchyard.fell_back(attempts)) AS fallbacks
                """
            ).first
            let done = try row?.decode("done", as: Int.self) ?? 0
            if !outageStarted && done >= items.count / 2 {
                outageStarted = true
                _ = FileManager.default.createFile(atPath: outageFile, contents: nil)
                let line = "!! halfway: \(failing), the default rule's primary, starts failing (HTTP 503)"
                print(live ? "\r\u{1B}[2K      \(line)" : "      \(line)")
            }
            let elapsed = (clock.now - started).seconds
            let progress = "▸ \(done)/\(items.count) done · \(String(format: "%.0f", Double(done) / max(elapsed, 0.1))) jobs/s"
                + " · \(try row?.decode("running", as: Int.self) ?? 0) running · "
                + "\(try row?.decode("fallbacks", as: Int.self) ?? 0) fell back"
            if live {
                print("\r\u{1B}[2K      \(progress)", terminator: "")
                fflush(nil)  // every output stream; `stdout` itself is a global Swift 6 will not touch
            } else if clock.now - lastPrint >= .seconds(2) || done == items.count {
                print("      \(progress)")
                lastPrint = clock.now
            }
            if done >= items.count { break }
            try await Task.sleep(for: .milliseconds(submitted < items.count ? 150 : 250))
        }
        if live { print("") }
    }

    /// A file of the repository (`examples/catalog.json`) from the working directory, else from
    /// the repository this binary was built in (…/.build/<config>/dispatcher).
    static func exampleFile(_ relative: String) -> String {
        if FileManager.default.fileExists(atPath: relative) { return relative }
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = binary.deletingLastPathComponent()
        for _ in 0..<4 {
            directory = directory.deletingLastPathComponent()
            let candidate = directory.appending(path: relative).path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return relative
    }
}
