import Foundation
import Postgres
import QueueModel
import Testing

/// The off-peak gate in SQL: background work is claimed only when some model may run it now.
@Suite("Off-peak: price windows, the background gate, pause, drain, escalation")
struct OffPeakTests {
    static let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]

    /// A catalog with one premium model ($0.01/1K) whose off-peak window (×0.1 → $0.001) starts
    /// `startsIn` from now and lasts an hour, and a rule that uses it.
    static func importCatalog(_ pool: PostgresPool, windowStartsIn offset: TimeInterval) async throws {
        let calendar = Calendar(identifier: .gregorian)
        var utc = calendar
        utc.timeZone = .gmt
        let start = Date().addingTimeInterval(offset)
        let parts = utc.dateComponents([.hour, .minute], from: start)
        let end = start.addingTimeInterval(3600)
        let endParts = utc.dateComponents([.hour, .minute], from: end)
        func hhmm(_ p: DateComponents) -> String { String(format: "%02d:%02d", p.hour ?? 0, p.minute ?? 0) }
        let document = """
            {"models": {"premium": {"provider": "simulated", "tier": "premium", "price_per_1k_input": 0.01,
                                    "price_per_1k_output": 0.01, "settings": {"mode": "instant"},
                                    "price_windows": [{"start": "\(hhmm(parts))", "end": "\(hhmm(endParts))",
                                                       "time_zone": "UTC", "multiplier": 0.1}]}},
             "routing_rules": {"default": {"primary": "premium"}}}
            """
        _ = try await CatalogStore(pool: pool).importDocument(Data(document.utf8))
    }

    static func claim(_ store: QueueStore) async throws -> [Job] {
        try await store.claim(worker: "w", freeSlots: 10, backgroundSlots: 10, lease: .seconds(30))
    }

    @Test("the backlog's pace counts jobs workers finished, not cancelled or expired ones; no worker, no drain time")
    func backlogPace() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let now = try await ResultRow.databaseNow(pool)
            let statuses = Array(repeating: "succeeded", count: 3) + ["failed"] + Array(repeating: "cancelled", count: 50)
                + Array(repeating: "expired", count: 20)
            try await ResultRow.insert(
                statuses.enumerated().map { ResultRow(job: Int64($0.offset + 1), status: $0.element, priority: "background",
                                                      finishedAt: now.addingTimeInterval(-60)) },
                into: pool)
            #expect(try await BacklogStatus.load(pool).perMinute == 0.4)
            // Jobs queued and a pace, but no worker running: no time it will be drained by.
            _ = try await QueueStore(pool: pool).submit(Submission(request: Submission.prompt("x"), priority: .background))
            var backlog = try await BacklogStatus.load(pool)
            #expect(backlog.liveWorkers == 0 && backlog.drainedAt == nil)
            // A dash before the reason: brackets nested with the reason's own read "closed (… (…))".
            try await BackgroundPolicy.set("background_paused", to: "true", in: pool)
            let paused = try await BacklogStatus.load(pool)
            #expect(paused.lines.contains("  gate: closed — background work is paused (dispatcher background resume)"))
            // Said as paused, not "not draining now" beside "draining until …, PAUSED".
            #expect(paused.lines.last?.hasSuffix("; paused: nothing starts until dispatcher background resume") == true,
                    "\(paused.lines)")
            try await BackgroundPolicy.set("background_paused", to: "false", in: pool)
            #expect(backlog.lines.last == "  pace: 0.4 jobs/min over the last 10 minutes; no worker is running: nothing starts until one does")
            let worker = WorkerIdentity(id: "w", concurrency: 1, hostname: "h", pid: 1, version: "t")
            _ = try await QueueStore(pool: pool).heartbeat(worker: worker, held: [], lease: .seconds(30))
            backlog = try await BacklogStatus.load(pool)
            // A worker, but nothing running and nothing finished in the last minute: no drain time
            // either (an on-call walkthrough's starved backlog was "drained by" the ten minutes' pace).
            #expect(backlog.liveWorkers == 1 && backlog.drainedAt == nil)
            // A drain just begun: the last minute's pace, not the ten minutes', reckons the time (a
            // figures audit's backlog was gone in 45 s of a "drained by" 40 minutes away).
            try await ResultRow.insert(
                (100..<160).map { ResultRow(job: Int64($0), status: "succeeded", priority: "background",
                                            finishedAt: now.addingTimeInterval(-10)) },
                into: pool)
            backlog = try await BacklogStatus.load(pool)
            #expect(backlog.drainedAt != nil)
            // 60 finished 10 s ago: 60 over the 10 s (and more) since, not 60 a minute.
            #expect(backlog.lastMinute > 60 && backlog.pace == backlog.lastMinute, "\(backlog.lastMinute)")
            #expect(backlog.lines.last?.hasPrefix("  pace: 6.4 jobs/min over the last 10 minutes, ") == true
                && backlog.lines.last?.contains("/min in the last minute; the 1 queued and running drained by ") == true,
                "\(backlog.lines)")
            // A rule's own ceiling is shown beside the global one (a cost walkthrough found it nowhere).
            _ = try await CatalogStore(pool: pool).importDocument(Data(#"""
                {"models": {"m": {"provider": "simulated"}},
                 "routing_rules": {"classify": {"primary": "m", "settings": {"background_max_cost_per_1k": 0.0005}}}}
                """#.utf8))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.001", in: pool)
            let ceilings = try await BacklogStatus.load(pool)
            #expect(ceilings.lines.contains("  ceiling: $0.001/1K (rule classify: $0.0005/1K)"), "\(ceilings.lines)")
            #expect(ceilings.json["rule_ceilings"] == ["classify": "0.0005"])
        }
    }

    @Test("the gate's escalation horizon gives the primary the longest max_latency_ms of any rule")
    func escalationHorizonFollowsRules() async throws {
        try await TestDatabase.withMigratedPool { pool in
            func horizon(_ attempts: Int) async throws -> Double {
                try await pool.query("SELECT extract(epoch FROM switchyard.escalation_horizon($1))::float8", [attempts])
                    .scalar(Double.self)
            }
            #expect(try await horizon(1) == 74.5)  // 1.5 + 3 + 10 + 60
            _ = try await CatalogStore(pool: pool).importDocument(Data(
                """
                {"models": {"slow": {"provider": "simulated"}},
                 "routing_rules": {"default": {"primary": "slow"}, "long": {"primary": "slow", "max_latency_ms": 180000}}}
                """.utf8))
            #expect(try await horizon(1) == 253)  // 180 + 3 + 10 + 60
            // As the worker reckons it for that rule's jobs.
            #expect(BackgroundPolicy().escalationHorizon(maxAttempts: 1, primaryTimeoutMS: 180_000) == .seconds(253))
            // The same at every number of attempts, and with the override: a worker's claim cursor
            // relies on it (sql/0077 applies it per job), and so does the backlog alert.
            let sql = try await pool.query(
                "SELECT n, extract(epoch FROM switchyard.escalation_horizon(n))::float8 AS s FROM generate_series(1, 100) n")
            for row in sql {
                let attempts = try row.decode("n", as: Int.self)
                let swift = BackgroundPolicy().escalationHorizon(maxAttempts: attempts, primaryTimeoutMS: 180_000).seconds
                #expect(abs(try row.decode("s", as: Double.self) - swift) < 0.001, "\(attempts) attempts")
            }
            try await BackgroundPolicy.set("background_escalation_seconds", to: "3600.5", in: pool)
            #expect(try await horizon(7) == 3600.5)
        }
    }

    @Test("SQL and Swift agree on every window's price at every instant")
    func sqlMatchesSwift() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let windows: [String] = [
                #"{"start": "16:30", "end": "00:30", "time_zone": "UTC", "multiplier": 0.5}"#,
                #"{"days": ["fri", "sat"], "start": "22:00", "end": "02:00", "time_zone": "Asia/Shanghai", "input_multiplier": 0.25, "output_multiplier": 0.5}"#,
                #"{"days": [1, 3], "start": "09:00", "end": "17:00", "time_zone": "America/New_York", "multiplier": 0.75}"#,
                #"{"start": "00:00", "end": "00:00", "time_zone": "Europe/Berlin", "multiplier": 0.9}"#,
                // A surcharge; starts that happen twice, or not at all, on the days the clocks change.
                #"{"start": "11:00", "end": "12:00", "multiplier": 5}"#,
                #"{"days": ["sun"], "start": "22:00", "end": "22:45", "time_zone": "Europe/London", "multiplier": 0.25}"#,
                #"{"start": "01:30", "end": "03:00", "time_zone": "America/New_York", "input_multiplier": 2, "output_multiplier": 0.5}"#,
                #"{"start": "02:30", "end": "04:00", "time_zone": "America/New_York", "multiplier": 0.5}"#,
                // An end the clocks skip; a window they skip whole; a zone that jumps half an hour.
                #"{"start": "01:00", "end": "02:30", "time_zone": "America/New_York", "multiplier": 0.5}"#,
                #"{"start": "01:15", "end": "01:45", "time_zone": "Europe/London", "multiplier": 0.5}"#,
                #"{"start": "02:10", "end": "05:00", "time_zone": "Australia/Lord_Howe", "multiplier": 0.5}"#,
                // A weekly window the clocks skip on its day; a start repeated by a two-hour fall-back.
                #"{"days": ["sun"], "start": "02:00", "end": "03:00", "time_zone": "America/New_York", "multiplier": 0.5}"#,
                #"{"start": "02:30", "end": "05:00", "time_zone": "Antarctica/Troll", "multiplier": 0.5}"#,
            ]
            // Around the changes of 2026 in London (03-29, 10-25), New York (03-08, 11-01) and
            // Lord Howe Island (10-04, 02:00 → 02:30), Troll (10-25, 03:00 → 01:00), New York 2027 (03-14).
            let changeDays = ["2026-03-08T00:00:00Z", "2026-03-29T12:00:00Z", "2026-03-29T21:10:00Z",
                              "2026-10-25T00:30:00Z", "2026-11-01T00:00:00Z", "2026-11-01T05:45:00Z",
                              "2026-11-01T06:15:00Z", "2026-03-08T06:30:00Z", "2026-03-08T06:59:00Z",
                              "2026-03-08T07:00:00Z", "2026-03-29T00:30:00Z", "2026-10-03T12:00:00Z",
                              "2026-10-03T15:30:00Z", "2027-03-08T12:00:00Z", "2027-03-13T12:00:00Z",
                              "2026-10-24T14:11:00Z"].map { ISO8601Parsing.date($0)! }
            var generator = SystemRandomNumberGenerator()
            for text in windows {
                let window = try PriceWindow.parse(try JSONValue(parsing: text))
                let schedule = PriceSchedule(ModelSpec(name: "m", provider: .simulated, priceWindows: [try JSONValue(parsing: text)]))
                let random = (0..<150).map { _ in
                    // Instants across 2026, including both sides of daylight-saving changes.
                    Date(timeIntervalSince1970: Double.random(in: 1_767_225_600...1_798_761_600, using: &generator).rounded())
                }
                for instant in changeDays + random {
                    let row = try #require(
                        try await pool.query(
                            "SELECT input, output FROM switchyard.price_multipliers(jsonb_build_array($1::jsonb), $2)",
                            [text, instant]
                        ).first
                    )
                    let swift = schedule.multipliers(at: instant)
                    #expect(try row.decode("input", as: Decimal.self) == swift.input, "\(text) at \(instant)")
                    #expect(try row.decode("output", as: Decimal.self) == swift.output, "\(text) at \(instant)")
                    let next = try await pool.query(
                        "SELECT switchyard.window_next_start($1::jsonb, $2)", [text, instant]
                    ).scalar(Date?.self)
                    #expect(next == window.nextStart(after: instant), "\(text) after \(instant)")
                    let end = try await pool.query(
                        "SELECT switchyard.window_next_end($1::jsonb, $2)", [text, instant]
                    ).scalar(Date?.self)
                    #expect(end == window.nextEnd(after: instant), "end: \(text) after \(instant)")
                }
            }
        }
    }

    @Test("background waits outside its window (claims nothing), runs inside it; interactive never waits")
    func waitsForTheWindow() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await Self.importCatalog(pool, windowStartsIn: 7200)
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            let background = try await store.submit(Submission(request: Self.hello, priority: .background))
            let interactive = try await store.submit(Submission(request: Self.hello))

            let gate = try await BackgroundGate.check(pool)
            #expect(!gate.isOpen)
            #expect(gate.reason == "no model is within the background price ceiling now")
            let nextOpen = try #require(gate.nextOpenAt)
            #expect(abs(nextOpen.timeIntervalSinceNow - 7200) < 120)
            // The gate names what holds it: tiers with the ceiling, tiers alone (a typo left after
            // `background ceiling none` was reported as a price ceiling that did not exist).
            try await BackgroundPolicy.set("background_tiers", to: "cheep", in: pool)
            // (No model has that tier: at no hour.)
            #expect(try await BackgroundGate.check(pool).reason
                .hasPrefix("no model is within the background price ceiling and tiers (cheep) at any hour: "))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "", in: pool)
            #expect(try await BackgroundGate.check(pool).reason
                .hasPrefix("no model is within the background tiers (cheep) at any hour: "))
            try await BackgroundPolicy.set("background_tiers", to: "", in: pool)
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            // Interactive work is claimed; background work is not even claimed (no claim-and-release churn).
            #expect(try await Self.claim(store).map(\.id) == [interactive])
            #expect(try await pool.query("SELECT attempt FROM switchyard.jobs WHERE id = $1", [background]).scalar(Int.self) == 0)

            // The window moves to now (the catalog is data; workers reload it).
            try await Self.importCatalog(pool, windowStartsIn: -60)
            #expect(try await BackgroundGate.check(pool).isOpen)
            #expect(try await Self.claim(store).map(\.id) == [background])

            // In its window, within the ceiling, its breaker open: the breaker holds the gate, until it
            // turns half-open (a walkthrough's gate blamed the price and named a window hours off).
            try await pool.query(
                "INSERT INTO switchyard.model_health (model, state, opened_at) VALUES ('premium', 'open', now() - interval '10 seconds')")
            let broken = try await BackgroundGate.check(pool)
            #expect(!broken.isOpen)
            #expect(broken.reason == "no model is within the background price ceiling now but premium, whose breaker is open",
                    "\(broken.reason)")
            #expect(abs((broken.nextOpenAt ?? .distantPast).timeIntervalSinceNow - 20) < 10, "\(String(describing: broken.nextOpenAt))")
            try await pool.query("DELETE FROM switchyard.model_health")
            // A ceiling below every price at every hour: said so, with what ends the wait.
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.0000001", in: pool)
            let never = try await BackgroundGate.check(pool)
            #expect(never.nextOpenAt == nil)
            #expect(never.reason.hasPrefix("no model is within the background price ceiling at any hour: it waits until"),
                    "\(never.reason)")
        }
    }

    @Test("pause stops background claims, even urgent ones; resume restarts them")
    func pauseAndResume() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let urgent = try await store.submit(
                Submission(request: Self.hello, priority: .background, deadline: Date().addingTimeInterval(30))
            )
            try await BackgroundPolicy.set("background_paused", to: "true", in: pool)
            let gate = try await BackgroundGate.check(pool)
            #expect(!gate.isOpen)
            #expect(gate.reason.contains("paused"))
            #expect(try await Self.claim(store).isEmpty)
            try await BackgroundPolicy.set("background_paused", to: "false", in: pool)
            #expect(try await Self.claim(store).map(\.id) == [urgent])
        }
    }

    @Test("drain --until ignores the ceiling until then")
    func drainUntil() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await Self.importCatalog(pool, windowStartsIn: 7200)
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            let job = try await store.submit(Submission(request: Self.hello, priority: .background))
            #expect(try await Self.claim(store).isEmpty)
            try await BackgroundPolicy.set(
                "background_drain_until", to: Date().addingTimeInterval(600).postgresText, in: pool
            )
            let policy = try await BackgroundPolicy.load(pool)
            #expect(policy.isDraining(at: Date()))
            // In UTC, to the second, as the other lines say it (not "2026-11-28 04:37:43.786691+00").
            let reason = try await BackgroundGate.check(pool).reason
            #expect(reason.range(of: #"^draining until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, whatever the prices$"#,
                                 options: .regularExpression) != nil, "\(reason)")
            #expect(try await Self.claim(store).map(\.id) == [job])
        }
    }

    @Test("a window's time zone must be one Postgres knows and reads as the worker does; one stored anyway stops no claim")
    func windowTimeZones() async throws {
        try await TestDatabase.withMigratedPool { pool in
            @Sendable func document(_ zone: String) -> Data {
                Data(
                    #"""
                    {"models": {"m": {"provider": "simulated", "price_per_1k_input": 0.004, "price_per_1k_output": 0.004,
                                      "price_windows": [{"start": "00:00", "end": "24:00", "time_zone": "\#(zone)",
                                                         "multiplier": 0.25}]}},
                     "routing_rules": {"default": {"primary": "m"}}}
                    """#.utf8)
            }
            let catalogs = CatalogStore(pool: pool)
            // Foundation takes these; Postgres does not know them, or reads them otherwise
            // ("GMT+8" is UTC-8 to Postgres, "CET" has no summer time there).
            for (zone, message) in [
                ("GMT+0800", "is not an IANA time zone Postgres knows"), ("GMT+8", "is not an IANA time zone Postgres knows"),
                ("IST", "is not an IANA time zone Postgres knows"), ("CET", "is read as UTC+01:00 by Postgres but as UTC+02:00"),
            ] {
                let error = await #expect(throws: QueueError.self) { try await catalogs.importDocument(document(zone)) }
                #expect(error?.message.contains("models.m.price_windows[0].time_zone") == true, "\(zone)")
                #expect(error?.message.contains(message) == true, "\(zone): \(String(describing: error))")
                #expect(try await catalogs.load().models.isEmpty, "nothing written for \(zone)")
            }
            // Listed with the file's other problems (a walkthrough's GMT+8 came up only once its
            // "rpm" was fixed).
            let both = Data(#"""
                {"models": {"m": {"provider": "simulated", "rpm": 4,
                                  "price_windows": [{"start": "00:00", "end": "24:00", "time_zone": "GMT+8", "multiplier": 0.5}]}}}
                """#.utf8)
            let listed = await #expect(throws: QueueError.self) { try await catalogs.importDocument(both) }
            #expect(listed?.message.contains("models.m.rpm: unknown field") == true, "\(String(describing: listed))")
            #expect(listed?.message.contains(#"models.m.price_windows[0].time_zone: "GMT+8" is not an IANA"#) == true,
                    "\(String(describing: listed))")
            _ = try await catalogs.importDocument(document("Asia/Shanghai"))
            // Written by hand: refused by the table.
            await #expect(throws: PostgresError.self) {
                try await pool.query(
                    #"UPDATE switchyard.models SET price_windows = '[{"start": "00:00", "end": "24:00", "time_zone": "GMT+0800", "multiplier": 0.25}]'"#)
            }
            // One there already (from before the check) is a window that never opens: the gate reads
            // the list price, and claims go on. So is one Postgres would read, but otherwise than
            // the worker: an abbreviation, a POSIX offset.
            for zone in ["PST", "GMT+8", "GMT+0800"] {
                try await pool.withTransaction { connection in
                    try await connection.query("SET LOCAL session_replication_role = replica")
                    try await connection.query(
                        #"UPDATE switchyard.models SET price_windows = jsonb_build_array(jsonb_build_object('start', '00:00', 'end', '24:00', 'time_zone', $1::text, 'multiplier', 0.25))"#,
                        [zone])
                }
                let multipliers = try await pool.query(
                    "SELECT input FROM switchyard.models m, switchyard.price_multipliers(m.price_windows, now())"
                ).scalar(Decimal.self)
                #expect(multipliers == 1, "\(zone): the window must not open")
            }
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            let store = QueueStore(pool: pool)
            let interactive = try await store.submit(Submission(request: Self.hello))
            _ = try await store.submit(Submission(request: Self.hello, priority: .background))
            #expect(try await Self.claim(store).map(\.id) == [interactive])
            // No window it can read ever opens: the list price, at any hour.
            #expect(try await BackgroundGate.check(pool).reason.hasPrefix("no model is within the background price ceiling at any hour"))
        }
    }

    @Test("within the ceiling at list price, the gate opens when the surcharge open now ends")
    func surchargeEndsOpenTheGate() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let calendar = Calendar(identifier: .gregorian)
            var utc = calendar
            utc.timeZone = .gmt
            let now = Date()
            let start = utc.dateComponents([.hour, .minute], from: now.addingTimeInterval(-600))
            let end = utc.dateComponents([.hour, .minute], from: now.addingTimeInterval(1800))
            func hhmm(_ p: DateComponents) -> String { String(format: "%02d:%02d", p.hour ?? 0, p.minute ?? 0) }
            let document = """
                {"models": {"m": {"provider": "simulated", "price_per_1k_input": 0.001, "price_per_1k_output": 0.001,
                                  "price_windows": [{"start": "\(hhmm(start))", "end": "\(hhmm(end))", "multiplier": 5}]}},
                 "routing_rules": {"default": {"primary": "m"}}}
                """
            _ = try await CatalogStore(pool: pool).importDocument(Data(document.utf8))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            let gate = try await BackgroundGate.check(pool)
            #expect(!gate.isOpen)
            let expected = try #require(try PriceWindow.parse(
                ["start": .string(hhmm(start)), "end": .string(hhmm(end)), "multiplier": 5]).nextEnd(after: now))
            #expect(gate.nextOpenAt.map { abs($0.timeIntervalSince(expected)) < 1 } == true, "\(gate)")
        }
    }

    @Test("background tiers are read without the spaces around them, by the gate as by the worker")
    func tiersWithSpaces() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await Self.importCatalog(pool, windowStartsIn: 7200)  // one premium model
            try await pool.query("UPDATE switchyard.settings SET value = 'cheap, premium ' WHERE name = 'background_tiers'")
            #expect(try await BackgroundGate.check(pool).isOpen)
        }
    }

    @Test("a ceiling written by hand that is not a number is ignored, by the gate as by the planner: claims go on")
    func handWrittenCeilingThatIsNotANumber() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await Self.importCatalog(pool, windowStartsIn: 7200)  // $0.01/1K now, over the global ceiling
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            let background = try await store.submit(Submission(request: Self.hello, priority: .background))
            // psql, not the import (which refuses these): the rule's own ceiling gives way to the global one.
            for ceiling in [#""cheap""#, "true", "[1]", #""""#, #""0.00005abc""#] {
                try await pool.query(
                    "UPDATE switchyard.routes SET settings = jsonb_build_object('background_max_cost_per_1k', $1::jsonb)",
                    [ceiling])
                let gate = try await BackgroundGate.check(pool)
                #expect(!gate.isOpen, "\(ceiling)")
                #expect(gate.reason == "no model is within the background price ceiling now", "\(ceiling)")
                let rule = try await CatalogStore(pool: pool).load().rule(named: "default")
                #expect(try await BackgroundPolicy.load(pool).ceiling(for: rule) == Decimal(string: "0.002"))
                let interactive = try await store.submit(Submission(request: Self.hello))
                #expect(try await Self.claim(store).map(\.id) == [interactive], "\(ceiling)")
            }
            // A number in a string still counts, as it did.
            try await pool.query(
                #"UPDATE switchyard.routes SET settings = '{"background_max_cost_per_1k": "0.5"}'"#)
            #expect(try await BackgroundGate.check(pool).isOpen)
            // So does the global one; one that is not a number is no ceiling, for the planner too.
            try await pool.query("UPDATE switchyard.routes SET settings = '{}'")
            // The global one is checked when it is written (0013); one already in the table from
            // before that check is no ceiling either.
            await #expect(throws: (any Error).self) {
                try await BackgroundPolicy.set("background_max_cost_per_1k", to: "lots", in: pool)
            }
            try await pool.query("ALTER TABLE switchyard.settings DISABLE TRIGGER settings_before_write")
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "lots", in: pool)
            try await pool.query("ALTER TABLE switchyard.settings ENABLE TRIGGER settings_before_write")
            #expect(try await BackgroundPolicy.load(pool).maxCostPer1K == nil)
            #expect(try await BackgroundGate.check(pool).reason == "no background price ceiling")
            #expect(try await Self.claim(store).map(\.id) == [background])
        }
    }

    @Test("a setting read on the claim or health path is checked when written: a bad value is refused with the fix")
    func settingsCheckedWhenWritten() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            for (name, bad) in [
                ("background_drain_until", "soon"), ("background_escalation_seconds", "an hour"),
                ("background_max_cost_per_1k", "cheap"), ("background_paused", "yes"),
                ("breaker_consecutive_failures", "five"), ("breaker_error_rate", "2%"), ("breaker_open_seconds", "-1"),
                // Plain numbers that mean nothing here (a walkthrough's were taken): a share over 1,
                // a window of no time.
                ("breaker_error_rate", "30"), ("breaker_window_seconds", "0"),
            ] {
                do {
                    try await pool.query("UPDATE switchyard.settings SET value = $2 WHERE name = $1", [name, bad])
                    Issue.record("\(name) = \(bad) was stored")
                } catch let error as PostgresError {
                    #expect(error.message.contains("setting \(name) must be"), "\(error)")
                    #expect(error.hint?.isEmpty == false, "\(name): says what to write")
                }
            }
            for (name, good) in [
                ("background_drain_until", "2026-11-27T06:00:00Z"), ("background_drain_until", ""),
                ("background_escalation_seconds", "600"), ("breaker_error_rate", "0.05"), ("background_paused", "false"),
            ] {
                try await pool.query("UPDATE switchyard.settings SET value = $2 WHERE name = $1", [name, good])
            }
            let id = try await store.submit(Submission(request: Self.hello))
            #expect(try await Self.claim(store).map(\.id) == [id])
        }
    }

    @Test("a drain time is stored as the one UTC time the gate and the planner both read, resolved when written")
    func drainUntilStoredAbsolute() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await Self.importCatalog(pool, windowStartsIn: 7200)
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            @Sendable func stored(_ value: String) async throws -> String {
                try await BackgroundPolicy.set("background_drain_until", to: value, in: pool)
                return try await pool.query("SELECT value FROM switchyard.settings WHERE name = 'background_drain_until'")
                    .first!.decode("value", as: String.self)
            }
            #expect(try await stored("2026-11-27 06:00") == "2026-11-27T06:00:00.000000Z")
            #expect(try await stored("2026-11-27T06:00:00+05:30") == "2026-11-27T00:30:00.000000Z")
            #expect(try await stored("") == "")
            // A word Postgres resolves when it reads it is resolved once, now: the gate used to
            // re-read 'tomorrow' on every claim (a drain with no end) while the planner read none.
            let tomorrow = try #require(ISO8601Parsing.date(try await stored("tomorrow")))
            #expect(tomorrow > Date() && tomorrow <= Date().addingTimeInterval(86_400))
            #expect(try await BackgroundPolicy.load(pool).isDraining(at: Date()))
            #expect(try await BackgroundGate.check(pool).reason.hasPrefix("draining until"))
            for bad in ["-infinity", "10000-01-01", "soon"] {
                let error = await #expect(throws: PostgresError.self, "\(bad)") {
                    try await BackgroundPolicy.set("background_drain_until", to: bad, in: pool)
                }
                #expect(error?.message.contains("must be a time between the years 1 and 9999") == true, "\(bad)")
                #expect(error?.hint?.contains("drain --until 2h") == true)
            }
            let kept = try await pool.query("SELECT value FROM switchyard.settings WHERE name = 'background_drain_until'")
            #expect(try kept.first!.decode("value", as: String.self) == tomorrow.postgresText)  // the refusals changed nothing
            // No end: the last instant both read.
            #expect(try await stored("infinity") == "9999-12-31T23:59:59.999999Z")
            #expect(try await BackgroundPolicy.load(pool).isDraining(at: Date()))
            #expect(try await BackgroundGate.check(pool).reason.hasPrefix("draining until"))
        }
    }

    @Test("a drain time stored before it was checked is rewritten as an absolute time, or cleared when it is none")
    func drainUntilStoredBeforeTheCheck() async throws {
        for (before, after) in [
            ("infinity", "9999-12-31T23:59:59.999999Z"), ("2026-11-27 06:00", "2026-11-27T06:00:00.000000Z"),
            ("soon", ""),
        ] {
            try await TestDatabase.withEmpty { configuration in
                let pool = PostgresPool(configuration)
                _ = try await Migrator(migrations: Migration.all.filter { $0.version < 16 }).migrate(pool)
                // As a value written before 0013 checked it.
                try await pool.query("ALTER TABLE switchyard.settings DISABLE TRIGGER settings_before_write")
                try await pool.query(
                    "UPDATE switchyard.settings SET value = $1 WHERE name = 'background_drain_until'", [before])
                try await pool.query("ALTER TABLE switchyard.settings ENABLE TRIGGER settings_before_write")
                #expect(try await Migrator().migrate(pool).map(\.version).contains(16))
                let value = try await pool.query(
                    "SELECT value FROM switchyard.settings WHERE name = 'background_drain_until'"
                ).first!.decode("value", as: String.self)
                #expect(value == after, "\(before)")
                await pool.close()
            }
        }
    }

    @Test("with the gate closed, only background jobs whose deadline is near are claimed")
    func escalationClaims() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await Self.importCatalog(pool, windowStartsIn: 7200)
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            _ = try await store.submit(
                Submission(request: Self.hello, priority: .background, deadline: Date().addingTimeInterval(6 * 3600))
            )
            let urgent = try await store.submit(
                Submission(request: Self.hello, priority: .background, deadline: Date().addingTimeInterval(60))
            )
            #expect(try await Self.claim(store).map(\.id) == [urgent])
        }
    }

    @Test("price windows are validated on import, with the path of each bad one")
    func importValidation() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let document = #"{"models": {"m": {"provider": "simulated", "price_windows": [{"start": "9am", "end": "17:00", "multiplier": 0.5}]}}}"#
            let error = try await #require(throws: QueueError.self) {
                _ = try await CatalogStore(pool: pool).importDocument(Data(document.utf8))
            }
            #expect(error.description.contains("models.m.price_windows[0]"))
            #expect(error.description.contains("\"start\" must be a time like \"16:30\""))
        }
    }

    /// A review's `UPDATE … SET price_windows = '[{"start": "7pm", …}]'` made every claim raise
    /// (the gate casts each window's fields), interactive jobs too, until it was put right.
    @Test("the table refuses by SQL the windows the import refuses, and keeps those it keeps; the claim goes on")
    func windowShapeBySQL() async throws {
        let windows: [(String, Bool)] = [
            (#"{"start": "22:00", "end": "06:00", "multiplier": 0.5}"#, true),
            (#"{"start": "9:7", "end": "+10:00", "multiplier": 1, "days": ["Monday", 7]}"#, true),
            (#"{"start": "00:00", "end": "24:00", "input_multiplier": 0, "output_multiplier": 10, "time_zone": "UTC"}"#, true),
            (#"{"start": "7pm", "end": "9pm", "multiplier": 0.5}"#, false),
            (#"{"start": "10::30", "end": "11:00", "multiplier": 0.5}"#, false),
            (#"{"start": "10:00", "end": "24:30", "multiplier": 0.5}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": "half"}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 11}"#, false),
            (#"{"start": "10:00", "end": "11:00"}"#, false),
            (#"{"start": "10:00", "end": "11:00", "input_multiplier": 0.5}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 0.5, "days": ["xyz"]}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 0.5, "days": [8]}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 0.5, "days": [2.5]}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 0.5, "days": []}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 0.5, "days": "mon"}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 0.5, "note": "x"}"#, false),
            (#"{"start": 10, "end": "11:00", "multiplier": 0.5}"#, false),
            (#"{"end": "11:00", "multiplier": 0.5}"#, false),
            (#"{"start": "10:00", "end": "11:00", "multiplier": 0.5, "time_zone": 8}"#, false),
            (#""22:00-06:00""#, false),
        ]
        try await TestDatabase.withMigratedPool { pool in
            let catalogs = CatalogStore(pool: pool)
            _ = try await catalogs.importDocument(
                Data(#"{"models": {"m": {"provider": "simulated"}}, "routing_rules": {"default": {"primary": "m"}}}"#.utf8))
            for (window, readable) in windows {
                let imported = #"{"models": {"m": {"provider": "simulated", "price_windows": [\#(window)]}}}"#
                let byImport = (try? await catalogs.importDocument(Data(imported.utf8), mode: .merge)) != nil
                #expect(byImport == readable, "import: \(window)")
                let bySQL: Bool
                do {
                    try await pool.query(
                        "UPDATE switchyard.models SET price_windows = jsonb_build_array($1::jsonb) WHERE name = 'm'", [window])
                    bySQL = true
                } catch let error as PostgresError {
                    #expect(error.message.hasPrefix("model m: price_windows[0] "), "\(error.message)")
                    bySQL = false
                }
                #expect(bySQL == readable, "SQL: \(window)")
            }
            let notAnArray = await #expect(throws: PostgresError.self) {
                try await pool.query(#"UPDATE switchyard.models SET price_windows = '{"start": "10:00"}'"#)
            }
            #expect(notAnArray?.message.contains("price_windows must be an array") == true)
            // A day of 1.0 (jsonb keeps the scale; the import writes 1): the gate's ::integer does
            // not read it, so SQL may not write it.
            await #expect(throws: PostgresError.self) {
                try await pool.query(
                    #"UPDATE switchyard.models SET price_windows = '[{"start": "22:00", "end": "06:00", "multiplier": 0.5, "days": [1.0, 7]}]'"#)
            }
            // What the table kept, the claim reads.
            let store = QueueStore(pool: pool)
            let job = try await store.submit(Submission(request: Self.hello))
            #expect(try await Self.claim(store).map(\.id) == [job])
        }
    }
}
