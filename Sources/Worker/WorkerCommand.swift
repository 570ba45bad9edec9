import Dispatch
import Foundation
import Postgres
import QueueModel

/// `worker`: parses the command line, runs a `WorkerService`, and turns SIGTERM/SIGINT into a
/// graceful shutdown.
enum WorkerCommand {
    static let usage = """
        usage: worker [--concurrency N] [--id NAME] [--database-url URL] [options]

        Claims jobs from switchyard.jobs, routes and runs them, and writes each result back once.
        Start as many as the load needs, on any machine that reaches Postgres.

          --concurrency N             jobs run at once (default 16)
          --id NAME                   this worker's name, unique in the fleet (default HOST-PID-XXXX,
                                      XXXX random at each start)
          --database-url URL          default: $DATABASE_URL
          --reserve-interactive P%    share of slots, and of each model's max_concurrency and rate
                                      budget, background work may not take (default 25%)
          --lease DURATION            how long a claim holds a job without a heartbeat (default 30s)
          --heartbeat DURATION        how often leases are renewed (default: a third of the lease)
          --poll-interval DURATION    the slow poll behind LISTEN/NOTIFY (default 1s)
          --poll-only                 never LISTEN (for PgBouncer in transaction mode)
          --shutdown-grace DURATION   on SIGTERM, how long running jobs may finish (default 30s)
          --max-jobs N                claim N jobs, finish them and exit 0, for a supervisor to start
                                      afresh (default: no limit; Foundation's HTTP client leaks about
                                      150 bytes per call: docs/deploy.md)
          --retry-base DURATION       first retry delay, doubling each attempt (default 2s)
          --simulated-latency DURATION
                                      skip routing: answer every job with a built-in simulated model
                                      after this latency (for trying the queue without a catalog)
          --metrics-port PORT         serve Prometheus metrics on http://ADDRESS:PORT/metrics
                                      (0 picks a free port; the log says which)
          --metrics-address ADDRESS   the address to serve metrics on (default 127.0.0.1)
          --version                   print the version and exit
          --help                      print this and exit

        Durations: 500ms, 30s, 5m, 2h, 7d or plain seconds. Logs go to stderr (SWITCHYARD_LOG_LEVEL,
        SWITCHYARD_LOG_FORMAT).
        """

    static func run(_ words: [String]) async -> Int32 {
        let arguments: Arguments
        do {
            arguments = try Arguments(
                words, command: "worker",
                options: [
                    "concurrency", "id", "database-url", "reserve-interactive", "lease", "heartbeat", "poll-interval",
                    "shutdown-grace", "retry-base", "simulated-latency", "metrics-port", "metrics-address", "max-jobs",
                ],
                flags: ["poll-only", "version"], takesWords: false
            )
        } catch {
            printError("error: \(error)")
            return 2
        }
        if arguments.flag("help") {
            print(usage)
            return 0
        }
        if arguments.flag("version") {
            print("worker \(SwitchyardVersion.current)")
            return 0
        }
        do {
            let (configuration, database, simulatedLatency) = try configure(arguments)
            let logger = Logger(label: "worker").with("worker", configuration.identity.id)
            var databaseConfiguration = database
            let postgresLogger = logger
            databaseConfiguration.noticeHandler = { notice in
                postgresLogger.notice("postgres \(notice.severity.lowercased()): \(notice.message)")
            }
            let pool = PostgresPool(
                databaseConfiguration,
                options: .init(maxConnections: configuration.poolSize, threadName: "worker-pg")
            )
            // Routing by the catalog, unless asked to answer everything with the built-in model.
            let fleet = simulatedLatency == nil
                ? FleetState(
                    pool: pool, logger: logger, reloadInterval: configuration.pollOnly ? .seconds(10) : nil,
                    interactiveReserve: configuration.reserveInteractiveShare, worker: configuration.identity.id) : nil
            let metrics = WorkerMetrics()
            let executor: any JobExecutor = if let fleet {
                RoutingExecutor(
                    fleet: fleet,
                    // Each worker its own simulated random stream: with one shared salt, every
                    // worker's n-th call to a model would fail or succeed together.
                    providers: ProviderFactory(
                        concurrency: configuration.concurrency,
                        simulationSalt: StableHash.hash(configuration.identity.id)
                    ),
                    worker: configuration.identity.id, logger: logger, metrics: metrics
                )
            } else {
                SimulatedExecutor(latency: simulatedLatency ?? .zero)
            }
            let service = WorkerService(
                configuration: configuration, pool: pool, executor: executor, fleet: fleet, logger: logger,
                metrics: metrics
            )
            // Signals are taken before the metrics server says where it serves: a supervisor (or a
            // test) that stops the worker once it is up must not send its SIGTERM into nothing.
            let signals = SignalHandler(
                onSignal: { service.shutdown() },
                onSecondSignal: {
                    logger.error(
                        "second signal: exiting now; the jobs still running keep their leases until they expire "
                            + "and are rescued", ["in_flight": service.inFlightCount, "lease_s": configuration.lease.seconds])
                },
                onCopy: {
                    logger.notice(
                        "a signal within a second of the first, taken for a copy of it; one a second or more after "
                            + "the first exits at once")
                })
            defer { signals.cancel() }
            let metricsServer = try serveMetrics(arguments, metrics: metrics, logger: logger)
            defer { metricsServer?.stop() }
            if ProcessInfo.processInfo.environment["SWITCHYARD_EXIT_WITH_PARENT"] == "1" {
                watchParent { service.shutdown() }
            }
            try await service.run()
            await pool.close()
            return 0
        } catch let error as QueueError where error.code == .invalidInput {
            stopped("error: \(error)")
            return 2
        } catch {
            stopped(failureText(error))
            return 1
        }
    }

