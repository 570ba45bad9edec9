import Foundation
import QueueModel

/// How numbers read on the status screen: short, with units, `—` for nothing.
enum StatusFormat {
    static let none = "—"

    /// Text a submitter chose (a task class, a tenant, a note), made safe to print: control
    /// characters shown as `cat -v` does (ESC as `^[`, DEL as `^?`, C1 as `M-^[`), so none can
    /// clear the operator's screen, retitle the window or break the columns; and bidirectional
    /// overrides and isolates as `<U+202E>`, so none can make a name read as another
    /// (`acme\u{202E}lanigiro` shows as `acmeoriginal`); and so the invisible characters that no
    /// text needs (zero-width space, word joiner, byte order mark, Mongolian vowel separator):
    /// `ac\u{200B}me` printed as it is read `acme`, a tenant of its own.
    static func printable(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var shown = ""
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x00..<0x20: shown += "^" + String(UnicodeScalar(UInt8(scalar.value + 0x40)))
            case 0x7F: shown += "^?"
            case 0x80..<0xA0: shown += "M-^" + String(UnicodeScalar(UInt8(scalar.value - 0x80 + 0x40)))
            case _ where isBidiControl(scalar) || isInvisible(scalar): shown += String(format: "<U+%04X>", scalar.value)
            default: shown.unicodeScalars.append(scalar)
            }
        }
        return shown
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F..<0xA0).contains(scalar.value) || isBidiControl(scalar) || isInvisible(scalar)
    }

    /// Zero-width space, word joiner, byte order mark, Mongolian vowel separator (not the joiners
    /// U+200C/200D, which scripts and emoji sequences need).
    private static func isInvisible(_ scalar: Unicode.Scalar) -> Bool {
        [0x200B, 0x2060, 0xFEFF, 0x180E].contains(scalar.value)
    }

    /// Embeddings, overrides and isolates (U+202A–202E, U+2066–2069) and the marks U+200E/200F.
    private static func isBidiControl(_ scalar: Unicode.Scalar) -> Bool {
        (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
            || scalar.value == 0x200E || scalar.value == 0x200F
    }

    /// A breaker for a table cell: its state, a half-open breaker's probes apart from why it
    /// opened (a review read "half_open (a probe failed while half-open)" as a failure now, and
    /// the count was cut off with the reason), the reason cut to `limit` characters; an alert's
    /// as "alert" (listed in full elsewhere) when `alertsShown`.
    static func breaker(_ state: String, reason: String?, limit: Int = 48, alertsShown: Bool = false) -> String {
        guard state != "closed", var reason, !reason.isEmpty else { return state }
        var probes: String?
        if let range = reason.range(of: #"; [0-9]+ of [0-9]+ probes answered$"#, options: .regularExpression) {
            probes = String(reason[range].dropFirst(2))
            reason.removeSubrange(range)
        }
        // A failed probe's reopening keeps the cause it was opened for in an aside, which the cut
        // below dropped whole: status read "a probe failed while half-open", models list the cause.
        let reopened = "a probe failed while half-open (opened for: "
        if reason.count > limit, reason.hasPrefix(reopened), reason.hasSuffix(")") {
            reason = "a probe failed; opened for: " + Self.withoutClosingAside(String(reason.dropFirst(reopened.count).dropLast()))
        }
        // Too long: first without a closing aside ("… 551 requests (errors and timeouts; limit
        // 2.0%)", cut mid-word to "… 551 requests (e…"), then cut.
        if reason.count > limit { reason = Self.withoutClosingAside(reason) }
        let short = alertsShown && reason.hasPrefix("alert:")
            ? "alert" : reason.count > limit ? String(reason.prefix(limit - 1)) + "…" : reason
        switch state {
        case "half_open": return "half_open: \(probes ?? "probing") (opened on: \(short))"
        case "open": return "open (\(short))"
        default: return "\(state) (\(short))"
        }
    }

    /// A latency percentile of calls, `≥1.50 s` when the calls beyond it timed out: a timed-out
    /// call is recorded at its timeout, so a model timing out on a third of its calls showed a P95
    /// of 1.50 s, "on target" (an on-call walkthrough).
    /// - Parameter errorRate: the calls that failed otherwise: the percentiles are of the answered
    ///   and timed-out calls, so the timeouts' share is taken among those.
    static func latency(_ value: Double?, quantile: Double, timeoutRate: Double?, errorRate: Double? = nil) -> String {
        let text = milliseconds(value)
        let timed = 1 - min(errorRate ?? 0, 0.999_999)
        guard value != nil, let timeoutRate, timeoutRate / timed > 1 - quantile else { return text }
        return "≥" + text
    }

    /// The text without its closing parenthesized aside, when it has one.
    private static func withoutClosingAside(_ text: String) -> String {
        guard text.hasSuffix(")"), let aside = closingAside(of: text) else { return text }
        return String(text[..<aside])
    }

    /// Where the parenthesis closing `text` opens, with the space before it (nested ones counted:
    /// "a (b (c))" drops " (b (c))"); nil when it opens at the start or does not balance.
    static func closingAside(of text: String) -> String.Index? {
        var depth = 0
        var index = text.endIndex
        while index > text.startIndex {
            index = text.index(before: index)
            if text[index] == ")" { depth += 1 }
            if text[index] == "(" {
                depth -= 1
                if depth == 0 {
                    guard index > text.startIndex, text[text.index(before: index)] == " " else { return nil }
                    let space = text.index(before: index)
                    return space > text.startIndex ? space : nil
                }
            }
        }
        return nil
    }

    /// `412 ms`, `1.21 s`, `2.3 min`.
    static func milliseconds(_ value: Double?) -> String {
        guard let value, value.isFinite else { return none }
        if value < 1000 { return "\(Int(value.rounded())) ms" }
        if value < 60_000 { return String(format: "%.2f s", value / 1000) }
        return String(format: "%.1f min", value / 60_000)
    }

    /// `42 s`, `3.5 min`, `2.0 h`.
    static func seconds(_ value: Double?) -> String {
        guard let value, value.isFinite else { return none }
        if value < 90 { return "\(Int(value.rounded())) s" }
        if value < 5400 { return String(format: "%.1f min", value / 60) }
        return String(format: "%.1f h", value / 3600)
    }

    /// `0.7%`, `12%`.
    static func percent(_ value: Double?) -> String {
        guard let value, value.isFinite else { return none }
        let percent = value * 100
        if percent == 0 { return "0%" }
        return percent < 10 ? String(format: "%.1f%%", percent) : String(format: "%.0f%%", percent)
    }

    /// `$0.3412`, `$12.50`, `$0.000021`.
    /// As `report savings` says amounts: to the cent, or under a dollar to two significant
    /// digits (a figures audit read $0.0001 for models 40% apart, and $0.000056 beside them).
    static func money(_ value: Decimal?) -> String {
        guard let value else { return none }
        return value == 0 ? "$0" : SavingsReport.money(value)
    }

    /// `82.4` (one decimal under 100; a half rounds up, as people round: 65.25 is 65.3).
    static func rate(_ value: Double) -> String {
        value < 100 ? String(format: "%.1f", (value * 10).rounded() / 10) : String(Int(value.rounded()))
    }

    /// `5 min`, `1 h`, `90 s`, `1.5 s`, `500 ms`.
    static func window(_ duration: Duration) -> String {
        let milliseconds = Int((duration.seconds * 1000).rounded())
        if milliseconds < 1000 { return "\(milliseconds) ms" }
        if milliseconds % 1000 != 0 { return String(format: "%.1f s", Double(milliseconds) / 1000) }
        let seconds = milliseconds / 1000
        if seconds % 3600 == 0 { return "\(seconds / 3600) h" }
        if seconds % 60 == 0 { return "\(seconds / 60) min" }
        return "\(seconds) s"
    }

    /// `2025-06-01 12:00:03` in UTC.
    static func clock(_ date: Date) -> String { String(date.readableUTC.dropLast(4)) }
}

/// A plain-text table: a header row and rows, columns padded to their widest cell; numbers (and
/// columns marked so) are right-aligned.
struct TextTable {
    var header: [String]
    var rows: [[String]] = []
    /// Columns aligned to the right (by index).
    var rightAligned: Set<Int> = []

    init(_ header: [String], rightAligned: Set<Int> = []) {
        self.header = header
        self.rightAligned = rightAligned
    }

    mutating func append(_ row: [String]) { rows.append(row) }

    var lines: [String] {
        let all = ([header] + rows).map { $0.map(StatusFormat.printable) }
        let widths = header.indices.map { column in
            all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0
        }
        return all.map { row in
            header.indices.map { column -> String in
                let cell = row.indices.contains(column) ? row[column] : ""
                let padding = String(repeating: " ", count: max(0, widths[column] - cell.count))
                return rightAligned.contains(column) ? padding + cell : cell + padding
            }.joined(separator: "  ").replacingOccurrences(of: #"\s+$"#, with: "", options: .regularExpression)
        }
    }
}
