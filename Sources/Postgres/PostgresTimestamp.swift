import Foundation

/// Converts between `Date` and Postgres's ISO timestamp text, without `DateFormatter`.
///
/// Connections set `DateStyle` to ISO and `TimeZone` to UTC, so the server writes
/// `2026-11-26 21:08:05.123456+00`; offsets like `+05:30` are still read correctly.
enum PostgresTimestamp {
    /// Formats a date as `2026-11-26T21:08:05.123456Z`, to the microsecond.
    static func format(_ date: Date) -> String {
        let totalMicroseconds = (date.timeIntervalSince1970 * 1_000_000).rounded()
        guard totalMicroseconds.isFinite, abs(totalMicroseconds) < 2.5e17 else {
            return totalMicroseconds < 0 ? "-infinity" : "infinity"
        }
        let micros = Int64(totalMicroseconds)
        var seconds = micros / 1_000_000
        var fraction = micros % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = civil(fromDays: days)
        guard (0...9999).contains(year) else {
            return pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T" + pad(secondOfDay / 3600, 2) + ":"
                + pad(secondOfDay / 60 % 60, 2) + ":" + pad(secondOfDay % 60, 2) + "." + pad(fraction, 6) + "Z"
        }
        // The usual case, digit by digit into a fixed buffer: YYYY-MM-DDTHH:MM:SS.ffffffZ.
        return String(unsafeUninitializedCapacity: 27) { buffer in
            var position = 0
            func digits(_ value: Int64, _ width: Int) {
                var value = value
                for offset in stride(from: width - 1, through: 0, by: -1) {
                    buffer[position + offset] = UInt8(48 + value % 10)
                    value /= 10
                }
                position += width
            }
            func character(_ byte: UInt8) {
                buffer[position] = byte
                position += 1
            }
            digits(year, 4); character(45); digits(month, 2); character(45); digits(day, 2); character(84)
            digits(secondOfDay / 3600, 2); character(58); digits(secondOfDay / 60 % 60, 2); character(58)
            digits(secondOfDay % 60, 2); character(46); digits(fraction, 6); character(90)
            return position
        }
    }

    /// Postgres's binary `timestamptz`: microseconds since 2000-01-01 UTC, with the dates `format`
    /// writes as `infinity`/`-infinity` sent as Postgres's infinities (`Int64.max`/`Int64.min`).
    static func microsecondsSince2000(_ date: Date) -> Int64 {
        let since1970 = (date.timeIntervalSince1970 * 1_000_000).rounded()
        guard since1970.isFinite, abs(since1970) < 2.5e17 else { return since1970 < 0 ? .min : .max }
        return Int64(since1970) - epoch2000Microseconds
    }

    /// The inverse of `microsecondsSince2000`, for finite values.
    static func date(microsecondsSince2000 value: Int64) -> Date {
        Date(timeIntervalSince1970: Double(value + epoch2000Microseconds) / 1_000_000)
    }

    private static let epoch2000Microseconds: Int64 = 946_684_800_000_000

    /// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]][+HH[:MM[:SS]]]`, `infinity` and `-infinity`.
    /// - Returns: nil for anything else (including BC dates, which Switchyard never stores).
    static func parse(_ text: String) -> Date? {
        if text == "infinity" { return .distantFuture }
        if text == "-infinity" { return .distantPast }
        var text = text
        return text.withUTF8 { parse(bytes: $0) }
    }

    private static func parse(bytes: UnsafeBufferPointer<UInt8>) -> Date? {
        var position = 0
        func number(_ minDigits: Int, _ maxDigits: Int) -> Int64? {
            var value: Int64 = 0
            var count = 0
            while count < maxDigits, position < bytes.count, bytes[position] >= 48, bytes[position] <= 57 {
                value = value * 10 + Int64(bytes[position] - 48)
                position += 1
                count += 1
            }
            return count >= minDigits ? value : nil
        }
        func expect(_ character: UInt8) -> Bool {
            guard position < bytes.count, bytes[position] == character else { return false }
            position += 1
            return true
        }
        guard let year = number(4, 6), expect(45), let month = number(2, 2), expect(45), let day = number(2, 2)
        else { return nil }
        var seconds = days(fromYear: year, month: month, day: day) * 86_400
        var micros: Int64 = 0
        if expect(32) || expect(84) {
            guard let hour = number(2, 2), expect(58), let minute = number(2, 2), expect(58),
                let second = number(2, 2)
            else { return nil }
            seconds += hour * 3600 + minute * 60 + second
            if expect(46) {
                let start = position
                guard var fraction = number(1, 6) else { return nil }
                for _ in 0..<(6 - (position - start)) { fraction *= 10 }
                micros = fraction
            }
        }
        if position < bytes.count, bytes[position] == 43 || bytes[position] == 45 {
            let sign = bytes[position]
            position += 1
            guard let hours = number(2, 2) else { return nil }
            var offset = hours * 3600
            if expect(58) {
                guard let minutes = number(2, 2) else { return nil }
                offset += minutes * 60
                if expect(58) {
                    guard let offsetSeconds = number(2, 2) else { return nil }
                    offset += offsetSeconds
                }
            }
            seconds += sign == 43 ? -offset : offset
        } else if expect(90) {
            // "Z": already UTC.
        }
        guard position == bytes.count else { return nil }
        return Date(timeIntervalSince1970: Double(seconds) + Double(micros) / 1_000_000)
    }

    // Howard Hinnant's days_from_civil and civil_from_days (proleptic Gregorian, day 0 = 1970-01-01).
    private static func days(fromYear year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthPrime = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthPrime + 2) / 5 + 1
        let month = monthPrime < 10 ? monthPrime + 3 : monthPrime - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
