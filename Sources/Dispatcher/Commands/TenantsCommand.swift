import Foundation
import Postgres
import QueueModel

/// `dispatcher tenants [list [NAME]] | pause NAME | resume NAME | budget NAME AMOUNT|none [--per day|month]
/// | max-running NAME N|none | max-per-minute NAME N|none | cancel NAME`.
enum TenantsCommand {
    static let usage = """
        usage: dispatcher tenants [list [NAME]] [--json] [--tenant NAME] [--limit N]
               dispatcher tenants pause NAME
               dispatcher tenants resume NAME
               dispatcher tenants budget NAME AMOUNT [--per month|day]
               dispatcher tenants budget NAME none
               dispatcher tenants max-running NAME N|none
               dispatcher tenants max-per-minute NAME N|none
               dispatcher tenants cancel NAME

        Each tenant's jobs (queued, held, running), what its results cost today and this month
        (USD, UTC days and months), its budget, and whether its jobs are held. A tenant paused, or
        over its budget, is held: its queued jobs and those it submits wait, unclaimed, until it is
        resumed, its budget is raised, or its next period begins. Running jobs finish; nothing is
        lost (a job whose deadline passes while held expires). A tenant may also be capped: at most
        so many of its jobs run at once, or start a minute, the others waiting in the queue.

          list      every tenant with jobs, spending this month, or limits (the default); NAME for
                    one; --json for the figures as JSON; --tenant NAME acts as that tenant (sets
                    switchyard.tenant), for a role mapped to several tenants or to * (a gateway);
                    --limit N lists the first N by name (100 unless --json; 0 for all) and counts
                    the rest
          pause     hold the tenant's jobs now, and those it submits, until it is resumed
          resume    undo pause (its jobs stay held while its budget is spent)
          budget    what the tenant's results may cost per calendar month (the default) or, with
                    --per day, per UTC day, in US dollars (a new amount keeps the period the
                    budget has); none removes it. Checked every housekeeper round (2 s): a tenant
                    goes over by what its running jobs, and those started since, cost.
          max-running
                    at most N of the tenant's jobs run at once (1 to 1000000), across every worker
                    and both priorities; the others wait, queued, and start as its running ones
                    end (lowered under what runs, those finish); none removes the cap
          max-per-minute
                    at most N of the tenant's jobs start a minute (1 to 1000000; every attempt, both
                    priorities): a burst of up to N, then one every 60/N s; the others wait,
                    queued; none removes the limit
          cancel    cancel every job the tenant has queued or held, at once, and stop its running
                    ones at their workers' next heartbeat; jobs it submits later run (pause it
                    first to stop those)

        pause, resume, budget, max-running, max-per-minute and cancel are an operator's
        (switchyard_admin); a submitter's role lists its own tenants.
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher tenants", options: ["per", "tenant", "limit", "database-url"], flags: ["json"])
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        let action = arguments.positionals.first ?? "list"
        let names = Array(arguments.positionals.dropFirst())
        let expected = ["list": 0...1, "pause": 1...1, "resume": 1...1, "budget": 2...2, "max-running": 2...2, "max-per-minute": 2...2,
                        "cancel": 1...1]
        guard let counts = expected[action] else {
            let meant = CatalogProblem.didYouMean(action, among: Set(expected.keys))
            throw QueueError(
                .invalidInput, "unknown tenants command \"\(action)\"\(meant)",
                hint: meant.isEmpty ? "to show one tenant: dispatcher tenants list \(action)" : usage)
        }
        guard counts.contains(names.count) else {
            let needs = action == "budget" ? "a tenant and an amount (or none)"
                : action == "max-running" || action == "max-per-minute" ? "a tenant and a number of jobs (or none)"
                : action == "list" ? "at most one tenant" : "a tenant"
            throw QueueError(
                .invalidInput, "dispatcher tenants \(action) takes \(needs) (got \(names.isEmpty ? "none" : names.joined(separator: " ")))",
                hint: usage)
        }
        // Each option belongs to one action: elsewhere it would be ignored, so it is refused
        // before anything is changed.
        if arguments.value("per") != nil, action != "budget" {
            throw QueueError(.invalidInput, "--per is for dispatcher tenants budget, not \(action); nothing was changed", hint: usage)
        }
        if arguments.value("tenant") != nil, action != "list" {
            throw QueueError(
                .invalidInput, "--tenant is for dispatcher tenants list, not \(action); name the tenant after \(action)",
                hint: usage)
        }
        if arguments.value("limit") != nil, action != "list" {
            throw QueueError(.invalidInput, "--limit is for dispatcher tenants list, not \(action); nothing was changed", hint: usage)
        }
        // A fleet of thousands of tenants printed thousands of lines: the first 100 by name, and a count.
        let limit = try arguments.value("limit").map { value -> Int in
            guard let limit = Int(value), limit >= 0 else {
                throw QueueError(.invalidInput, "--limit is a number of tenants, 0 for all (got \"\(value)\")")
            }
            return limit
        } ?? (arguments.flag("json") ? 0 : 100)
        if arguments.flag("json"), action != "list" {
            throw QueueError(.invalidInput, "--json is for dispatcher tenants list, not \(action); nothing was changed", hint: usage)
        }
        let period = try arguments.value("per").map { value in
            guard let period = TenantLimits.Period(rawValue: value) else {
                throw QueueError(.invalidInput, "--per is month or day (got \"\(value)\"); nothing was changed")
            }
            return period
        }
        if let name = names.first, !(1...200).contains(name.count) {
            throw QueueError(
                .invalidInput, "a tenant is a name of 1 to 200 characters (got \(name.count)); nothing was changed",
                hint: "Name the tenant as its jobs do (dispatcher tenants lists them).")
        }
        let amount = action == "budget" ? try budget(names[1]) : nil
        let maxRunning = action == "max-running" ? try Self.limit(names[1], "a cap on a tenant's running jobs is") : nil
        let maxPerMinute = action == "max-per-minute" ? try Self.limit(names[1], "a limit on a tenant's jobs started a minute is") : nil
        if action == "budget", amount == nil, arguments.value("per") != nil {
            throw QueueError(.invalidInput, "--per goes with an amount, not none; nothing was changed", hint: usage)
        }
        let pool = try Database.pool(arguments, applicationName: "switchyard-tenants", maxConnections: 1)
        defer { Task { await pool.close() } }
        try await Migrator().requireCurrent(pool)
        let tenant = names.first
        // The tenant as printed, and as a command to paste takes it.
        let shown = tenant.map(StatusFormat.printable) ?? ""
        let word = tenant.map { StatusFormat.printable(TenantLimits.shellWord($0)) } ?? ""
        // What was known of the tenant before: a name no job, spending or limit has is likely a typo.
        let before = action == "list" ? nil : try await TenantLimits.usage(in: pool, tenant: tenant).first
        // A name no submission can give (they refuse white space at a tenant's edges, sql/0093),
        // and none has: a typo, as "acme " in a script, listed beside acme as if it were it.
        if action != "list", before == nil, let name = tenant, name != Self.trimmed(name) {
            throw QueueError(
                .invalidInput,
                "tenant '\(Self.codePoints(name))' begins or ends with white space, and no job, spending or limit has "
                    + "it (submissions refuse such a name); nothing was changed",
                hint: "Name it without: \(StatusFormat.printable(TenantLimits.shellWord(Self.trimmed(name)))).")
        }
        if action != "list", before == nil {
            printError(
                "note: no tenant \(shown) has jobs, spending this month or limits (is the name right? dispatcher "
                    + "tenants lists them)\(["pause", "budget", "max-running", "max-per-minute"].contains(action) ? "; set for it all the same" : "")")
        }
        switch action {
        case "pause":
            let held = try await TenantLimits.pause(names[0], in: pool)
            print(
                "tenant \(shown) paused: \(count(held, "queued job")) held now, and those it submits; running jobs "
                    + "finish (dispatcher tenants resume \(word))")
        case "resume":
            let released = try await TenantLimits.resume(names[0], in: pool)
            let still = try await TenantLimits.usage(in: pool, tenant: names[0]).first?.heldReason
            let was = before?.pausedAt == nil ? "was not paused" : "resumed"
            if let still {
                print("tenant \(shown) \(was), and its jobs stay held: \(StatusFormat.printable(still))")
            } else if before?.pausedAt == nil {
                print("tenant \(shown) was not paused; nothing changed")
            } else {
                print("tenant \(shown) resumed: \(count(released, "held job")) may run again")
            }
        case "cancel":
            let (cancelled, cancelling) = try await TenantLimits.cancelJobs(of: names[0], in: pool)
            var line = "tenant \(shown): \(count(cancelled, "queued job")) cancelled, "
                + "\(cancelling) running \(cancelling == 1 ? "one" : "ones") cancelling (at their workers' next heartbeat)"
            if before?.pausedAt == nil {
                line += "; jobs it submits from now on run (to stop those: dispatcher tenants pause \(word))"
            }
            print(line)
        case "budget":
            let change = try await TenantLimits.setBudget(names[0], amount, per: period, in: pool)
            let set = try await TenantLimits.usage(in: pool, tenant: names[0]).first
            var line = amount.map { "tenant \(shown)'s budget: \(StatusFormat.money($0)) per \(set?.period?.rawValue ?? "?")" }
                ?? "tenant \(shown) has no budget now"
            switch change.change {
            case "held", "still held": line += "; its jobs are held: \(StatusFormat.printable(change.reason ?? ""))"
            case "released": line += "; \(count(change.jobs, "held job")) may run again"
            default: break
            }
            print(line)
        case "max-running":
            let running = try await TenantLimits.setMaxRunning(names[0], maxRunning, in: pool)
            let now = "\(running) running now"
            if let limit = maxRunning {
                print(
                    running > limit
                        ? "tenant \(shown) runs at most \(count(limit, "job")) at once: its \(running) running now finish, and "
                            + "no more start until \(limit == 1 ? "none runs" : "fewer than \(limit) run")"
                        : "tenant \(shown) runs at most \(count(limit, "job")) at once (\(now)); the others wait in the queue")
            } else {
                print("tenant \(shown) has no cap on its running jobs now (\(now))")
            }
        case "max-per-minute":
            try await TenantLimits.setMaxPerMinute(names[0], maxPerMinute, in: pool)
            print(
                maxPerMinute.map {
                    "tenant \(shown) starts at most \(count($0, "job")) a minute (a burst of up to \($0), then one every "
                        + "\(TenantLimits.startInterval(perMinute: $0))); the others wait in the queue"
                } ?? "tenant \(shown) has no limit on its jobs started a minute now")
        default:
            break
        }
        // (The other actions said what they did; only list reads the figures again.)
        if action == "list" {
            let usage = try await TenantLimits.usage(in: pool, tenant: tenant)
            let shown = limit == 0 ? usage : Array(usage.prefix(limit))
            print(arguments.flag("json") ? JSONValue.array(shown.map(\.json)).prettyText
                  : (lines(shown, named: tenant) + more(usage.dropFirst(shown.count))).joined(separator: "\n"))
        }
        return ExitCode.success
    }

    /// A budget as given: dollars with at most 6 decimal places, more than 0; nil for `none`.
    static func budget(_ value: String) throws -> Decimal? {
        guard value != "none" else { return nil }
        let trimmed = value.hasPrefix("$") ? String(value.dropFirst()) : value
        guard trimmed.wholeMatch(of: /[0-9]{1,12}(\.[0-9]{1,6})?/) != nil, let amount = Decimal(string: trimmed), amount > 0 else {
            throw QueueError(
                .invalidInput,
                "a budget is an amount in US dollars like 50 or 12.5, more than 0, with at most 12 digits before the "
                    + "point and 6 after it (got \"\(value)\"), or none; nothing was changed",
                hint: "To stop a tenant's work, pause it: dispatcher tenants pause NAME.")
        }
        return amount
    }

    /// A cap on a tenant's running jobs or starts a minute as given: 1 to 1,000,000; nil for `none`.
    static func limit(_ value: String, _ what: String) throws -> Int? {
        guard value != "none" else { return nil }
        guard let limit = Int(value), (1...1_000_000).contains(limit) else {
            throw QueueError(
                .invalidInput,
                "\(what) a number of jobs from 1 to 1000000 (got \"\(value)\"), or none; nothing was changed",
                hint: "To stop a tenant's work, pause it: dispatcher tenants pause NAME.")
        }
        return limit
    }

    static func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

    /// What the list left out: how many tenants, how many of them held, and how to see them.
    static func more(_ rest: ArraySlice<TenantLimits.Usage>) -> [String] {
        guard !rest.isEmpty else { return [] }
        let held = rest.count { $0.heldReason != nil }
        return [
            "\(count(rest.count, "more tenant")) (\(held) held) with \(count(rest.reduce(0) { $0 + $1.queued + $1.held }, "job"))"
                + " queued or held; --limit 0 lists all, dispatcher tenants list NAME one"
        ]
    }

    /// The table, and why each held tenant is held.
    static func lines(_ usage: [TenantLimits.Usage], named tenant: String?) -> [String] {
        guard !usage.isEmpty else {
            return [tenant.map { "no tenant \(StatusFormat.printable($0)) has jobs, spending this month or limits" }
                    ?? ("no tenant this role may see has jobs, spending this month or limits (a role mapped to several "
                        + "tenants or to * sees them with --tenant NAME)")]
        }
        var table = TextTable(
            ["tenant", "queued", "held", "running", "per minute", "today", "this month", "budget", "state"],
            rightAligned: [1, 2, 3, 4, 5, 6])
        for row in usage {
            let budget = row.budget.map { "\(StatusFormat.money($0))/\(row.period?.rawValue ?? "?")" } ?? StatusFormat.none
            let state = row.heldReason != nil ? (row.pausedAt != nil ? "held: paused" : "held: budget spent")
                : row.maxRunning.map { row.running >= $0 } == true ? "at its cap"
                : row.rateSpent ? "at its rate" : "not held"
            table.append([
                row.tenant, String(row.queued), String(row.held),
                row.maxRunning.map { "\(row.running)/\($0)" } ?? String(row.running),
                row.maxPerMinute.map(String.init) ?? StatusFormat.none, StatusFormat.money(row.spentToday),
                StatusFormat.money(row.spentThisMonth), budget, state,
            ])
        }
        return table.lines + usage.compactMap { row in row.heldReason.map { StatusFormat.printable($0) } }
    }

    /// The name with each white-space or invisible character but the space shown by its code
    /// point (`<U+200B>acme`), as submissions' refusal shows it: printed as it is, it read `acme`.
    static func codePoints(_ name: String) -> String {
        name.unicodeScalars.map { scalar in
            scalar != " " && (scalar.properties.isWhitespace || Self.invisible.contains(scalar))
                ? String(format: "<U+%04X>", scalar.value) : StatusFormat.printable(String(scalar))
        }.joined()
    }

    /// Characters submissions refuse at a tenant's edges besides white space
    /// (`switchyard.edge_space()`, sql/0099): zero-width space and joiners, word joiner, Mongolian
    /// vowel separator, byte order mark, soft hyphen, combining grapheme joiner, invisible
    /// operators and deprecated format characters, the Arabic letter mark, the bidirectional
    /// controls, and the blank fillers (Hangul's, the blank Braille pattern).
    static let invisible: Set<Unicode.Scalar> = Set(
        [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x180E, 0x2800, 0x3164, 0xFEFF, 0xFFA0]
            .compactMap(Unicode.Scalar.init)
            + [0x200B...0x200F, 0x202A...0x202E, 0x2060...0x2064, 0x2066...0x206F]
            .flatMap { $0.compactMap(Unicode.Scalar.init) })

    /// A name without Unicode's white space at its edges (the no-break spaces among it), nor the
    /// invisible characters submissions refuse there (sql/0099).
    static func trimmed(_ name: String) -> String {
        // By scalar, not by character: a joiner at the end belongs to the character before it.
        let space: (Unicode.Scalar) -> Bool = { $0.properties.isWhitespace || Self.invisible.contains($0) }
        let scalars = Array(name.unicodeScalars)
        guard let first = scalars.firstIndex(where: { !space($0) }), let last = scalars.lastIndex(where: { !space($0) })
        else { return "" }
        var trimmed = String.UnicodeScalarView()
        trimmed.append(contentsOf: scalars[first...last])
        return String(trimmed)
    }
}
