import Foundation
import Postgres
import QueueModel

/// `dispatcher background pause | resume | drain --until TIME | status`.
enum BackgroundCommand {
    static let usage = """
        usage: dispatcher background [status] [--json]
               dispatcher background pause
               dispatcher background resume
               dispatcher background drain --until TIME
               dispatcher background ceiling PRICE|none [--tiers cheap,open_source|any]

        Background jobs run only while some model's price is within the background ceiling (per
        1K tokens, input and output averaged; off-peak windows count), unless a job's deadline
        is too near to wait. Workers never claim background work that may not run now.

          status    the backlog, the gate (open or closed, and why), the next cheap window, the
                    ceilings (global and rules' own), and when the backlog will be drained at the
                    current pace; --json for the figures as JSON
          pause     stop starting background jobs (running ones finish); deadlines do not override it
          resume    undo pause
          drain     ignore the ceiling until TIME (ISO 8601, or a duration from now like 2h), and
                    put the jobs waiting for a cheaper price back to work; --until 0s ends a drain
          ceiling   set the global ceiling (a rule may set its own: background_max_cost_per_1k in
                    its settings) and, with --tiers, the price tiers background work may use

        Workers follow every change within a second (NOTIFY switchyard_settings).
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher background", options: ["until", "tiers", "database-url"], flags: ["json"]
        )
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        // Alone, as `dispatcher tenants` lists: the status (it printed the help and exited 2).
        let action = arguments.positionals.first ?? "status"
        // Each option belongs to one action: elsewhere it would be ignored (pause --until 1h paused
        // for good), so it is refused before anything is changed.
        let owners = ["until": "drain", "tiers": "ceiling"]
        let misplaced = owners.sorted(by: { $0.key < $1.key })
            .first { arguments.value($0.key) != nil && $0.value != action }
        if let (option, owner) = misplaced {
            throw QueueError(
                .invalidInput, "--\(option) is for dispatcher background \(owner), not \(action); nothing was changed",
                hint: usage)
        }
        if arguments.flag("json"), action != "status" {
            throw QueueError(
                .invalidInput, "--json is for dispatcher background status, not \(action); nothing was changed", hint: usage)
        }
        let pool = try Database.pool(arguments, applicationName: "switchyard-background", maxConnections: 1)
        defer { Task { await pool.close() } }
        // Before anything is written: a setting changed on a schema this binary does not match
        // would be reported as a failure after it was applied.
        try await Migrator().requireCurrent(pool)
        // Only `ceiling` takes a word after it: another one elsewhere is a mistake, not ignored.
        if action != "ceiling", arguments.positionals.count > 1 {
            throw QueueError(
                .invalidInput, "dispatcher background \(action) takes no words after it (got \"\(arguments.positionals[1])\")",
                hint: usage)
        }
        switch action {
        case "status":
            break
        case "pause":
            try await BackgroundPolicy.set("background_paused", to: "true", in: pool)
            print("background work paused; running jobs finish, no new ones start (resume: dispatcher background resume)")
        case "resume":
            try await BackgroundPolicy.set("background_paused", to: "false", in: pool)
            print("background work resumed")
        case "drain":
            guard let until = try SubmitCommand.time(arguments, "until") else {
                throw QueueError(.invalidInput, "drain needs --until TIME", hint: "e.g. dispatcher background drain --until 2h")
            }
            if until > Date() {
                try await BackgroundPolicy.set("background_drain_until", to: until.postgresText, in: pool)
                print("draining: background work ignores its price ceiling until \(until.readableUTC)")
                // A pause outranks a drain: said, not left to be found (nothing moved).
                if try await BackgroundPolicy.load(pool).paused {
                    printError("note: background work is paused: nothing runs, drained or not, until dispatcher "
                        + "background resume (the drain lasts until \(until.readableUTC))")
                }
            } else {
                try await BackgroundPolicy.set("background_drain_until", to: "", in: pool)
                print("not draining: background work keeps to its price ceiling again")
            }
        case "ceiling":
            guard arguments.positionals.count == 2 else {
                throw QueueError(
                    .invalidInput,
                    arguments.positionals.count > 2
                        ? "ceiling takes one price (got \(arguments.positionals.dropFirst().joined(separator: " ")))"
                        : "ceiling needs a price per 1K tokens, or none",
                    hint: usage)
            }
            let price = try ceiling(arguments.positionals[1], name: "the ceiling")
            let allowed = try arguments.value("tiers").map { try Self.tiers($0) }
            // Checked before anything is written.
            let named = (allowed ?? nil)?.sorted() ?? []
            let known = allowed == nil ? [] : Set(try await CatalogStore(pool: pool).load().models.map(\.tier))
            if !named.isEmpty, !known.isEmpty, named.allSatisfy({ !known.contains($0) }) {
                // Every one unknown (--tiers chaep): no background job could ever run.
                throw QueueError(
                    .invalidInput,
                    "no model in the catalog has tier " + named.map { "\"\($0)\"" }.joined(separator: " or ")
                        + "\(CatalogProblem.didYouMean(named[0], among: known)): no background job could run; "
                        + "nothing was changed",
                    hint: "the catalog's tiers: \(known.sorted().joined(separator: ", ")) (dispatcher models list)")
            }
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: price?.description ?? "", in: pool)
            if allowed != nil {
                try await BackgroundPolicy.set("background_tiers", to: named.joined(separator: ","), in: pool)
                for tier in named where !known.contains(tier) {
                    printError(
                        "warning: no model in the catalog has tier \"\(tier)\""
                            + "\(CatalogProblem.didYouMean(tier, among: known)); background work on it alone waits")
                }
            }
            print("background ceiling set")
        default:
            throw QueueError(.invalidInput, "unknown background command \"\(action)\"", hint: usage)
        }
        let status = try await BacklogStatus.load(pool)
        print(arguments.flag("json") ? status.json.prettyText : status.lines.joined(separator: "\n"))
        return ExitCode.success
    }

    /// The tiers `--tiers` names: nil for `any` (every tier).
    /// - Throws: for `none`, which would name a tier called none and hold back every background job.
    static func tiers(_ value: String) throws -> Set<String>? {
        guard value != "any" else { return nil }
        let hint = "--tiers any lets background work use every tier; --tiers cheap,open_source names the ones it may."
        guard let tiers = BackgroundPolicy.tiers(value) else {
            throw QueueError(.invalidInput, "--tiers needs tier names, or any", hint: hint)
        }
        guard !tiers.contains("none") else {
            throw QueueError(.invalidInput, "--tiers none would allow only a tier named \"none\"", hint: hint)
        }
        return tiers
    }

    /// A ceiling as given: a price as the catalog's prices are (plain digits, at most 10 decimal
    /// places: numeric(20, 10)), or nil for `none`.
    static func ceiling(_ value: String, name: String) throws -> Decimal? {
        guard value != "none" else { return nil }
        guard value.wholeMatch(of: /[0-9]{1,10}(\.[0-9]{1,10})?/) != nil, let price = Decimal(string: value) else {
            throw QueueError(
                .invalidInput,
                "\(name) must be a price like 0.002 (dollars per 1K tokens, at most 10 decimal places) or none"
                    + " (got \"\(value)\")")
        }
        return price
    }
}
