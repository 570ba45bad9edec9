import Foundation
import Testing

@testable import Postgres
import QueueModel

@Suite("Postgres timestamp text")
struct TimestampTests {
    @Test(
        "parses the ISO forms Postgres writes",
        arguments: [
            ("2026-11-26 21:08:05.123456+00", 1_795_727_285.123456),
            ("2026-11-26 21:08:05+00", 1_795_727_285.0),
            ("2026-11-26 21:08:05.5+00", 1_795_727_285.5),
            ("2026-11-26 23:38:05+02:30", 1_795_727_285.0),
            ("2026-11-26 21:08:05-00:00:30", 1_795_727_315.0),
            ("1970-01-01 00:00:00+00", 0.0),
            ("1969-12-31 23:59:59.999999+00", -0.000001),
            ("2000-02-29", 951_782_400.0),
            ("2026-11-26T21:08:05.123456Z", 1_795_727_285.123456),
        ]
    )
    func parses(text: String, seconds: Double) throws {
        let date = try #require(PostgresTimestamp.parse(text))
        #expect(abs(date.timeIntervalSince1970 - seconds) < 0.0000005)
    }

    @Test("rejects what it cannot represent exactly", arguments: ["", "2026-11-26 21:08", "0044-03-15 12:00:00+00 BC", "yesterday"])
    func rejects(text: String) {
        #expect(PostgresTimestamp.parse(text) == nil)
    }

    @Test("infinity maps to the distant dates")
    func infinity() {
        #expect(PostgresTimestamp.parse("infinity") == .distantFuture)
        #expect(PostgresTimestamp.parse("-infinity") == .distantPast)
    }

    @Test("format and parse round-trip to the microsecond")
    func roundTrip() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let micros = Int64.random(in: -2_000_000_000_000_000...4_000_000_000_000_000, using: &generator)
            let date = Date(timeIntervalSince1970: Double(micros) / 1_000_000)
            let text = PostgresTimestamp.format(date)
            let parsed = try #require(PostgresTimestamp.parse(text), "\(text)")
            #expect(abs(parsed.timeIntervalSince(date)) < 0.000002, "\(text)")
        }
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000000Z")
    }

    @Test("formatting agrees with the calendar, field by field, from year 1600 to 9891")
    func formatAgreesWithCalendar() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        var generator = SystemRandomNumberGenerator()
        // Seconds from 1600-01-01 (Foundation's calendar is Julian before 1582; Postgres's
        // proleptic Gregorian) to 2.5e11 s after 1970, beyond which it writes infinity; whole
        // seconds (the fraction is checked apart).
        for _ in 0..<2000 {
            let seconds = Int64.random(in: -11_676_096_000...249_999_999_999, using: &generator)
            // A Date is a Double: far from 1970 it cannot hold every microsecond (at 2.5e11 s its
            // step is 30 µs), and a fraction that close to the next second is that second. 1 ms clear.
            let micros = Int64.random(in: 0..<999_000, using: &generator)
            let date = Date(timeIntervalSince1970: Double(seconds))
            let text = PostgresTimestamp.format(date.addingTimeInterval(Double(micros) / 1_000_000))
            let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
            let expected = String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.", parts.year!, parts.month!, parts.day!, parts.hour!,
                parts.minute!, parts.second!)
            #expect(text.hasPrefix(expected), "\(text) for \(seconds) s")
            #expect(text.count == 27 && text.hasSuffix("Z"), "\(text)")
        }
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: 250_000_000_001)) == "infinity")
    }
}

@Suite("ISO 8601 times on the command line and in JSONL")
struct ISO8601ParsingTests {
    @Test(
        "a date that does not exist is refused, not rolled over",
        arguments: ["2027-02-30T00:00:00Z", "2027-02-29T00:00:00Z", "2026-11-27T24:00:00Z", "2026-11-27T17:00:60Z",
                    "2026-11-27T17:60:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-04-31T10:00:00+02:00"]
    )
    func refusesImpossible(text: String) {
        #expect(QueueModel.ISO8601Parsing.date(text) == nil)
    }

    @Test("real dates, leap days and offsets are read", arguments: [
        ("2028-02-29T12:00:00Z", 1_835_438_400.0), ("2026-11-27T23:59:59Z", 1_795_823_999.0),
        ("2026-11-27T10:00:00+02:00", 1_795_766_400.0), ("2026-11-27T10:00:00.5Z", 1_795_773_600.5),
    ])
    func reads(text: String, seconds: Double) throws {
        let date = try #require(QueueModel.ISO8601Parsing.date(text))
        #expect(abs(date.timeIntervalSince1970 - seconds) < 0.001)
    }

    /// A soak's batch lost 1,500 of 3,000 lines to `"deadline": "15m"`, which `--deadline 15m` takes.
    @Test("a JSONL line's run_at and deadline take a duration from now, as the flags do")
    func envelopeDurations() throws {
        let before = Date()
        let line = #"{"request": {"messages": [{"role": "user", "content": "hi"}]}, "run_at": "+10m", "deadline": "2h"}"#
        let submission = try Submission.parse(line: line, defaults: Submission(request: [:]))
        let runAt = try #require(submission.runAt)
        let deadline = try #require(submission.deadline)
        #expect(runAt.timeIntervalSince(before) >= 600 && runAt.timeIntervalSince(before) < 660)
        #expect(deadline.timeIntervalSince(before) >= 7200 && deadline.timeIntervalSince(before) < 7260)
        let bad = #"{"request": {"messages": [{"role": "user", "content": "hi"}]}, "deadline": "soon"}"#
        let error = #expect(throws: QueueError.self) { try Submission.parse(line: bad, defaults: Submission(request: [:])) }
        #expect(error?.message.contains("or a duration from now like 15m (got \"soon\")") == true)
        // A misspelt key is named with the one meant (a walkthrough's "priorty" was not).
        let misspelt = #"{"request": {"messages": [{"role": "user", "content": "hi"}]}, "priorty": "background"}"#
        let unknown = #expect(throws: QueueError.self) { try Submission.parse(line: misspelt, defaults: Submission(request: [:])) }
        #expect(unknown?.message == #"unknown field "priorty" (did you mean "priority"?)"#)
    }
}