    /// Says why the worker stopped: as text, or with JSON logs as a JSON line (an upgrade
    /// rehearsal's log pipeline got the one line that mattered, the schema refusal, as plain text).
    static func stopped(_ text: String) {
        let logger = Logger(label: "worker")
        guard logger.format == .json else { return printError(text) }
        logger.error("worker stopped", ["error": text.hasPrefix("error: ") ? String(text.dropFirst(7)) : text])
    }

    /// What the worker says when it stops on `error`: the error, and for a statement cancelled by
    /// the database's own `statement_timeout` (a review set 2 ms: the worker stopped with the bare
    /// server message, naming neither the setting nor where it comes from) where that is set; for a
    /// refusal of its role (an operator's walkthrough started one with an application's URL:
    /// "permission denied for table workers", and no more), which role it needs.
    static func failureText(_ error: any Error) -> String {
        if let error = error as? PostgresError, error.sqlState == .insufficientPrivilege, error.hint == nil {
            return "error: \(error)\nhint: a worker's role must be a member of switchyard_worker "
                + "(GRANT switchyard_worker TO <the role in DATABASE_URL>; docs/security.md)"
        }
        guard let error = error as? PostgresError, error.sqlState == .queryCanceled, error.hint == nil else {
            return "error: \(error)"
        }
        return "error: \(error)\nhint: a statement ran past the statement_timeout this database or role sets "
            + "(SHOW statement_timeout); the worker's statements need more: "
            + "ALTER ROLE <worker role> SET statement_timeout = 0, or a larger value"
    }

    /// Starts the `/metrics` responder when `--metrics-port` is given.
    static func serveMetrics(_ arguments: Arguments, metrics: WorkerMetrics, logger: Logger) throws -> MetricsServer? {
        guard arguments.value("metrics-port") != nil else { return nil }
        let port = try arguments.integer("metrics-port", default: 0, range: 0...65_535)
        let server = try MetricsServer(
            address: arguments.value("metrics-address") ?? "127.0.0.1", port: port, render: metrics.render
        )
        server.start()
        let url = metricsURL(address: server.address, port: server.port)
        logger.notice("serving metrics", ["address": server.address, "port": server.port, "url": url])
        return server
    }

    /// The URL the metrics are served at; an IPv6 address goes in brackets (`http://[::1]:9464/metrics`).
    static func metricsURL(address: String, port: Int) -> String {
        "http://\(address.contains(":") ? "[\(address)]" : address):\(port)/metrics"
    }

