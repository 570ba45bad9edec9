import Foundation
import QueueModel
import Testing

@Suite("Price windows and pricing")
struct PriceWindowTests {
    static func date(_ text: String) -> Date { ISO8601Parsing.date(text)! }

    static func window(_ json: String) throws -> PriceWindow { try PriceWindow.parse(try JSONValue(parsing: json)) }

    @Test("a day is its name or the start of it, in any case")
    func dayNames() throws {
        let window = try Self.window(
            #"{"days": ["Monday", "tues", "WED", "thur", 5, "sat", "sunday"], "start": "22:00", "end": "02:00", "multiplier": 0.5}"#)
        #expect(window.days == Set(1...7))
    }

    @Test("a window across midnight belongs to the day it starts on")
    func acrossMidnight() throws {
        // Fridays 22:00 → Saturday 02:00 UTC.
        let window = try Self.window(#"{"days": ["fri"], "start": "22:00", "end": "02:00", "multiplier": 0.5}"#)
        #expect(window.crossesMidnight)
        #expect(window.contains(Self.date("2026-11-27T22:00:00Z")))  // Friday 22:00
        #expect(window.contains(Self.date("2026-11-28T01:59:00Z")))  // Saturday 01:59, Friday's window
        #expect(!window.contains(Self.date("2026-11-28T02:00:00Z")))  // the end is exclusive
        #expect(!window.contains(Self.date("2026-11-27T01:00:00Z")))  // Friday 01:00 is Thursday's (not listed)
        #expect(!window.contains(Self.date("2026-11-28T22:30:00Z")))  // Saturday evening
    }

    @Test("windows follow their own time zone, daylight saving included")
    func timeZones() throws {
        // 00:30–08:30 in Beijing (UTC+8, no DST) is 16:30–00:30 UTC.
        let beijing = try Self.window(#"{"start": "00:30", "end": "08:30", "time_zone": "Asia/Shanghai", "multiplier": 0.25}"#)
        #expect(beijing.contains(Self.date("2026-11-26T16:30:00Z")))
        #expect(beijing.contains(Self.date("2026-11-27T00:29:00Z")))
        #expect(!beijing.contains(Self.date("2026-11-27T00:30:00Z")))
        // 22:00–06:00 in New York: 03:00 UTC in winter (EST, UTC−5), 02:00 UTC in summer (EDT, UTC−4).
        let newYork = try Self.window(#"{"start": "22:00", "end": "06:00", "time_zone": "America/New_York", "multiplier": 0.5}"#)
        #expect(newYork.contains(Self.date("2026-01-15T03:00:00Z")))
        #expect(!newYork.contains(Self.date("2026-01-15T02:59:00Z")))
        #expect(newYork.contains(Self.date("2026-07-15T02:00:00Z")))
        #expect(!newYork.contains(Self.date("2026-07-15T01:59:00Z")))
    }

    @Test("the next window start")
    func nextStart() throws {
        let window = try Self.window(#"{"days": ["mon"], "start": "22:00", "end": "02:00", "time_zone": "Asia/Shanghai", "multiplier": 0.5}"#)
        // Thursday 2026-11-26 18:30 UTC → Monday 2026-11-30 22:00 Beijing = 14:00 UTC.
        #expect(window.nextStart(after: Self.date("2026-11-26T18:30:00Z")) == Self.date("2026-11-30T14:00:00Z"))
        #expect(window.nextStart(after: Self.date("2026-11-30T14:00:00Z")) == Self.date("2026-11-30T14:00:00Z"))
    }

    @Test("on the days the clocks change, a window starts and ends at its wall-clock times")
    func daylightSavingDays() throws {
        // Sundays 22:00–22:45 in London: on 2026-03-29 (BST from 01:00 UTC) that is 21:00–21:45 UTC.
        let london = try Self.window(
            #"{"days": ["sun"], "start": "22:00", "end": "22:45", "time_zone": "Europe/London", "multiplier": 0.25}"#)
        #expect(london.nextStart(after: Self.date("2026-03-29T12:00:00Z")) == Self.date("2026-03-29T21:00:00Z"))
        #expect(london.contains(Self.date("2026-03-29T21:10:00Z")))
        #expect(london.nextEnd(after: Self.date("2026-03-29T21:10:00Z")) == Self.date("2026-03-29T21:45:00Z"))
        #expect(london.nextStart(after: Self.date("2026-03-29T21:50:00Z")) == Self.date("2026-04-05T21:00:00Z"))
        // 01:30 happens twice in New York on 2026-11-01: the window opens at the first (05:30 UTC, EDT).
        let repeated = try Self.window(
            #"{"start": "01:30", "end": "03:00", "time_zone": "America/New_York", "multiplier": 0.5}"#)
        #expect(repeated.nextStart(after: Self.date("2026-11-01T00:00:00Z")) == Self.date("2026-11-01T05:30:00Z"))
        #expect(repeated.contains(Self.date("2026-11-01T05:30:00Z")))
        // 02:30 does not happen in New York on 2026-03-08: the clocks jump from 02:00 EST to 03:00
        // EDT (07:00 UTC), and the window is open from the jump (it was said to open at 07:30).
        let skipped = try Self.window(
            #"{"start": "02:30", "end": "04:00", "time_zone": "America/New_York", "multiplier": 0.5}"#)
        #expect(skipped.nextStart(after: Self.date("2026-03-08T00:00:00Z")) == Self.date("2026-03-08T07:00:00Z"))
        #expect(!skipped.contains(Self.date("2026-03-08T06:59:00Z")))
        #expect(skipped.contains(Self.date("2026-03-08T07:00:00Z")))
        #expect(skipped.nextEnd(after: Self.date("2026-03-08T07:00:00Z")) == Self.date("2026-03-08T08:00:00Z"))
        // An end the clocks skip closes the window at the jump.
        let endSkipped = try Self.window(
            #"{"start": "01:00", "end": "02:30", "time_zone": "America/New_York", "multiplier": 0.5}"#)
        #expect(endSkipped.nextStart(after: Self.date("2026-03-08T00:00:00Z")) == Self.date("2026-03-08T06:00:00Z"))
        #expect(endSkipped.contains(Self.date("2026-03-08T06:59:00Z")))
        #expect(!endSkipped.contains(Self.date("2026-03-08T07:00:00Z")))
        #expect(endSkipped.nextEnd(after: Self.date("2026-03-08T06:30:00Z")) == Self.date("2026-03-08T07:00:00Z"))
        // A window wholly within the skipped hour does not open that day: the next is the day after's.
        let wholly = try Self.window(
            #"{"start": "02:10", "end": "02:40", "time_zone": "America/New_York", "multiplier": 0.5}"#)
        #expect(wholly.nextStart(after: Self.date("2026-03-08T00:00:00Z")) == Self.date("2026-03-09T06:10:00Z"))
        #expect(wholly.nextEnd(after: Self.date("2026-03-08T00:00:00Z")) == Self.date("2026-03-09T06:40:00Z"))
        // A weekly one skipped on its day opens the week after (looking a week ahead found none).
        let weekly = try Self.window(
            #"{"days": ["sun"], "start": "02:00", "end": "03:00", "time_zone": "America/New_York", "multiplier": 0.5}"#)
        #expect(weekly.nextStart(after: Self.date("2027-03-08T12:00:00Z")) == Self.date("2027-03-21T06:00:00Z"))
        #expect(weekly.nextEnd(after: Self.date("2027-03-13T12:00:00Z")) == Self.date("2027-03-21T07:00:00Z"))
    }

    @Test("a window that crosses midnight ends the next day, also when it began yesterday")
    func nextEnd() throws {
        let window = try Self.window(#"{"days": ["fri"], "start": "22:00", "end": "02:00", "multiplier": 0.5}"#)
        #expect(window.nextEnd(after: Self.date("2026-11-28T01:00:00Z")) == Self.date("2026-11-28T02:00:00Z"))
        #expect(window.nextEnd(after: Self.date("2026-11-28T03:00:00Z")) == Self.date("2026-12-05T02:00:00Z"))
    }

    @Test("a multiplier over 1 is a surcharge, and applies; among open windows the lowest does")
    func surcharges() throws {
        let model = ModelSpec(
            name: "m", provider: .simulated, pricePer1KInput: 0.001, pricePer1KOutput: 0.001,
            priceWindows: [
                ["start": "11:00", "end": "12:00", "multiplier": 5],
                ["start": "11:30", "end": "13:00", "input_multiplier": 0.5, "output_multiplier": 2],
            ])
        let schedule = PriceSchedule(model)
        #expect(schedule.multipliers(at: Self.date("2026-11-27T11:10:00Z")) == (5, 5))
        #expect(schedule.averagePricePer1K(at: Self.date("2026-11-27T11:10:00Z")) == Decimal(string: "0.005"))
        #expect(schedule.multipliers(at: Self.date("2026-11-27T11:40:00Z")) == (0.5, 2))
        #expect(schedule.multipliers(at: Self.date("2026-11-27T13:10:00Z")) == (1, 1))
        #expect(
            schedule.cost(tokensIn: 1000, tokensOut: 1000, at: Self.date("2026-11-27T11:10:00Z"))
                == Decimal(string: "0.01"))
        #expect(
            schedule.priceChanges(after: Self.date("2026-11-27T11:10:00Z")).prefix(3)
                == [Self.date("2026-11-27T11:30:00Z"), Self.date("2026-11-27T12:00:00Z"), Self.date("2026-11-27T13:00:00Z")])
    }

    @Test(
        "bad windows are refused with what to write instead",
        arguments: [
            (#"{"start": "25:00", "end": "02:00", "multiplier": 0.5}"#, "\"start\" must be a time like \"16:30\""),
            (#"{"start": "22:00", "end": "02:00"}"#, "needs \"multiplier\""),
            (#"{"start": "22:00", "end": "02:00", "multiplier": 0.5, "time_zone": "Mars/Olympus"}"#, "IANA zone"),
            (#"{"start": "22:00", "end": "02:00", "multiplier": 0.5, "time_zone": "Europe/london"}"#,
             #"did you mean "Europe/London"? (zone names are case-sensitive)"#),
            (#"{"start": "22:00", "end": "02:00", "multiplier": 0.5, "days": ["someday"]}"#, "use mon…sun"),
            // Read by its first three letters, "monkey" was a Monday (a cost walkthrough).
            (#"{"start": "22:00", "end": "02:00", "multiplier": 0.5, "days": ["monkey"]}"#, "use mon…sun"),
            (#"{"start": "22:00", "end": "02:00", "multiplier": 0.5, "days": ["mo"]}"#, "use mon…sun"),
            (#"{"start": "22:00", "end": "02:00", "multiplier": 0.5, "discount": 1}"#, "unknown field \"discount\""),
        ]
    )
    func refusesBadWindows(json: String, message: String) throws {
        let error = #expect(throws: PriceWindowError.self) { try Self.window(json) }
        #expect(error?.description.contains(message) == true)
    }

    @Test("cost is exact to the cent (and beyond) on known token counts, at the price in force")
    func exactCost() throws {
        let model = ModelSpec(
            name: "m", provider: .simulated, pricePer1KInput: Decimal(string: "0.003")!,
            pricePer1KOutput: Decimal(string: "0.015")!,
            priceWindows: try JSONValue(parsing: #"[{"start": "00:00", "end": "08:00", "input_multiplier": 0.25, "output_multiplier": 0.5}]"#)
        )
        let schedule = PriceSchedule(model)
        // 1,234 in × $0.003/1K + 567 out × $0.015/1K = $0.003702 + $0.008505 = $0.012207.
        #expect(schedule.cost(tokensIn: 1234, tokensOut: 567, at: Self.date("2026-11-26T12:00:00Z"))
            == Decimal(string: "0.012207"))
        // Off-peak: $0.003702 × 0.25 + $0.008505 × 0.5 = $0.0009255 + $0.0042525 = $0.005178.
        #expect(schedule.cost(tokensIn: 1234, tokensOut: 567, at: Self.date("2026-11-26T03:00:00Z"))
            == Decimal(string: "0.005178"))
        // A million calls of that size: exactly a million times as much (no float drift).
        var total = Decimal(0)
        for _ in 0..<1000 { total += schedule.cost(tokensIn: 1234, tokensOut: 567, at: Self.date("2026-11-26T12:00:00Z")) }
        #expect(total == Decimal(string: "12.207"))
        #expect(schedule.averagePricePer1K(at: Self.date("2026-11-26T03:00:00Z")) == Decimal(string: "0.004125"))
        #expect(schedule.nextWindowStart(after: Self.date("2026-11-26T12:00:00Z")) == Self.date("2026-11-27T00:00:00Z"))
    }

    @Test("the escalation horizon covers every tier's target on every attempt, plus backoff")
    func escalationHorizon() {
        let policy = BackgroundPolicy()
        // 3 attempts: 14.5 × 3 + (2 + 4) + 60 = 109.5 s.
        #expect(policy.escalationHorizon(maxAttempts: 3) == .milliseconds(109_500))
        #expect(BackgroundPolicy(escalationSeconds: 30).escalationHorizon(maxAttempts: 3) == .seconds(30))
        // A rule whose primary has 180 s: 193 × 1 + 60 = 253 s for one attempt.
        #expect(policy.escalationHorizon(maxAttempts: 1, primaryTimeoutMS: 180_000) == .seconds(253))
    }
}
