import Foundation
import Postgres
import QueueModel

/// `dispatcher report --html FILE`: a self-contained HTML page with charts; and
/// `dispatcher report savings`: what routing and off-peak draining saved.
enum ReportCommand {
    static let usage = """
        usage: dispatcher report --html FILE [--window DURATION] [--bucket DURATION]
               dispatcher report savings [--since TIME|DURATION] [--json]

        --html: one self-contained HTML file (inline SVG charts, no scripts, no external assets):
        latency percentiles (P50/P95/P99) and cost per model over time, the tier mix, the fallback
        rate, and a per-model summary table.

          --html FILE          where to write the page (- for stdout)
          --window DURATION    how far back (default 24h)
          --bucket DURATION    the time step of the charts (default: the window / 48, at least 1m)

        savings: what the finished jobs cost, against running every one of them on its rule's
        primary model at list (peak) price, by priority and by reason (another model than the
        primary, negative when a dearer one was chosen; an off-peak window), with the jobs that
        ran past their price ceiling (a deadline escalated them, or a drain set it aside).

          --since TIME|DURATION  from an ISO 8601 time or an age like 30d (default: every result
                                 kept, back to what prune left)
          --json                 the figures as JSON
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher report", options: ["html", "window", "bucket", "since", "database-url"],
            flags: ["json"])
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        if arguments.positionals.first == "savings" {
            if let option = ["html", "window", "bucket"].first(where: { arguments.value($0) != nil }) {
                throw QueueError(
                    .invalidInput, "--\(option) is for the HTML report, not savings",
                    hint: "dispatcher report savings [--since TIME|DURATION] [--json], or dispatcher report --html FILE")
            }
            return try await savings(arguments)
        }
        if let word = arguments.positionals.first {
            throw QueueError(
                .invalidInput, "unknown report \"\(word)\"", hint: "use dispatcher report savings, or --html FILE")
        }
        let savingsOnly = ["since", "json"].first { $0 == "json" ? arguments.flag($0) : arguments.value($0) != nil }
        if let option = savingsOnly {
            throw QueueError(
                .invalidInput, "--\(option) is for report savings, not the HTML report",
                hint: "the HTML report looks back --window (e.g. --window 1h); "
                    + "or dispatcher report savings --\(option)")
        }
        guard let path = arguments.value("html") else {
            throw QueueError(
                .invalidInput, "--html FILE is required",
                hint: "e.g. dispatcher report --html report.html, or dispatcher report savings for the cost figures")
        }
        let window = try arguments.duration("window", default: .seconds(86_400))
        let automatic = max(Duration.seconds(60), window / 48)
        let bucket = try arguments.duration("bucket", default: automatic)
        guard window > .zero, bucket > .zero else {
            throw QueueError(.invalidInput, "--window and --bucket must be longer than zero")
        }
        guard bucket <= window else {
            throw QueueError(
                .invalidInput, "--bucket must not be longer than --window (a chart of one partial point)",
                hint: "use a shorter --bucket (e.g. \(Arguments.format(automatic)))")
        }
        guard window.seconds / bucket.seconds <= 2000 else {
            throw QueueError(
                .invalidInput, "--bucket is too small for --window: over 2000 points per chart",
                hint: "use a larger --bucket (e.g. \(Arguments.format(automatic)))")
        }
        let pool = try Database.pool(arguments, applicationName: "switchyard-report", maxConnections: 1)
        defer { Task { await pool.close() } }
        try await Migrator().requireCurrent(pool)
        let generatedAt = Date()
        let series = try await ReportStore(pool: pool).series(window: window, bucket: bucket)
        let html = HTMLReport(
            series: series, window: window, generatedAt: generatedAt, background: try await BacklogStatus.load(pool),
            savings: try await SavingsReport.load(pool, since: generatedAt.addingTimeInterval(-window.seconds))
        ).render()
        if path == "-" {
            print(html)
        } else {
            try OutputFile.write(Data(html.utf8), to: path)
            let jobs = series.totals.reduce(0) { $0 + $1.jobs }
            print(
                "wrote \(path): \(jobs) jobs, \(Set(series.models.map(\.model)).count) models, "
                    + "\(series.buckets.count) buckets of \(StatusFormat.window(bucket))")
        }
        return ExitCode.success
    }

    /// `dispatcher report savings [--since …]`.
    static func savings(_ arguments: Arguments) async throws -> Int32 {
        let since = try arguments.value("since").map { text -> Date in
            if let date = ISO8601Parsing.date(text) { return date }
            guard let age = Arguments.parseDuration(text) else {
                throw QueueError(.invalidInput, "--since must be an ISO 8601 time or an age like 30d (got \"\(text)\")")
            }
            return Date().addingTimeInterval(-age.seconds)
        }
        let pool = try Database.pool(arguments, applicationName: "switchyard-report", maxConnections: 1)
        defer { Task { await pool.close() } }
        try await Migrator().requireCurrent(pool)
        let report = try await SavingsReport.load(pool, since: since)
        if arguments.flag("json") {
            let rows: [JSONValue] = report.rows.map { row in
                [
                    "priority": row.priority.map { .string($0) } ?? "total", "jobs": .number(Double(row.jobs)),
                    "cost": .string(row.cost.description), "baseline": .string(row.baseline.description),
                    "saved": .string(row.saved.description),
                    "saved_by_cheaper_model": .string(row.savedByCheaperModel.description),
                    "saved_by_off_peak": .string(row.savedByOffPeak.description),
                    "escalated_jobs": .number(Double(row.escalatedJobs)),
                    "escalated_cost": .string(row.escalatedCost.description),
                ]
            }
            print(JSONValue.array(rows).prettyText)
        } else {
            print(report.text)
        }
        return ExitCode.success
    }
}