    static func configure(_ arguments: Arguments) throws -> (WorkerConfiguration, PostgresConfiguration, Duration?) {
        if arguments.value("metrics-address") != nil && arguments.value("metrics-port") == nil {
            throw QueueError(
                .invalidInput, "--metrics-address needs --metrics-port: without it no metrics are served",
                hint: "Add --metrics-port 9464 (or 0 for a free port).")
        }
        let concurrency = try arguments.integer("concurrency", default: 16, range: 1...10_000)
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "worker"
        let pid = getpid()
        // HOST-PID alone repeats across containers that share the host's name (host networking)
        // and all run as PID 1; the id is the lease fence, so two workers must never share it.
        let suffix = String(format: "%04x", UInt16.random(in: 0...UInt16.max))
        // Shown in status tables and terminals: no control characters (escape sequences, newlines).
        if let id = arguments.value("id") {
            let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@/".unicodeScalars)
            guard (1...100).contains(id.unicodeScalars.count), id.unicodeScalars.allSatisfy(allowed.contains) else {
                throw QueueError(
                    .invalidInput, "--id must be 1 to 100 ASCII letters, digits, '.', '_', '-', ':', '@' or '/', got \(id.debugDescription)",
                    hint: "Name each worker uniquely, e.g. --id web-3 or --id \(host)-1.")
            }
        }
        let identity = WorkerIdentity(
            id: arguments.value("id") ?? "\(host)-\(pid)-\(suffix)", concurrency: concurrency, hostname: host,
            pid: pid, version: SwitchyardVersion.current
        )
        var share = 0.25
        if let text = arguments.value("reserve-interactive") {
            let number = Double(text.hasSuffix("%") ? String(text.dropLast()) : text)
            guard let number, number >= 0, number <= 100 else {
                throw QueueError(.invalidInput, "--reserve-interactive must be a percentage like 25% (got \"\(text)\")")
            }
            // A share written as a fraction: 0.5 read as 0.5% kept no slot of 16 (an operator's
            // walkthrough meant half).
            if !text.hasSuffix("%"), number > 0, number < 1 {
                throw QueueError(
                    .invalidInput, "--reserve-interactive is a percentage: \(text) would be \(text)%, not a fraction",
                    hint: "write \(text)% for that, or e.g. \(Int((number * 100).rounded()))% for \(text) of the slots")
            }
            share = number / 100
        }
        var configuration = WorkerConfiguration(identity: identity, reserveInteractiveShare: share)
        configuration.lease = try arguments.duration("lease", default: .seconds(30))
        guard configuration.lease >= .milliseconds(200) else {
            throw QueueError(.invalidInput, "--lease must be at least 200ms")
        }
        // The database holds a lease to an hour (sql/0086): heartbeats renew it, so a long job
        // needs no long lease.
        guard configuration.lease <= .seconds(3600) else {
            throw QueueError(
                .invalidInput, "--lease must be at most 1h",
                hint: "heartbeats renew a lease while its job runs, so a job of any length needs no longer one")
        }
        // 0 beat as fast as the database answered: an idle worker's 780 heartbeats a second.
        configuration.heartbeatInterval = try arguments.duration(
            "heartbeat", default: configuration.lease / 3, minimum: .milliseconds(50))
        guard configuration.heartbeatInterval < configuration.lease else {
            throw QueueError(.invalidInput, "--heartbeat must be shorter than --lease, or leases expire between beats")
        }
        // A poll every few microseconds would keep a core busy querying an empty queue.
        configuration.pollInterval = try arguments.duration("poll-interval", default: .seconds(1), minimum: .milliseconds(10))
        configuration.pollOnly = arguments.flag("poll-only")
        configuration.shutdownGrace = try arguments.duration("shutdown-grace", default: .seconds(30))
        if arguments.value("max-jobs") != nil {
            configuration.maxJobs = try arguments.integer("max-jobs", default: 0, range: 1...Int.max)
        }
        configuration.retryPolicy.base = try arguments.duration("retry-base", default: .seconds(2))
        configuration.housekeepingInterval = min(.seconds(2), configuration.lease / 2)
        configuration.poolSize = min(8, max(3, concurrency / 32 + 3))
        var database = try Database.configuration(arguments, applicationName: "switchyard-worker \(identity.id)")
        database.tcpUserTimeoutMilliseconds = WorkerConfiguration.tcpUserTimeoutMilliseconds
        let simulatedLatency = arguments.value("simulated-latency") == nil
            ? nil : try arguments.duration("simulated-latency", default: .zero)
        return (configuration, database, simulatedLatency)
    }
}

/// Calls `onExit` when the process that started this one exits (for workers started by the demo
/// or a test: they must not outlive it, even when it is killed with SIGKILL).
func watchParent(onExit: @escaping @Sendable () -> Void) {
    let parent = getppid()
    Task.detached {
        while getppid() == parent {
            try? await Task.sleep(for: .milliseconds(500))
        }
        onExit()
    }
}

func printError(_ text: String) {
    StandardStream.error.write(text + "\n")
}
