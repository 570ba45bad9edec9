import Foundation
import Postgres

/// What finished jobs cost against running every one of them on its rule's primary model at list
/// (peak) price, by priority, and where the difference came from.
public struct SavingsReport: Sendable {
    public struct Row: Sendable {
        /// `interactive`, `background`, or nil for the total.
        public var priority: String?
        public var jobs: Int
        public var cost: Decimal
        public var baseline: Decimal
        public var saved: Decimal
        public var savedByCheaperModel: Decimal
        public var savedByOffPeak: Decimal
        public var escalatedJobs: Int
        public var escalatedCost: Decimal
    }

    public var since: Date?
    public var rows: [Row]

    public static func load(_ pool: PostgresPool, since: Date?) async throws -> SavingsReport {
        let rows = try await pool.query(
            "SELECT * FROM switchyard.savings(coalesce($1::timestamptz, '-infinity'))", [since]
        )
        return SavingsReport(
            since: since,
            rows: try rows.map { row in
                Row(
                    priority: try row.decode("priority", as: String?.self), jobs: try row.decode("jobs"),
                    cost: try row.decode("cost"), baseline: try row.decode("baseline"), saved: try row.decode("saved"),
                    savedByCheaperModel: try row.decode("saved_by_cheaper_model"),
                    savedByOffPeak: try row.decode("saved_by_off_peak"), escalatedJobs: try row.decode("escalated_jobs"),
                    escalatedCost: try row.decode("escalated_cost")
                )
            }
        )
    }

    /// The report as text, money rounded to the cent for reading (the database keeps it exact).
    public var text: String {
        var lines = ["savings" + (since.map { " since \($0.formatted(.iso8601))" } ?? "")
            + ": cost against every job on its rule's primary model at list price"]
        // "by model": negative where the strategy chose a dearer model than the primary
        // (best_quality), which "cheaper model" misnamed.
        let header = ["", "jobs", "cost", "all-primary", "saved", "by model", "by off-peak", "escalated"]
        var table = [header]
        for row in rows {
            table.append([
                row.priority ?? "total", "\(row.jobs)", Self.money(row.cost), Self.money(row.baseline),
                Self.money(row.saved) + (row.baseline > 0 ? " (\(Self.percent(row.saved, of: row.baseline)))" : ""),
                Self.money(row.savedByCheaperModel), Self.money(row.savedByOffPeak),
                "\(row.escalatedJobs) jobs, \(Self.money(row.escalatedCost))",
            ])
        }
        var widths = header.map(\.count)
        for row in table { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        for row in table {
            lines.append(row.enumerated().map { index, cell in
                index == 0 ? cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[index] - cell.count) + cell
            }.joined(separator: "  "))
        }
        // A walkthrough read the demo's negative figures as the product costing more, after its
        // summary's 85% saving against the premium model: they are the strategies' choice.
        if rows.contains(where: { $0.savedByCheaperModel < 0 }) {
            lines.append(
                "below zero by model: jobs ran on dearer models than their rules' primaries (a hash rule "
                    + "spreads affinity keys over its models, best_quality picks by quality, a fallback leaves a "
                    + "failing primary)")
        }
        return lines.joined(separator: "\n")
    }

    /// Dollars to the cent; an amount under a dollar to two significant digits (at most eight
    /// decimals), so a few cheap jobs do not read as $0.00.
    public static func money(_ value: Decimal) -> String {
        func places(_ value: Decimal) -> Int {
            let magnitude = abs((value as NSDecimalNumber).doubleValue)
            return magnitude >= 1 || magnitude == 0 ? 2 : max(2, min(8, 1 - Int(log10(magnitude).rounded(.down))))
        }
        var decimals = places(value)
        var rounded = Decimal()
        var input = value
        NSDecimalRound(&rounded, &input, decimals, .plain)
        // Rounding up to the next power of ten leaves one digit too many (0.0995 is $0.10, not $0.100).
        decimals = min(decimals, places(rounded))
        let text = (rounded < 0 ? -rounded : rounded).formatted(
            .number.precision(.fractionLength(decimals)).locale(Locale(identifier: "en_US")))
        return (rounded < 0 ? "-$" : "$") + text
    }

    static func percent(_ part: Decimal, of whole: Decimal) -> String {
        let ratio = (part / whole) as NSDecimalNumber
        return String(format: "%.1f%%", ratio.doubleValue * 100)
    }
}
