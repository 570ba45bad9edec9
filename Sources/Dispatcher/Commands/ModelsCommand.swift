import Foundation
import Postgres
import QueueModel

/// `dispatcher models import FILE.json`, `list`, `prices`, `export`, `disable` and `enable`.
enum ModelsCommand {
    static let usage = """
        usage: dispatcher models import FILE.json [--merge] [--dry-run] [--allow-empty] [--json]
               dispatcher models list [--json]
               dispatcher models prices [--at TIME] [--json]
               dispatcher models export [--file FILE]   (JSON, --json or not)
               dispatcher models disable NAME… [--force] [--json]
               dispatcher models enable NAME… [--json]

        import   validates a catalog document (a "models" section and/or "routing_rules") and loads
                 it in one transaction, then prints what changed. Every problem is listed at once,
                 with its path in the file; nothing is written unless all is well. Workers reload
                 the catalog on their own (NOTIFY switchyard_catalog).

                 A section the file has is the whole truth for its kind: models (or rules) the file
                 does not list are removed, as with a LiteLLM or Portkey config. A section the file
                 lacks is left alone, so a rules-only file never removes models.

                   --merge        only add and update; remove nothing
                   --dry-run      validate and show what would change; write nothing
                   --allow-empty  let an empty section remove every model (or every rule), which
                                  is refused without it
                   FILE           a path, or - for stdin

        list     the catalog with live health (breaker state, latency EWMA and P95) and the rules.

        prices   each model's list price and its price now (or --at an ISO 8601 time, or a
                 duration from now like 8h): which off-peak window is open, and when the next opens.

        export   the catalog as an import document (stdout, or --file FILE): edit it and import it
                 back, keep it in version control, or copy a catalog to another database.

        disable  takes models out of every plan now (the catalog's "enabled": false), without
                 editing a document; enable puts them back. Workers reload the catalog at once;
                 calls already made finish. Disabling a rule's last enabled model is refused
                 (its jobs would fail as unroutable) unless --force.

          --json   machine-readable output

        Exit status: 0 done; 2 invalid document or usage (every problem listed); 1 other failures.
        See examples/catalog.json for every field.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher models", options: ["database-url", "at", "file"],
            flags: ["merge", "dry-run", "allow-empty", "json", "force"]
        )
        guard let action = arguments.positionals.first, !arguments.flag("help") else {
            print(usage)
            return arguments.flag("help") ? 0 : 2
        }
        try refuseOthersOptions(arguments, action: action)
        switch action {
        case "import":
            guard arguments.positionals.count == 2 else {
                throw QueueError(
                    .invalidInput, "dispatcher models import takes one file", hint: "Run `dispatcher models --help`.")
            }
            return try await importFile(arguments.positionals[1], arguments: arguments)
        case "list":
            return try await list(arguments)
        case "prices":
            return try await PriceListing.run(arguments)
        case "export":
            return try await export(arguments)
        case "disable", "enable":
            return try await setEnabled(action == "enable", arguments: arguments)
        default:
            throw QueueError(
                .invalidInput, "unknown models command \"\(action)\"",
                hint: "Use `dispatcher models import FILE`, `list`, `prices`, `export`, `disable NAME` or `enable NAME`."
            )
        }
    }

    /// The options each command takes: one given to another (`export --dry-run` wrote its file,
    /// `list --file x.json` wrote none) was taken and ignored.
    static let optionsByCommand: [String: (options: [String], flags: [String])] = [
        "import": ([], ["merge", "dry-run", "allow-empty", "json"]), "list": ([], ["json"]),
        // export writes JSON whatever it is given: --json is taken (scripts pass it), not refused.
        "prices": (["at"], ["json"]), "export": (["file"], ["json"]), "disable": ([], ["force", "json"]),
        "enable": ([], ["json"]),
    ]

    private static func refuseOthersOptions(_ arguments: Arguments, action: String) throws {
        guard let own = optionsByCommand[action] else { return }
        let given =
            ["at", "file"].filter { arguments.value($0) != nil && !own.options.contains($0) }
            + ["merge", "dry-run", "allow-empty", "json", "force"].filter { arguments.flag($0) && !own.flags.contains($0) }
        guard let stray = given.first else { return }
        let owners = optionsByCommand.keys.sorted().filter {
            optionsByCommand[$0]!.options.contains(stray) || optionsByCommand[$0]!.flags.contains(stray)
        }
        throw QueueError(
            .invalidInput,
            "--\(stray) is for dispatcher models "
                + (owners.count > 1 ? owners.dropLast().joined(separator: ", ") + " and " : "") + owners.last!
                + ", not \(action); nothing was done",
            hint: "Run `dispatcher models --help`.")
    }

    /// The catalog's database, at this binary's schema: an older one lacks columns the catalog
    /// has, and says so as "column … does not exist" (run `dispatcher migrate`, it should say).
    private static func currentPool(_ arguments: Arguments) async throws -> PostgresPool {
        let pool = try Database.pool(arguments, applicationName: "switchyard-models", maxConnections: 1)
        do {
            try await Migrator().requireCurrent(pool)
        } catch {
            await pool.close()
            throw error
        }
        return pool
    }

    private static func export(_ arguments: Arguments) async throws -> Int32 {
        guard arguments.positionals.count == 1 else {
            throw QueueError(
                .invalidInput, "dispatcher models export takes no file name", hint: "Write to a file with --file FILE.")
        }
        let pool = try await currentPool(arguments)
        defer { Task { await pool.close() } }
        let text = try await CatalogStore(pool: pool).loadStored().document.prettyText + "\n"
        if let file = arguments.value("file") {
            try OutputFile.write(Data(text.utf8), to: file)
        } else {
            print(text, terminator: "")
        }
        return ExitCode.success
    }

    private static func importFile(_ path: String, arguments: Arguments) async throws -> Int32 {
        let data = try InputFile.read(path)
        let pool = try await currentPool(arguments)
        defer { Task { await pool.close() } }
        let dryRun = arguments.flag("dry-run")
        let outcome: CatalogStore.ImportOutcome
        do {
            outcome = try await CatalogStore(pool: pool).importDocument(
                data, mode: arguments.flag("merge") ? .merge : .replace, dryRun: dryRun,
                allowEmpty: arguments.flag("allow-empty")
            )
        } catch let error as QueueError where arguments.flag("json") && error.details != nil {
            // A refused document's problems for a script to read, on stdout as an import's
            // outcome is (they were on stderr only, as text); the text still goes to stderr.
            var json: [String: JSONValue] = ["dry_run": .bool(dryRun), "imported": false]
            if case .object(let details)? = error.details { json.merge(details) { $1 } }
            print(JSONValue.object(json).prettyText)
            throw error
        }
        if arguments.flag("json") {
            let json: JSONValue = [
                "dry_run": .bool(dryRun), "imported": .bool(!dryRun), "changes": outcome.changes.json,
                "warnings": .array(outcome.warnings.map { .string($0.description) }),
            ]
            print(json.prettyText)
            return 0
        }
        for warning in outcome.warnings { printError("warning: \(warning)") }
        print(outcome.changes.rendered())
        print(
            dryRun
                ? "dry run: nothing was written"
                : "catalog now has " + Self.counted(outcome.catalog.models.count, "model") + " and "
                    + Self.counted(outcome.catalog.rules.count, "rule")
        )
        return 0
    }

    private static func setEnabled(_ enabled: Bool, arguments: Arguments) async throws -> Int32 {
        let action = enabled ? "enable" : "disable"
        let names = Array(arguments.positionals.dropFirst())
        guard !names.isEmpty else {
            throw QueueError(
                .invalidInput, "dispatcher models \(action) takes the names of the models to \(action)",
                hint: "dispatcher models list shows them; for example: dispatcher models \(action) gpt-4o")
        }
        let pool = try await currentPool(arguments)
        defer { Task { await pool.close() } }
        let store = CatalogStore(pool: pool)
        let outcome: CatalogStore.EnabledOutcome
        do {
            outcome = try await store.setEnabled(names, enabled, force: arguments.flag("force"))
        } catch let error as QueueError where arguments.flag("json") && error.code == .invalidInput {
            // Refused: said on stdout for a script, as an import's refusal is (the text to stderr).
            let problem: JSONValue = ["message": .string(error.message), "hint": error.hint.map(JSONValue.string) ?? .null]
            print(JSONValue.object(["enabled": .bool(enabled), "changed": [], "problems": [problem]]).prettyText)
            throw error
        }
        let health = enabled ? try await store.health() : [:]
        // Enabled (now or already), and still out for its health: its breaker.
        let stillOut = health.filter { names.contains($0.key) && $0.value.breaker != .closed }
        func breakerNote(_ name: String) -> String? {
            stillOut[name].map { record in
                "its breaker is \(record.breaker.rawValue.replacingOccurrences(of: "_", with: "-"))"
                    + (record.reason.map { " (\($0))" } ?? "")
                    // Half-open, plans keep it and a worker tries it one call at a time (route
                    // --explain: "kept: breaker half-open (probing)"); open, they pass it over.
                    + (record.breaker == .halfOpen
                        ? ": workers try it one call at a time until enough probes answer"
                        : ", so plans pass it over until it half-opens and its probes answer")
            }
        }
        if arguments.flag("json") {
            let json: JSONValue = [
                "enabled": .bool(enabled), "changed": .array(outcome.changed.map { .string($0) }),
                "unchanged": .array(outcome.unchanged.map { .string($0) }),
                "warnings": .array(outcome.warnings.map { .string($0.description) }),
                "breakers": .object(stillOut.mapValues { record in
                    ["state": .string(record.breaker.rawValue), "reason": record.reason.map(JSONValue.string) ?? .null]
                }),
            ]
            print(json.prettyText)
            return 0
        }
        for warning in outcome.warnings { printError("warning: \(warning)") }
        for name in outcome.changed {
            if !enabled {
                print("\(name): disabled; workers pass it over as they reload the catalog (calls under way finish)")
            } else if let note = breakerNote(name) {
                print("\(name): enabled; \(note)")
            } else {
                print("\(name): enabled; workers plan with it as they reload the catalog")
            }
        }
        for name in outcome.unchanged { print("\(name): already \(action)d" + (breakerNote(name).map { "; \($0)" } ?? "")) }
        return 0
    }

    private static func list(_ arguments: Arguments) async throws -> Int32 {
        let pool = try await currentPool(arguments)
        defer { Task { await pool.close() } }
        let store = CatalogStore(pool: pool)
        let catalog = try await store.load()
        let health = try await store.health()
        if arguments.flag("json") {
            print(CatalogListing.json(catalog, health: health).prettyText)
        } else {
            print(CatalogListing.text(catalog, health: health))
        }
        return 0
    }

    /// `1 rule`, `7 rules`.
    static func counted(_ count: Int, _ noun: String) -> String {
        "\(count) \(noun)\(count == 1 ? "" : "s")"
    }
}
