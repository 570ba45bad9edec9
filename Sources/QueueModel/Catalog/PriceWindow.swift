import Foundation

/// A time of the week when a model is sold at a different price (off-peak hours), as data in the
/// catalog: providers change these hours, so they are never code.
///
/// In the catalog's `price_windows` array:
/// `{"days": ["mon", "tue"], "start": "16:30", "end": "00:30", "time_zone": "Asia/Shanghai",
///   "multiplier": 0.5}` — or `input_multiplier` and `output_multiplier` apart. `days` (default:
/// every day) are the days a window *starts* on; a window whose end is not after its start runs
/// past midnight into the next day.
public struct PriceWindow: Sendable, Hashable {
    /// ISO weekdays the window starts on, 1 = Monday … 7 = Sunday.
    public var days: Set<Int>
    /// Minutes after local midnight.
    public var startMinute: Int
    public var endMinute: Int
    public var timeZone: TimeZone
    public var inputMultiplier: Decimal
    public var outputMultiplier: Decimal

    public init(
        days: Set<Int> = Set(1...7), startMinute: Int, endMinute: Int, timeZone: TimeZone = .gmt,
        inputMultiplier: Decimal, outputMultiplier: Decimal
    ) {
        self.days = days
        self.startMinute = startMinute
        self.endMinute = endMinute
        self.timeZone = timeZone
        self.inputMultiplier = inputMultiplier
        self.outputMultiplier = outputMultiplier
    }

    /// True when the window runs past local midnight.
    public var crossesMidnight: Bool { endMinute <= startMinute }

