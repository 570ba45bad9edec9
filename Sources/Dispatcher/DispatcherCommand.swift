import Foundation
import Postgres
import QueueModel

/// `dispatcher`: the operator's and the shell user's command.
enum DispatcherCommand {
    static let usage = """
        usage: dispatcher COMMAND [OPTIONS]

        commands:
          demo       the whole product on a private Postgres and simulated models (no setup, no keys)
          submit     submit a job (--prompt, --request FILE) or many (--file JOBS.jsonl)
          wait       wait for jobs to finish and print their outcomes
          result     print a finished job's result
          cancel     cancel jobs (queued: at once; running: at the next heartbeat)
          retry      submit a failed, cancelled or expired job again
          prune      drop results older than a given age (whole partitions)
          background pause, resume or drain background work; its price ceiling and backlog
          tenants    each tenant's jobs and spending; pause a tenant, or give it a budget per day or month
          simulate   a month of traffic in simulated time: what the background price policy saves
          migrate    apply schema migrations to DATABASE_URL (--status to only show them)
          models     the model catalog and routing rules: import FILE.json, list, prices, export, disable, enable
          route      explain the routing plan for a request (--explain), without running it
          status     one screen about the fleet: throughput, latency, queue, workers, models, alerts
          top        the status screen, redrawn live until q or Ctrl-C
          report     write a self-contained HTML report with charts (--html FILE)
          feedback   rate a finished job's answer (ID SCORE); ratings feed best_quality routing
          bench      measure throughput and latency against baselines run alongside

        Every command takes --database-url URL (default: $DATABASE_URL) and --help, after the
        command's name. dispatcher --version prints the version.
        """

    /// Runs a command line and returns the process exit status.
    static func run(_ arguments: [String]) async -> Int32 {
        // `dispatcher help submit` is `dispatcher submit --help`.
        if arguments.count == 2, arguments[0] == "help" { return await run([arguments[1], "--help"]) }
        guard let command = arguments.first, command != "--help", command != "-h", command != "help" else {
            print(usage)
            return arguments.isEmpty ? 2 : 0
        }
        if command == "--version" || command == "version" {
            print("dispatcher \(SwitchyardVersion.current)")
            return 0
        }
        if command.hasPrefix("-"), let meant = CatalogProblem.suggestion(for: command, among: ["--version", "--help"]) {
            printError("error: unknown option \(command) (did you mean \(meant)?)")
            return 2
        }
        if command.hasPrefix("-") {
            printError(
                "error: \(command) comes after a command: dispatcher COMMAND \(command) …\n"
                    + "hint: e.g. dispatcher status --database-url URL; dispatcher --help lists the commands")
            return 2
        }
        let rest = Array(arguments.dropFirst())
        // Says (once, on stderr) if SWITCHYARD_LOG_LEVEL or SWITCHYARD_LOG_FORMAT is not one it knows.
        _ = Logger(label: "dispatcher")
        do {
            switch command {
            case "migrate": return try await MigrateCommand.run(rest)
            case "models": return try await ModelsCommand.run(rest)
            case "route": return try await RouteCommand.run(rest)
            case "submit": return try await SubmitCommand.run(rest)
            case "wait": return try await JobCommands.wait(rest)
            case "result": return try await JobCommands.result(rest)
            case "cancel": return try await JobCommands.cancel(rest)
            case "retry": return try await JobCommands.retry(rest)
            case "prune": return try await JobCommands.prune(rest)
            case "background": return try await BackgroundCommand.run(rest)
            case "tenants": return try await TenantsCommand.run(rest)
            case "simulate": return try await SimulateCommand.run(rest)
            case "demo": return try await DemoCommand.run(rest)
            case "bench": return try await BenchCommand.run(rest)
            case "status": return try await StatusCommand.run(rest)
            case "top": return try await TopCommand.run(rest)
            case "report": return try await ReportCommand.run(rest)
            case "feedback": return try await FeedbackCommand.run(rest)
            default:
                printError("error: unknown command \"\(command)\"\n\n\(usage)")
                return 2
            }
        } catch var error as QueueError where error.code == .invalidInput && !error.isRoleRefusal {
            // The server's hint for a role that must name its tenant is SQL's; on the command line
            // it is --tenant (an operator's walkthrough read "SET switchyard.tenant …" after submit).
            if error.hint?.hasPrefix("SET switchyard.tenant = 'name'") == true {
                error.hint = "give the job's tenant: --tenant NAME"
            }
            printError("error: \(error)")
            return 2
        } catch {
            printError(
                "error: \(error)"
                    + (Self.lacksSchema(error) ? Self.migrateHint : Self.privilegeHint(error) + Self.readOnlyHint(error)))
            return 1
        }
    }

    /// For a refusal the server gave without a hint of its own (`permission denied for table
    /// models`): which roles may do what.
    static func privilegeHint(_ error: any Error) -> String {
        let refused =
            (error as? PostgresError).map { $0.sqlState == .insufficientPrivilege && $0.hint == nil }
            ?? (error as? QueueError)?.isRoleRefusal ?? false
        return refused ? roleHint : ""
    }

    static let roleHint =
        "\nhint: this role may not do that. Operator commands (models, background, tenants pause, resume, "
        + "budget, max-running, max-per-minute and cancel, prune, status, report, top, feedback --list) need a member of switchyard_admin; submit, wait, result, cancel, retry "
        + "and feedback ID SCORE, of switchyard_submitter (docs/security.md)."

    /// For a write the server refused as read-only (`25006`) without a hint of its own: a
    /// failover walkthrough's `submit`, `cancel`, `prune` and `background pause` against a standby
    /// said "cannot execute INSERT in a read-only transaction" and no more.
    static func readOnlyHint(_ error: any Error) -> String {
        let state = (error as? PostgresError)?.sqlState ?? (error as? QueueError)?.sqlState
        let hint = (error as? PostgresError)?.hint ?? (error as? QueueError)?.hint
        return state == .readOnlySQLTransaction && hint == nil ? readOnlyDatabaseHint : ""
    }

    static let readOnlyDatabaseHint =
        "\nhint: the database takes no writes: it is a standby (a replica), or read-only by setting. Run this "
        + "against the primary; with several hosts in DATABASE_URL, add target_session_attrs=read-write to find it."

    static let migrateHint = "\nhint: this database has no Switchyard schema, or an older one: run `dispatcher migrate`."

    /// Whether a command failed because the database lacks the schema or part of it (missing
    /// schema, table, column or function), which `dispatcher migrate` cures.
    static func lacksSchema(_ error: any Error) -> Bool {
        let state = (error as? PostgresError)?.sqlState ?? (error as? QueueError)?.sqlState
        let missing: Set<SQLState> = [SQLState("3F000"), .undefinedTable, .undefinedFunction, SQLState("42703")]
        return state.map(missing.contains) ?? false
    }
}

/// Writes a line to stderr.
func printError(_ text: String) {
    // After what was printed before it: a pipe's stdout is buffered, and a hint written between
    // its blocks split a line of `cancel -`'s output in two.
    fflush(nil)
    StandardStream.error.write(text + "\n")
}