    private var calendar: Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        return calendar
    }

    /// Whether the window is open at an instant.
    public func contains(_ instant: Date) -> Bool {
        let parts = calendar.dateComponents([.weekday, .hour, .minute], from: instant)
        let minute = (parts.hour ?? 0) * 60 + (parts.minute ?? 0)
        let weekday = Self.isoWeekday(parts.weekday ?? 1)
        if crossesMidnight {
            if minute >= startMinute { return days.contains(weekday) }
            if minute < endMinute { return days.contains(weekday == 1 ? 7 : weekday - 1) }
            return false
        }
        return minute >= startMinute && minute < endMinute && days.contains(weekday)
    }

    /// The first time the window opens at or after an instant (nil if it never does: no days).
    ///
    /// Each day's start is when the zone's wall clock first reads that time: on a day the clocks
    /// go back, a time that happens twice is the first; on a day they go forward past it, the
    /// jump (a 02:30 start in New York opens at 03:00 EDT, when `contains` turns true).
    public func nextStart(after instant: Date) -> Date? {
        let calendar = calendar
        let today = calendar.startOfDay(for: instant)
        // Two weeks: a weekly window whose day the clocks skip opens the week after.
        for offset in 0...14 {
            guard let day = calendar.date(byAdding: .day, value: offset, to: today), isOneOfItsDays(day, calendar),
                let start = firstReading(startMinute, on: day, calendar), start >= instant
            else { continue }
            if let end = end(ofOpeningOn: day, calendar), end > start { return start }
        }
        return nil
    }

    /// The first time the window closes at or after an instant (nil if it never opens).
    public func nextEnd(after instant: Date) -> Date? {
        let calendar = calendar
        let today = calendar.startOfDay(for: instant)
        // A window that crosses midnight closes the day after it starts: from yesterday's opening.
        for offset in -1...14 {
            guard let day = calendar.date(byAdding: .day, value: offset, to: today), isOneOfItsDays(day, calendar),
                let end = end(ofOpeningOn: day, calendar), end >= instant
            else { continue }
            if let start = firstReading(startMinute, on: day, calendar), end > start { return end }
        }
        return nil
    }

    private func isOneOfItsDays(_ day: Date, _ calendar: Calendar) -> Bool {
        days.contains(Self.isoWeekday(calendar.component(.weekday, from: day)))
    }

    /// When the opening that starts on a day closes (the next day, for one that crosses midnight).
    /// On a day the clocks skip all of it, no later than it opens.
    private func end(ofOpeningOn day: Date, _ calendar: Calendar) -> Date? {
        calendar.date(byAdding: .day, value: crossesMidnight ? 1 : 0, to: day).flatMap {
            firstReading(endMinute, on: $0, calendar)
        }
    }

    /// When the zone's wall clock first reads a time of a day, or a later one: the time itself
    /// (the first of two when the clocks go back), or, when the clocks jump over it, the jump.
    private func firstReading(_ minute: Int, on day: Date, _ calendar: Calendar) -> Date? {
        var parts = calendar.dateComponents([.year, .month, .day], from: day)
        parts.hour = minute / 60
        parts.minute = minute % 60
        // Foundation reads a time that does not happen with the offset before the jump: 02:30
        // EST is 03:30 EDT, half an hour after the window is open.
        guard let date = calendar.date(from: parts) else { return nil }
        let read = calendar.dateComponents([.hour, .minute], from: date)
        guard (read.hour ?? 0) * 60 + (read.minute ?? 0) != minute,
            let jump = timeZone.nextDaylightSavingTimeTransition(after: date.addingTimeInterval(-4 * 3600)),
            jump <= date
        else { return date }
        return jump
    }

    /// Foundation's weekday (1 = Sunday) as ISO (1 = Monday … 7 = Sunday).
    static func isoWeekday(_ foundationWeekday: Int) -> Int { foundationWeekday == 1 ? 7 : foundationWeekday - 1 }

    // MARK: Catalog JSON

    static let dayNames = ["mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7]
    static let fullDayNames = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

    /// Reads one window from the catalog's JSON.
    /// - Throws: a message (without a path; the caller adds it) saying what is wrong and how to fix it.
    public static func parse(_ value: JSONValue) throws -> PriceWindow {
        guard case .object(let fields) = value else {
            throw PriceWindowError("must be an object like {\"start\": \"16:30\", \"end\": \"00:30\", \"multiplier\": 0.5}")
        }
        let known: Set<String> = ["days", "start", "end", "time_zone", "multiplier", "input_multiplier", "output_multiplier"]
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw PriceWindowError("has an unknown field \"\(unknown)\" (known: \(known.sorted().joined(separator: ", ")))")
        }
        func minute(_ key: String) throws -> Int {
            guard let text = fields[key]?.stringValue else { throw PriceWindowError("needs \"\(key)\" as \"HH:MM\"") }
            // "10::30" is no time (split would drop the empty part; Postgres's split_part does not).
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, let hour = Int(parts[0]), let minute = Int(parts[1]), (0...24).contains(hour),
                (0..<60).contains(minute), hour * 60 + minute <= 1440
            else { throw PriceWindowError("\"\(key)\" must be a time like \"16:30\" (got \"\(text)\")") }
            return (hour * 60 + minute) % 1440
        }
        func multiplier(_ key: String) throws -> Decimal? {
            guard let field = fields[key] else { return nil }
            guard let number = field.doubleValue, number >= 0, number <= 10 else {
                throw PriceWindowError("\"\(key)\" must be a number from 0 to 10, like 0.5 for half price")
            }
            return Decimal(string: String(number)) ?? Decimal(number)
        }
        var days = Set(1...7)
        if let list = fields["days"] {
            guard let items = list.arrayValue, !items.isEmpty else {
                throw PriceWindowError("\"days\" must be a non-empty array like [\"mon\", \"fri\"]")
            }
            days = []
            for item in items {
                // A day's name or its start ("mon", "tues", "Thursday"): "monkey" is no Monday.
                if let name = item.stringValue?.lowercased(), name.count >= 3,
                    let number = dayNames[String(name.prefix(3))],
                    Self.fullDayNames[number - 1].hasPrefix(name)
                {
                    days.insert(number)
                } else if let number = item.intValue, (1...7).contains(number) {
                    days.insert(number)
                } else {
                    throw PriceWindowError("\"days\" has \(item.jsonText); use mon…sun or 1 (Monday)…7 (Sunday)")
                }
            }
        }
        var timeZone = TimeZone.gmt
        if let name = fields["time_zone"] {
            guard let identifier = name.stringValue, let zone = TimeZone(identifier: identifier) else {
                // Zone names are case-sensitive: "utc" and "Europe/london" were refused without a word on why.
                let near = name.stringValue.flatMap { given in
                    (TimeZone.knownTimeZoneIdentifiers + ["UTC"]).first { $0.caseInsensitiveCompare(given) == .orderedSame }
                }
                throw PriceWindowError(
                    "\"time_zone\" must be an IANA zone like \"UTC\" or \"Asia/Shanghai\" (got \(name.jsonText))"
                        + (near.map { "; did you mean \"\($0)\"? (zone names are case-sensitive)" } ?? ""),
                    field: "time_zone")
            }
            timeZone = zone
        }
        let common = try multiplier("multiplier")
        guard let input = try multiplier("input_multiplier") ?? common,
            let output = try multiplier("output_multiplier") ?? common
        else { throw PriceWindowError("needs \"multiplier\" (or input_multiplier and output_multiplier)") }
        let start = try minute("start")
        let end = try minute("end")
        return PriceWindow(
            days: days, startMinute: start, endMinute: end, timeZone: timeZone, inputMultiplier: input,
            outputMultiplier: output
        )
    }
}

/// A price window the catalog describes wrongly.
public struct PriceWindowError: Error, CustomStringConvertible {
    public var description: String
    /// The window's field at fault, when it is one field (an import's problem is at its path, where
    /// the database's check of the zone puts its own).
    public var field: String?
    init(_ description: String, field: String? = nil) {
        self.description = description
        self.field = field
    }
}
