import Foundation
import Postgres
import QueueModel
import Testing

/// Alerts raise and clear on scripted breaches, evaluated at injected times; a model alert opens
/// the model's breaker and the router then avoids it.
@Suite("Alerts on a scripted breach")
struct AlertTests {
    static let catalog = """
        {
          "models": {
            "flaky":  {"provider": "simulated", "tier": "standard", "capabilities": {"reasoning": 80}},
            "steady": {"provider": "simulated", "tier": "standard", "capabilities": {"reasoning": 70}}
          },
          "routing_rules": {"chat": {"primary": "flaky", "fallback": ["steady"]}}
        }
        """

    static func withCatalog<T>(_ body: (PostgresPool) async throws -> T) async throws -> T {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
            return try await body(pool)
        }
    }

    /// `count` calls to `model` finishing in the `spread` seconds before `end`; `failing` of them
    /// answer 500 and the job falls back to steady; `slow` of them take 4 s.
    static func calls(
        _ model: String, count: Int, failing: Int = 0, slow: Int = 0, end: Date, spread: Double = 240,
        firstJob: Int64
    ) -> [ResultRow] {
        (0..<count).map { index in
            let finished = end.addingTimeInterval(-spread * Double(index) / Double(count))
            if index < failing {
                return ResultRow(
                    job: firstJob + Int64(index), model: "steady", tier: "secondary", latencyMS: 700,
                    finishedAt: finished,
                    trail: [
                        ResultRow.call(model, outcome: "error", latencyMS: 300, httpStatus: 500),
                        ResultRow.call("steady", tier: "secondary", latencyMS: 400),
                    ])
            }
            let latency = index < failing + slow ? 4000.0 : 300
            return ResultRow(
                job: firstJob + Int64(index), model: model, latencyMS: latency, finishedAt: finished,
                trail: [ResultRow.call(model, latencyMS: latency)])
        }
    }

    static let hello = RoutingRequest(body: ["messages": [["role": "user", "content": "hi"]]], taskClass: "chat")

    @Test("a model's primary calls over their target raise the latency alert, whatever a few calls in another tier took")
    func latencyJudgedByATierWithEnoughCalls() async throws {
        try await Self.withCatalog { pool in
            let at = Date()
            // 60 primary calls at 2 s (target 1.5 s), and 3 secondary calls at 9 s (target 3 s, too
            // few calls to judge): the primary ones decide.
            var rows = (0..<60).map { index in
                ResultRow(
                    job: 5000 + Int64(index), model: "steady", latencyMS: 2000,
                    finishedAt: at.addingTimeInterval(-Double(index)), trail: [ResultRow.call("steady", latencyMS: 2000)])
            }
            rows += (0..<3).map { index in
                ResultRow(
                    job: 6000 + Int64(index), model: "steady", tier: "secondary", latencyMS: 9000,
                    finishedAt: at.addingTimeInterval(-Double(index)),
                    trail: [ResultRow.call("steady", tier: "secondary", latencyMS: 9000)])
            }
            try await ResultRow.insert(rows, into: pool)
            let events = try await AlertStore(pool: pool).evaluate(at: at)
            let latency = events.first { $0.kind == "latency" && $0.subject == "steady" }
            #expect(latency?.event == .raised, "\(events)")
            #expect(latency?.message.contains("as primary") == true, "\(String(describing: latency))")
        }
    }

    /// `count` primary calls to `model` taking `latencyMS` each, with `targetMS` in their trail
    /// entries, finishing in the minute before `at`.
    static func primaryCalls(
        _ model: String, count: Int, latencyMS: Double, targetMS: JSONValue?, at: Date, firstJob: Int64
    ) -> [ResultRow] {
        (0..<count).map { index in
            ResultRow(
                job: firstJob + Int64(index), model: model, latencyMS: latencyMS,
                finishedAt: at.addingTimeInterval(-Double(index)),
                trail: [ResultRow.call(model, latencyMS: latencyMS, targetMS: targetMS)])
        }
    }

    @Test("a primary call of a rule with max_latency_ms is judged by it, not by the primary tier's setting")
    func latencyJudgedByTheRulesTarget() async throws {
        try await Self.withCatalog { pool in
            let at = Date()
            // steady's calls take 4 s, in their rule's 5 s: no alert, although 4 s is over 1.5 s.
            // flaky's take 6 s against the same 5 s: raised, at the rule's target.
            try await ResultRow.insert(
                Self.primaryCalls("steady", count: 60, latencyMS: 4000, targetMS: 5000, at: at, firstJob: 1)
                    + Self.primaryCalls("flaky", count: 60, latencyMS: 6000, targetMS: 5000, at: at, firstJob: 100),
                into: pool)
            let events = try await AlertStore(pool: pool).evaluate(at: at)
            #expect(events.map(\.subject) == ["flaky"], "\(events)")
            let raised = try #require(events.first)
            #expect(raised.kind == "latency" && raised.value == 6000 && raised.threshold == 5000)
            #expect(raised.message.contains("(target 5000 ms: its rule's max_latency_ms, 60 calls)"), "\(raised.message)")

            // A model that is primary of two rules is judged per target: its calls in a rule of
            // 10 s do not hide those over the rule of 5 s.
            try await ResultRow.insert(
                Self.primaryCalls("steady", count: 60, latencyMS: 5500, targetMS: 10000, at: at, firstJob: 200)
                    + Self.primaryCalls("steady", count: 60, latencyMS: 5500, targetMS: 5000, at: at, firstJob: 300),
                into: pool)
            let measured = try await pool.query(
                "SELECT subject, value, threshold FROM switchyard.alert_measurements($1) WHERE kind = 'latency' ORDER BY 1",
                [at]
            ).map { "\(try $0.decode("subject", as: String.self)) \(try $0.decode("threshold", as: Double.self))" }
            #expect(measured == ["flaky 5000.0", "steady 5000.0"])

            // Turned off for primary calls, the tier's calls are not judged, rule targets or not.
            try await pool.query("UPDATE switchyard.settings SET value = 'off' WHERE name = 'alert_latency_target_ms_primary'")
            let off = try await pool.query(
                "SELECT count(*) FROM switchyard.alert_measurements($1) WHERE kind = 'latency'", [at]
            ).scalar(Int.self)
            #expect(off == 0)
        }
    }

    /// A realistic run of the example catalog raised these on noise; an outage must still trip
    /// them at once.
    @Test("a rate over its limit by chance on a few dozen calls raises nothing; an outage does, and so does the breaker")
    func ratesJudgedWithConfidence() async throws {
        try await Self.withCatalog { pool in
            func bound(_ events: Int, _ total: Int) async throws -> Double {
                try await pool.query("SELECT switchyard.rate_lower_bound($1, $2)", [events, total]).scalar(Double.self)
            }
            #expect(try await bound(0, 0) == 0)
            #expect(try await bound(2, 51) < 0.02)
            #expect(try await bound(50, 50) > 0.9)
            #expect(try await bound(10, 100) > 0.02)
            // The breaker's rule: 3 failures in 91 requests is chance; 10 in 100 and 50 in 50 are not.
            for (requests, failures, opens) in [(91, 3, false), (100, 10, true), (50, 50, true)] {
                let exceeded = try await pool.query(
                    "SELECT switchyard.breaker_error_rate_exceeded($1, $2)", [requests, failures]
                ).scalar(Bool.self)
                #expect(exceeded == opens, "\(failures) of \(requests)")
            }

            let at = Date()
            // steady: 2 errors in 51 calls (3.9% against 2%: chance for a model failing 0.5%);
            // flaky: 5 timeouts of 81 at its rule's 5 s (P95 over the target, 6%: chance at 2.4%).
            try await ResultRow.insert(
                Self.calls("steady", count: 51, failing: 2, end: at, firstJob: 1)
                    + (0..<81).map { index in
                        let latency = index < 5 ? 5000.3 : 2000
                        return ResultRow(
                            job: 1000 + Int64(index), model: "flaky", latencyMS: latency,
                            finishedAt: at.addingTimeInterval(-Double(index)),
                            trail: [ResultRow.call("flaky", outcome: index < 5 ? "timeout" : "succeeded", latencyMS: latency, targetMS: 5000)])
                    },
                into: pool)
            let quiet = try await AlertStore(pool: pool).evaluate(at: at)
            #expect(quiet.isEmpty, "\(quiet)")

            // An outage: 40 more errors for steady, 40 more timeouts for flaky.
            try await ResultRow.insert(
                Self.calls("steady", count: 40, failing: 40, end: at, firstJob: 2000)
                    + (0..<40).map { index in
                        ResultRow(
                            job: 3000 + Int64(index), model: "flaky", latencyMS: 5000.3,
                            finishedAt: at.addingTimeInterval(-Double(index)),
                            trail: [ResultRow.call("flaky", outcome: "timeout", latencyMS: 5000.3, targetMS: 5000)])
                    },
                into: pool)
            let raised = try await AlertStore(pool: pool).evaluate(at: at.addingTimeInterval(1))
            #expect(Set(raised.map { "\($0.kind) \($0.subject)" }) == ["error_rate steady", "latency flaky"], "\(raised)")
        }
    }

    /// A soak's model answering 95% of its calls, with 5% rate limits it asked to wait out, was
    /// paged by the error-rate alert, which then took it out of rotation.
    @Test("rate limits do not count in a model's error-rate alert; its 500s do")
    func rateLimitsAreNoErrorRate() async throws {
        try await Self.withCatalog { pool in
            let at = Date()
            try await ResultRow.insert(
                (0..<200).map { index in
                    let limited = index < 20
                    return ResultRow(
                        job: Int64(index + 1), model: "steady", latencyMS: 300, finishedAt: at.addingTimeInterval(-Double(index)),
                        trail: [ResultRow.call(
                            "steady", outcome: limited ? "rate_limited" : "succeeded", latencyMS: 300,
                            httpStatus: limited ? 429 : 200)])
                }, into: pool)
            #expect(try await AlertStore(pool: pool).evaluate(at: at).isEmpty)
            try await ResultRow.insert(Self.calls("steady", count: 40, failing: 40, end: at, firstJob: 1000), into: pool)
            let raised = try await AlertStore(pool: pool).evaluate(at: at.addingTimeInterval(1))
            #expect(raised.map { "\($0.kind) \($0.subject)" } == ["error_rate steady"], "\(raised)")
        }
    }

    /// A code review: the group a model's latency alert showed was the one furthest over its
    /// target, breached or not, so a small group the confidence rule spared hid a large breached one.
    @Test("a model's latency alert shows a breached group before a small one further over its target")
    func breachedGroupFirst() async throws {
        try await Self.withCatalog { pool in
            let at = Date()
            // Primary, rule target 5 s: 50 calls, 5 at 20 s (P95 20 s, 4x over; the share not
            // surely over 5%). Secondary, 3 s: 1000 calls, 80 at 4 s (8%: surely over).
            let primary = (0..<50).map { index in
                let latency = index < 5 ? 20000.0 : 1000
                return ResultRow(
                    job: 1 + Int64(index), model: "steady", latencyMS: latency, finishedAt: at.addingTimeInterval(-Double(index % 200)),
                    trail: [ResultRow.call("steady", latencyMS: latency, targetMS: 5000)])
            }
            let secondary = (0..<1000).map { index in
                let latency = index < 80 ? 4000.0 : 1000
                return ResultRow(
                    job: 100 + Int64(index), model: "steady", tier: "secondary", latencyMS: latency,
                    finishedAt: at.addingTimeInterval(-Double(index % 200)),
                    trail: [ResultRow.call("steady", tier: "secondary", latencyMS: latency)])
            }
            try await ResultRow.insert(primary + secondary, into: pool)
            let raised = try await AlertStore(pool: pool).evaluate(at: at)
            #expect(raised.map(\.subject) == ["steady"], "\(raised)")
            #expect(raised.first?.message.contains("as secondary") == true, "\(raised)")
        }
    }

    @Test("a trail entry's target_ms that is not a number of milliseconds counts as none; the alerts still run")
    func oddTargetIgnored() async throws {
        try await Self.withCatalog { pool in
            let at = Date()
            var rows: [ResultRow] = []
            for (offset, odd) in ([JSONValue.string("abc"), -5, 0, 1e300, ["ms": 5000]] as [JSONValue]).enumerated() {
                rows += Self.primaryCalls(
                    "steady", count: 12, latencyMS: 2000, targetMS: odd, at: at, firstJob: Int64(offset * 100 + 1))
            }
            try await ResultRow.insert(rows, into: pool)
            let events = try await AlertStore(pool: pool).evaluate(at: at)
            #expect(events.map(\.subject) == ["steady"], "\(events)")
            #expect(events.first?.threshold == 1500)
        }
    }

    @Test("an alert setting that does not fit is refused when written, and one stored before is set back")
    func alertSettingsChecked() async throws {
        let bad: [(name: String, value: String, message: String)] = [
            ("alert_error_rate", "abc", "must be a fraction from 0 to 1, or off"),
            ("alert_error_rate", "NaN", "must be a fraction from 0 to 1"),
            ("alert_queue_wait_p95_ms", "", "must be a number of at least 0, or off"),
            ("alert_error_window_seconds", "1e12", "must be a number of seconds from 1 to 31536000"),
            ("alert_latency_window_seconds", "0", "must be a number of seconds from 1"),
            ("alert_opens_breaker", "yes", "must be true or false"),
            ("alert_min_calls", "off", "must be a whole number"),
        ]
        try await TestDatabase.withMigratedPool { pool in
            for setting in bad {
                let error = await #expect(throws: PostgresError.self) {
                    try await pool.query(
                        "UPDATE switchyard.settings SET value = $2 WHERE name = $1", [setting.name, setting.value])
                }
                #expect(error?.message.contains(setting.message) == true, "\(setting): \(String(describing: error))")
            }
            for (name, value) in [("alert_error_rate", "off"), ("alert_error_rate", "0.5"), ("alert_opens_breaker", "false"),
                                  ("alert_error_window_seconds", "600"), ("alert_queue_wait_p95_ms", " OFF "),
                                  ("alert_opens_breaker", "TRUE")] {
                try await pool.query("UPDATE switchyard.settings SET value = $2 WHERE name = $1", [name, value])
            }
            // off, true and false in any case are stored as they read.
            #expect(
                try await pool.query(
                    "SELECT string_agg(value, ',' ORDER BY name) FROM switchyard.settings WHERE name IN ('alert_queue_wait_p95_ms', 'alert_opens_breaker')"
                ).scalar(String.self) == "true,off")
            _ = try await pool.query("SELECT * FROM switchyard.evaluate_alerts()")
        }
        // Stored before the check: every round of alerts failed. The migration sets them back.
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            defer { Task { await pool.close() } }
            try await Migrator(migrations: Array(Migration.all.prefix(22))).migrate(pool)
            for setting in bad {
                try await pool.query(
                    "UPDATE switchyard.settings SET value = $2 WHERE name = $1", [setting.name, setting.value])
            }
            // Turned off in capitals, which read as off: it stays off.
            try await pool.query("UPDATE switchyard.settings SET value = 'OFF' WHERE name = 'alert_latency_target_ms_primary'")
            await #expect(throws: PostgresError.self) { try await pool.query("SELECT * FROM switchyard.evaluate_alerts()") }
            try await Migrator().migrate(pool)
            let values = try await pool.query(
                "SELECT value FROM switchyard.settings WHERE name = ANY($1::text[]) ORDER BY name",
                [["alert_error_rate", "alert_error_window_seconds", "alert_latency_target_ms_primary", "alert_opens_breaker"]]
            ).map { try $0.decode("value", as: String.self) }
            // What broke every round goes back to its default; what had a meaning keeps it ("yes"
            // read as false).
            #expect(values == ["0.02", "300", "off", "false"])
            _ = try await pool.query("SELECT * FROM switchyard.evaluate_alerts()")
        }
    }

    /// An on-call walkthrough's retried background jobs finished together long after their model
    /// had recovered: their old failed calls raised "9.7% of 165 calls ended in an error over the
    /// last 5 min" and opened the healthy model's breaker.
    @Test("calls made before the window do not count in it, however recently their jobs finished")
    func windowsCountCallsByWhenTheyWereMade() async throws {
        try await Self.withCatalog { pool in
            let at = try await ResultRow.databaseNow(pool)
            let old = at.addingTimeInterval(-600)
            // 60 jobs that finished in the last minute: each failed on flaky 10 minutes ago (500s and
            // 4 s timeouts), then steady answered just now.
            let failed = ResultRow.call("flaky", outcome: "error", latencyMS: 300, httpStatus: 500, at: old)
            let timedOut = ResultRow.call("flaky", outcome: "timeout", latencyMS: 4000, at: old)
            let rows: [ResultRow] = (0..<60).map { (index: Int) -> ResultRow in
                let finished = at.addingTimeInterval(-Double(index))
                let answered = ResultRow.call("steady", tier: "secondary", latencyMS: 400, at: finished)
                return ResultRow(
                    job: Int64(index + 1), model: "steady", tier: "secondary", latencyMS: 400, finishedAt: finished,
                    trail: [index % 2 == 0 ? failed : timedOut, answered], createdAt: old.addingTimeInterval(-1))
            }
            try await ResultRow.insert(rows, into: pool)
            let events = try await AlertStore(pool: pool).evaluate(at: at)
            #expect(!events.contains { $0.subject == "flaky" }, "\(events)")
            #expect(try await HealthStore(pool: pool).snapshot().models["flaky"]?.breaker != .open)
            let calls = try await pool.query(
                "SELECT subject, calls FROM switchyard.call_stats('5 minutes', $1) WHERE dimension = 'model'", [at]
            ).map { (try $0.decode("subject", as: String.self), try $0.decode("calls", as: Int.self)) }
            #expect(calls.map(\.0) == ["steady"] && calls.first?.1 == 60, "\(calls)")
            // The view says when each call was made; over a longer window the old calls count again.
            #expect(try await pool.query(
                "SELECT count(*) FROM switchyard.calls WHERE model = 'flaky' AND called_at = $1", [old]).scalar(Int.self) == 60)
            let hour = try await pool.query(
                "SELECT errors FROM switchyard.call_stats('1 hour', $1) WHERE dimension = 'model' AND subject = 'flaky'", [at]
            ).scalar(Int.self)
            #expect(hour == 30)
            // A call that began 6 minutes ago and timed out just now counts now, where it ended (a
            // review's 6-minute timeout fell in no 5-minute window at all).
            let long = ResultRow.call("steady", outcome: "timeout", latencyMS: 360_000, at: at.addingTimeInterval(-360))
            try await ResultRow.insert(
                [ResultRow(job: 500, status: "failed", model: nil, tier: nil, finishedAt: at, trail: [long],
                           createdAt: at.addingTimeInterval(-361))], into: pool)
            let timeouts = try await pool.query(
                "SELECT timeouts FROM switchyard.call_stats('5 minutes', $1) WHERE dimension = 'model' AND subject = 'steady'", [at]
            ).scalar(Int.self)
            #expect(timeouts == 1)
            // A call of a job created inside the window was made inside it, whatever its trail's
            // time says (a worker's clock behind the database's): its time is not read at all.
            let skewed = ResultRow.call("steady", latencyMS: 300, at: at.addingTimeInterval(-900))
            try await ResultRow.insert(
                [ResultRow(job: 501, model: "steady", latencyMS: 300, finishedAt: at, trail: [skewed],
                           createdAt: at.addingTimeInterval(-60))], into: pool)
            let counted = try await pool.query(
                "SELECT calls FROM switchyard.call_stats('5 minutes', $1) WHERE dimension = 'model' AND subject = 'steady'", [at]
            ).scalar(Int.self)
            #expect(counted == 62)
        }
    }

    @Test("the windowed statistics and the alert rules run without JIT compilation")
    func windowsWithoutJIT() async throws {
        try await TestDatabase.withMigratedPool { pool in
            // Compiling them took about 0.5 s of call_stats' time over 150,000 results, 1 s of model_stats'.
            let settings = try await pool.query(
                """
                SELECT p.proname, array_to_string(p.proconfig, ',') AS config FROM pg_proc p
                WHERE p.pronamespace = 'switchyard'::regnamespace
                  AND p.proname IN ('call_stats', 'job_stats', 'model_stats', 'alert_measurements')
                ORDER BY 1
                """
            ).map { (try $0.decode("proname", as: String.self), try $0.decode("config", as: String?.self)) }
            #expect(settings.map(\.0) == ["alert_measurements", "call_stats", "job_stats", "model_stats"])
            #expect(settings.allSatisfy { $0.1 == "jit=off" }, "\(settings)")
        }
    }

    @Test("a model's error rate over 2% raises an alert, opens its breaker so the router avoids it, then clears")
    func errorRateAlert() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            // 6 of 60 calls fail: 10%, over the default 2%, with more than the 50 calls needed.
            try await ResultRow.insert(Self.calls("flaky", count: 60, failing: 6, end: at, firstJob: 1), into: pool)
            let notifications = try await pool.listen(on: [AlertStore.channel])

            let raised = try await alerts.evaluate(at: at)
            let event = try #require(raised.first { $0.kind == "error_rate" })
            #expect(raised.count == 1)
            #expect(event.event == .raised && event.subject == "flaky")
            #expect(event.value == 0.1 && event.threshold == 0.02)
            #expect(event.message.contains("10.0% of 60 calls ended in an error"))
            let notification = try #require(await firstNotification(notifications))
            let payload = try JSONValue(parsing: notification.payload)
            #expect(payload["event"] == "raised" && payload["subject"] == "flaky" && payload["kind"] == "error_rate")

            // The breaker is open fleet-wide, with the alert as its reason; a router avoids flaky.
            let snapshot = try await HealthStore(pool: pool).snapshot()
            #expect(snapshot.models["flaky"]?.breaker == .open)
            let reason = try await pool.query("SELECT reason FROM switchyard.fleet_health WHERE model = 'flaky'")
                .scalar(String.self)
            #expect(reason.hasPrefix("alert: model flaky"))
            let router = Router(catalog: try await CatalogStore(pool: pool).load())
            let plan = router.plan(for: Self.hello, state: RoutingState(models: snapshot.models))
            #expect(plan.attempts.map(\.model.name) == ["steady"])
            let dropped = plan.explanation.candidates.first { $0.model == "flaky" }
            #expect(dropped?.dropReasons == ["breaker open (unhealthy)"])

            // Still breached a little later: nothing new, no second alert.
            #expect(try await alerts.evaluate(at: at.addingTimeInterval(30)).isEmpty)
            #expect(try await alerts.open().count == 1)
            #expect(try await alerts.open().first?.latest == nil)
            // Worse since: the message keeps the figure it was raised with, and status shows the latest.
            try await ResultRow.insert(
                Self.calls("flaky", count: 20, failing: 14, end: at.addingTimeInterval(40), firstJob: 500), into: pool)
            #expect(try await alerts.evaluate(at: at.addingTimeInterval(40)).isEmpty)
            #expect(try await alerts.open().first?.latest == "25.0%")

            // The model recovers: five minutes of clean calls, and the failures age out.
            let later = at.addingTimeInterval(360)
            try await ResultRow.insert(
                Self.calls("flaky", count: 100, end: later, spread: 60, firstJob: 1000), into: pool)
            let cleared = try await alerts.evaluate(at: later)
            #expect(cleared.first?.event == .cleared)
            #expect(cleared.first?.alertID == event.alertID)
            #expect(cleared.first?.value == 0)
            let row = try #require(try await alerts.recent().first { $0.id == event.alertID })
            #expect(row.clearedAt == later && row.openedAt == at)
            // No probe has closed its breaker (nothing calls flaky here): six minutes out of rotation
            // raise the breaker alert, which opens nothing and clears when the breaker closes.
            let outage = try #require(cleared.last)
            #expect(cleared.count == 2 && outage.event == .raised && outage.kind == "breaker" && outage.subject == "flaky",
                    "\(cleared)")
            #expect(outage.message.hasPrefix("model flaky: out of rotation for 5 min "), "\(outage.message)")
            try await pool.query("UPDATE switchyard.model_health SET state = 'closed', opened_at = NULL WHERE model = 'flaky'")
            let closed = try await alerts.evaluate(at: later.addingTimeInterval(10))
            #expect(closed.map(\.event) == [.cleared] && closed.first?.message == "model flaky: its breaker is closed",
                    "\(closed)")
            #expect(try await alerts.open().isEmpty)
        }
    }

    /// A walkthrough's model, answering again after an outage its breaker caught, was taken out of
    /// rotation by this alert two minutes after its probes closed the breaker: the busy minutes
    /// before the outage aged out of the window, and the outage's errors were 5.8% of what was left.
    @Test("the error-rate alert counts a model's calls since its breaker closed, not the errors it was taken out for")
    func errorRateSinceBreakerClosed() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            // Busy and healthy, then an outage (12 failed calls), closed by its probes at -90 s, then healthy.
            try await ResultRow.insert(Self.calls("flaky", count: 200, end: at.addingTimeInterval(-200), spread: 90, firstJob: 1), into: pool)
            try await ResultRow.insert(
                Self.calls("flaky", count: 12, failing: 12, end: at.addingTimeInterval(-100), spread: 50, firstJob: 1000), into: pool)
            try await ResultRow.insert(Self.calls("flaky", count: 60, end: at, spread: 80, firstJob: 2000), into: pool)
            try await pool.query("INSERT INTO switchyard.model_health (model, state) VALUES ('flaky', 'closed')")
            try await pool.query("UPDATE switchyard.model_health SET closed_at = $1 WHERE model = 'flaky'", [at.addingTimeInterval(-90)])
            // 100 s on, the busy minutes are out of the window: 12 of 72 calls failed in it, all before the closing.
            #expect(try await alerts.evaluate(at: at.addingTimeInterval(100)).isEmpty)
            #expect(try await HealthStore(pool: pool).snapshot().models["flaky"]?.breaker == .closed)
            let measured = try await pool.query(
                "SELECT value, breached FROM switchyard.alert_measurements($1) WHERE kind = 'error_rate' AND subject = 'flaky'",
                [at.addingTimeInterval(100)])
            #expect(try measured.first?.decode("value", as: Double.self) == 0)
            // Failing again after the closing: those count, and the message says since when.
            try await ResultRow.insert(
                Self.calls("flaky", count: 10, failing: 10, end: at.addingTimeInterval(110), spread: 5, firstJob: 3000), into: pool)
            let raised = try await alerts.evaluate(at: at.addingTimeInterval(110))
            let alert = try #require(raised.first { $0.kind == "error_rate" }, "\(raised)")
            #expect(alert.message.hasPrefix("model flaky: 14.3% of 70 calls ended in an error since its breaker closed at "),
                    "\(alert.message)")
        }
    }

    /// A review: a model still failing 5% cleared on its first answers after its probes closed the
    /// breaker (no calls since read as nothing to measure), was raised again and taken out again.
    @Test("after a closing, the error-rate alert of a model still failing neither clears nor is raised again until enough calls")
    func errorRateAlertHoldsThroughClosing() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(Self.calls("flaky", count: 400, failing: 20, end: at, spread: 280, firstJob: 1), into: pool)
            let raised = try await alerts.evaluate(at: at)
            #expect(raised.map(\.kind) == ["error_rate"], "\(raised)")
            // Its probes close the breaker: no call since, nothing judged, the alert stays.
            try await pool.query("UPDATE switchyard.model_health SET state = 'closed', opened_at = NULL WHERE model = 'flaky'")
            let closedAt = try await pool.query("SELECT closed_at FROM switchyard.model_health WHERE model = 'flaky'")
                .scalar(Date.self)
            #expect(try await alerts.evaluate(at: closedAt.addingTimeInterval(1)).isEmpty)
            #expect(try await alerts.open().count == 1)
            let message = try await pool.query(
                "SELECT message FROM switchyard.alert_measurements($1) WHERE kind = 'error_rate' AND subject = 'flaky'",
                [closedAt.addingTimeInterval(1)]).scalar(String.self)
            #expect(message.contains("its breaker closed at ") && message.hasSuffix("0 calls since (0 errors), too few to judge"),
                    "\(message)")
            // No figure while too few to judge (status showed the held alert "now 0.0%"), and none at
            // an alert_min_calls of 0 either (a review: every evaluation failed on a division by zero).
            #expect(try await alerts.open().first?.latest == nil)
            try await pool.query("UPDATE switchyard.settings SET value = '0' WHERE name = 'alert_min_calls'")
            #expect(try await alerts.evaluate(at: closedAt.addingTimeInterval(2)).isEmpty)
            try await pool.query("UPDATE switchyard.settings SET value = '50' WHERE name = 'alert_min_calls'")
            // Still failing 5% after: the same alert, not a second one, and the breaker stays closed.
            try await ResultRow.insert(
                Self.calls("flaky", count: 300, failing: 15, end: closedAt.addingTimeInterval(100), spread: 90, firstJob: 1000),
                into: pool)
            #expect(try await alerts.evaluate(at: closedAt.addingTimeInterval(100)).isEmpty)
            #expect(try await alerts.open().count == 1)
            #expect(try await HealthStore(pool: pool).snapshot().models["flaky"]?.breaker == .closed)
        }
    }

    /// An on-call walkthrough's primary answered every call with a 503: its breaker opened at once
    /// and again at each failed probe, and no alert was raised (the error-rate rule never had its
    /// 50 calls).
    @Test("a breaker not closed for alert_breaker_open_seconds raises the breaker alert, through reopenings")
    func breakerOutOfRotation() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            try await pool.query(
                "INSERT INTO switchyard.model_health (model, state, opened_at, reason) VALUES ('flaky', 'open', $1, '5 failures in a row')",
                [at])
            #expect(try await alerts.evaluate(at: at.addingTimeInterval(60)).isEmpty)
            // A failed probe opens it again (a new opened_at): it has been out since the first opening.
            try await pool.query(
                "UPDATE switchyard.model_health SET state = 'open', opened_at = $1, reason = 'a probe failed while half-open'",
                [at.addingTimeInterval(90)])
            let raised = try await alerts.evaluate(at: at.addingTimeInterval(125))
            #expect(raised.map(\.kind) == ["breaker"] && raised.first?.event == .raised, "\(raised)")
            #expect(raised.first?.value == 125)
            #expect(raised.first?.message.contains("a probe failed while half-open") == true, "\(String(describing: raised.first))")
            // Its own breaker is open: the alert opens nothing, and a steady model keeps its traffic.
            #expect(try await pool.query("SELECT count(*) FROM switchyard.model_health WHERE model = 'steady'").scalar(Int.self) == 0)
            // A breaker closed long ago keeps that opening's time: set open again by hand without
            // one, it is out from now, not from then (a review's read ten minutes at once).
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, opened_at) VALUES ('steady', 'closed', $1)
                ON CONFLICT (model) DO UPDATE SET state = 'closed', opened_at = $1
                """, [at.addingTimeInterval(-3600)])
            try await pool.query("UPDATE switchyard.model_health SET state = 'open' WHERE model = 'steady'")
            #expect(try await pool.query(
                "SELECT unhealthy_since > now() - interval '1 minute' FROM switchyard.model_health WHERE model = 'steady'"
            ).scalar(Bool.self))
            // And opened from now, so it half-opens in breaker_open_seconds (it half-opened at once, on
            // the opening of an hour ago); one never opened before half-opened never (sql/0097).
            try await pool.query("INSERT INTO switchyard.model_health (model, state) VALUES ('never', 'open')")
            #expect(try await pool.query(
                """
                SELECT string_agg(model || ' ' || state || ' ' || (opened_at > now() - interval '1 minute'), ', ' ORDER BY model)
                FROM switchyard.fleet_health WHERE model IN ('steady', 'never')
                """
            ).scalar(String.self) == "never open true, steady open true")
            try await pool.query("DELETE FROM switchyard.model_health WHERE model = 'never'")
            // Off: measured no more, and the open one is cleared.
            try await pool.query("UPDATE switchyard.settings SET value = 'off' WHERE name = 'alert_breaker_open_seconds'")
            #expect(try await alerts.evaluate(at: at.addingTimeInterval(130)).map(\.event) == [.cleared])
            try await pool.query("UPDATE switchyard.model_health SET state = 'closed' WHERE model = 'steady'")
        }
    }

    /// An on-call walkthrough's model failing 30% of its calls: five answered probes closed its
    /// breaker every 35 s or so, it failed again at once, and the breaker alert never came.
    @Test("a flapping breaker is one incident: the breaker alert comes through its closings, and clears once it stays closed")
    func flappingBreaker() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            try await pool.query(
                "INSERT INTO switchyard.model_health (model, state, opened_at, reason) VALUES ('flaky', 'open', now(), 'failure rate 22.2%')")
            for _ in 0..<2 {
                try await pool.query("UPDATE switchyard.model_health SET state = 'closed', opened_at = NULL WHERE model = 'flaky'")
                try await pool.query(
                    """
                    UPDATE switchyard.model_health SET state = 'open', opened_at = now(), reason = 'failure rate 30.0%'
                    WHERE model = 'flaky'
                    """)
            }
            #expect(try await pool.query(
                "SELECT unhealthy_since <= now() AND flaps = 2 AND closed_at IS NULL FROM switchyard.model_health"
            ).scalar(Bool.self))
            let raised = try await alerts.evaluate(at: at.addingTimeInterval(125))
            let alert = try #require(raised.first { $0.kind == "breaker" }, "\(raised)")
            #expect(alert.message.contains("closed 2 times and opened again within 1 min"), "\(alert.message)")
            // Closed by its probes again: not over until it stays closed twice breaker_open_seconds (60 s).
            try await pool.query("UPDATE switchyard.model_health SET state = 'closed', opened_at = NULL WHERE model = 'flaky'")
            try await pool.query("UPDATE switchyard.model_health SET closed_at = $1 WHERE model = 'flaky'", [at.addingTimeInterval(124)])
            #expect(try await alerts.evaluate(at: at.addingTimeInterval(150)).isEmpty)
            let cleared = try await alerts.evaluate(at: at.addingTimeInterval(190))
            #expect(cleared.map(\.event) == [.cleared] && cleared.first?.message == "model flaky: its breaker is closed",
                    "\(cleared)")
            // Opened again long after it closed: a new incident, from now.
            try await pool.query("UPDATE switchyard.model_health SET closed_at = now() - interval '10 minutes' WHERE model = 'flaky'")
            try await pool.query("UPDATE switchyard.model_health SET state = 'open', opened_at = now() WHERE model = 'flaky'")
            #expect(try await pool.query(
                "SELECT unhealthy_since > now() - interval '1 minute' AND flaps = 0 FROM switchyard.model_health"
            ).scalar(Bool.self))
        }
    }

    /// A realistic run's rate rule opened a degraded model's breaker; the alert raised 4.6 s later
    /// replaced its reason with a weaker five-minute figure and restarted its open time.
    @Test("an alert leaves a breaker open already as it is; a half-open one it opens again")
    func alertKeepsOpenBreaker() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(Self.calls("flaky", count: 60, failing: 6, end: at, firstJob: 1), into: pool)
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, reason, opened_at)
                VALUES ('flaky', 'open', 'failure rate 35.0% over the last 20 requests', now() - interval '5 seconds')
                """)
            let before = try await pool.query("SELECT opened_at FROM switchyard.model_health").scalar(Date.self)
            #expect(try await alerts.evaluate(at: at).map(\.event) == [.raised])
            let kept = try #require(try await pool.query("SELECT reason, opened_at FROM switchyard.model_health").first)
            #expect(try kept.decode("reason", as: String.self) == "failure rate 35.0% over the last 20 requests")
            #expect(try kept.decode("opened_at", as: Date.self) == before)

            // Half-open when the alert raises: opened again, with the alert's reason.
            try await pool.query("DELETE FROM switchyard.alerts")
            try await pool.query(
                "UPDATE switchyard.model_health SET opened_at = now() - interval '1 hour', reason = 'x; 2 of 5 probes answered'")
            #expect(try await alerts.evaluate(at: at).map(\.event) == [.raised])
            let reopened = try #require(try await pool.query("SELECT state, reason FROM switchyard.fleet_health").first)
            #expect(try reopened.decode("state", as: String.self) == "open")
            #expect(try reopened.decode("reason", as: String.self).hasPrefix("alert: model flaky"))
        }
    }

    @Test("an alert never opens the breaker of the last healthy model of a rule")
    func lastHealthyModelKeepsItsBreaker() async throws {
        try await Self.withCatalog { pool in
            let at = try await ResultRow.databaseNow(pool)
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, opened_at, reason)
                VALUES ('steady', 'open', now(), 'test')
                """
            )
            try await ResultRow.insert(Self.calls("flaky", count: 60, failing: 6, end: at, firstJob: 1), into: pool)
            let raised = try await AlertStore(pool: pool).evaluate(at: at)
            #expect(raised.map(\.kind) == ["error_rate"])
            #expect(
                raised.first?.message.hasSuffix("breaker left closed: it is the last healthy model of rule chat")
                    == true)
            #expect(try await HealthStore(pool: pool).snapshot().models["flaky"] == nil)
        }
    }

    /// The alerts opened breakers in the order of their measurements (error rates, then latencies)
    /// while a worker's health report locks its models' rows in name order: an error-rate alert on
    /// beta and a latency alert on alpha, with a report on both between them, deadlocked (one of
    /// the two statements was cancelled a second later).
    @Test("the alerts open breakers in name order, as health reports lock them: neither waits on the other for ever")
    func alertsOpenBreakersInNameOrder() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(
                """
                {"models": {"alpha": {"provider": "simulated", "tier": "standard"},
                            "beta": {"provider": "simulated", "tier": "standard"},
                            "steady": {"provider": "simulated", "tier": "standard"}},
                 "routing_rules": {"one": {"primary": "alpha", "fallback": ["steady"]},
                                   "two": {"primary": "beta", "fallback": ["steady"]}}}
                """.utf8))
            let at = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(Self.calls("beta", count: 60, failing: 6, end: at, firstJob: 1), into: pool)
            try await ResultRow.insert(Self.calls("alpha", count: 60, slow: 6, end: at, firstJob: 1000), into: pool)
            try await pool.query("INSERT INTO switchyard.model_health (model) VALUES ('alpha'), ('beta')")
            // A session holds alpha's row; the report waits for it, then the alerts do.
            let holder = try await PostgresConnection.connect(pool.configuration)
            try await holder.query("BEGIN")
            try await holder.query("SELECT FROM switchyard.model_health WHERE model = 'alpha' FOR UPDATE")
            let reporting = Task {
                var alpha = HealthReport(model: "alpha")
                alpha.record(success: true, latencyMS: 10)
                var beta = HealthReport(model: "beta")
                beta.record(success: true, latencyMS: 10)
                return try await HealthStore(pool: pool).report([alpha, beta])
            }
            try await waitUntilBlocked(pool, calling: "report_health", "the report waits for alpha")
            let evaluating = Task { try await AlertStore(pool: pool).evaluate(at: at) }
            try await waitUntil("the alerts wait for alpha too") {
                try await pool.query(
                    """
                    SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'
                      AND (query LIKE '%report_health(%' OR query LIKE '%evaluate_alerts(%')
                    """
                ).scalar(Int.self) == 2
            }
            try await holder.query("COMMIT")
            await holder.close()
            let breakers = try await reporting.value
            let events = try await evaluating.value
            #expect(breakers.count == 2)
            #expect(Set(events.map { "\($0.kind) \($0.subject)" }) == ["error_rate beta", "latency alpha"])
            let snapshot = try await HealthStore(pool: pool).snapshot()
            #expect(snapshot.models["alpha"]?.breaker == .open && snapshot.models["beta"]?.breaker == .open)
        }
    }

    @Test("a model's P95 over its tier's target raises a latency alert; raising the target in settings clears it")
    func latencyAlert() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            // 6 of 60 primary calls take 4 s: the P95 is 4 s, over the primary target of 1.5 s.
            try await ResultRow.insert(Self.calls("flaky", count: 60, slow: 6, end: at, firstJob: 1), into: pool)
            let raised = try await alerts.evaluate(at: at)
            let event = try #require(raised.first)
            #expect(raised.count == 1)
            #expect(event.kind == "latency" && event.subject == "flaky" && event.event == .raised)
            #expect(event.value == 4000 && event.threshold == 1500)
            #expect(try await HealthStore(pool: pool).snapshot().models["flaky"]?.breaker == .open)

            try await pool.query(
                "UPDATE switchyard.settings SET value = '5000' WHERE name = 'alert_latency_target_ms_primary'")
            let cleared = try await alerts.evaluate(at: at.addingTimeInterval(10))
            #expect(cleared.map(\.event) == [.cleared])
            #expect(cleared.first?.threshold == 5000)
        }
    }

    @Test("interactive queue wait P95 over 2 s raises an alert; turning the rule off clears it")
    func queueWaitAlert() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            let waits = (0..<20).map { index in
                ResultRow(
                    job: Int64(index + 1), model: "steady", latencyMS: 300, queueWaitMS: index < 18 ? 100 : 3000,
                    finishedAt: at.addingTimeInterval(-Double(index)), trail: [ResultRow.call("steady", latencyMS: 300)]
                )
            }
            try await ResultRow.insert(waits, into: pool)
            let raised = try await alerts.evaluate(at: at)
            #expect(raised.map(\.kind) == ["queue_wait"])
            #expect(raised.first?.subject == "interactive")
            #expect((raised.first?.value ?? 0) > 2000)
            // A model alert is not raised: the calls were fast and clean (and there are too few of them).
            #expect(try await HealthStore(pool: pool).snapshot().models["steady"] == nil)

            try await pool.query("UPDATE switchyard.settings SET value = 'off' WHERE name = 'alert_queue_wait_p95_ms'")
            let cleared = try await alerts.evaluate(at: at.addingTimeInterval(5))
            #expect(cleared.map(\.event) == [.cleared])
            #expect(cleared.first?.message.contains("nothing left to measure") == true)
        }
    }

    /// An operator's walkthrough read "nothing left to measure (no traffic in the window …)" of a
    /// breaker alert cleared by disabling its model, and of the backlog's once no job was at risk.
    @Test("an alert nothing measures any more says why it cleared: a disabled model, no job at risk, no traffic")
    func clearedWithWhy() async throws {
        try await Self.withCatalog { pool in
            try await pool.query(
                """
                INSERT INTO switchyard.alerts (kind, subject, opened_at, value, threshold, message)
                VALUES ('breaker', 'steady', now(), 1, 0, 'open'), ('backlog_deadlines', 'background', now(), 3, 0, 'late'),
                       ('error_rate', 'flaky', now(), 0.5, 0.1, 'errors')
                """)
            try await pool.query("UPDATE switchyard.models SET enabled = false WHERE name = 'steady'")
            let cleared = try await AlertStore(pool: pool).evaluate()
            #expect(cleared.allSatisfy { $0.event == .cleared } && cleared.count == 3, "\(cleared)")
            #expect(Set(cleared.map(\.message)) == [
                "breaker steady: the model is disabled (dispatcher models enable steady brings it back)",
                "backlog_deadlines background: no queued background job would miss its deadline now",
                "error_rate flaky: nothing left to measure (no traffic in the window, or the rule is off)",
            ])
        }
    }

    @Test("an interactive job put back to wait for a model keeps waiting: the alert sees it, its result counts it")
    func waitThroughPostponement() async throws {
        try await Self.withCatalog { pool in
            let store = QueueStore(pool: pool)
            let alerts = AlertStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let id = try await store.submit(Submission(request: hello))
            // Submitted ten minutes ago; every model of its rule is down since: the worker puts it
            // back to look again in an hour, and again.
            try await pool.query(
                "UPDATE switchyard.jobs SET created_at = now() - interval '10 minutes', run_at = now() - interval '10 minutes' WHERE id = $1",
                [id])
            for round in 0..<2 {
                if round > 0 { try await pool.query("UPDATE switchyard.jobs SET run_at = now() WHERE id = $1", [id]) }
                let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
                _ = try await store.complete(
                    worker: "w",
                    [Completion(jobID: id, attempt: job.attempt, kind: .postpone, retryAt: Date().addingTimeInterval(3600))])
            }
            // Ten minutes later, as the housekeeper would see it: scheduled, and waiting all the same.
            let at = try await ResultRow.databaseNow(pool).addingTimeInterval(600)
            let events = try await alerts.evaluate(at: at)
            let wait = events.first { $0.kind == "queue_wait" }
            #expect(wait?.event == .raised, "\(events)")
            #expect((wait?.value ?? 0) >= 590_000, "\(String(describing: wait))")
            // When it runs at last (due now), its queue wait is from when it began to wait.
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() WHERE id = $1", [id])
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            _ = try await store.complete(worker: "w", [Completion(jobID: id, attempt: job.attempt, kind: .result, status: "succeeded")])
            let recorded = try await pool.query(
                "SELECT queue_wait_ms FROM switchyard.results WHERE job_id = $1", [id]).scalar(Double.self)
            #expect(recorded >= 590_000, "\(recorded) ms")
        }
    }

    @Test("a backlog waiting ten minutes raises the queue-wait alert behind 25,000 jobs that finished quickly")
    func queueWaitBehindManyFinished() async throws {
        try await Self.withCatalog { pool in
            // Ten minutes from now, as the housekeeper would see it: the 5,000 queued jobs have
            // waited ten minutes; 25,000 jobs finished in the last minute after 10 ms each.
            let at = try await ResultRow.databaseNow(pool).addingTimeInterval(600)
            try await pool.query(
                """
                INSERT INTO switchyard.results (job_id, status, priority, request, created_at, queue_wait_ms, finished_at)
                SELECT g, 'succeeded', 'interactive', '{"messages":[{"role":"user","content":"hi"}]}',
                       $1::timestamptz - interval '1 minute', 10, $1::timestamptz - (g % 60) * interval '1 second'
                FROM generate_series(1, 25000) g
                """, [at])
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request)
                SELECT jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'q' || g)))
                FROM generate_series(1, 5000) g
                """)
            let raised = try await AlertStore(pool: pool).evaluate(at: at)
            let alert = try #require(raised.first { $0.kind == "queue_wait" }, "\(raised)")
            #expect((alert.value ?? 0) > 500_000, "\(alert.message)")
        }
    }

    @Test(
        "background jobs that cannot meet their deadlines at recent throughput raise an alert until throughput recovers"
    )
    func backlogAlert() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            // 15 background jobs in the last 15 minutes: one a minute.
            let finished = (0..<15).map { index in
                ResultRow(
                    job: Int64(index + 1), priority: "background", model: "steady", latencyMS: 300,
                    finishedAt: at.addingTimeInterval(-60 * Double(index)),
                    trail: [ResultRow.call("steady", latencyMS: 300)])
            }
            try await ResultRow.insert(finished, into: pool)
            // 30 queued, due in 10 minutes: at one a minute they need 30.
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            _ = try await QueueStore(pool: pool).submit(
                batch: (0..<30).map { _ in
                    Submission(request: hello, priority: .background, deadline: Date().addingTimeInterval(600))
                })
            // Claimed first once near their deadline (sql/0077), they still cannot all start in time:
            // 109.5 s before it (their escalation horizon) the line of 30 takes 30 minutes, and only the
            // first two start before their deadline.
            let raised = try await alerts.evaluate(at: at)
            let event = try #require(raised.first)
            #expect(raised.count == 1)
            #expect(event.kind == "backlog_deadlines" && event.subject == "background")
            #expect(event.value == 28 && event.threshold == 0, "\(event.message)")

            // Throughput picks up (300 more in the window): the backlog drains in under two minutes.
            let faster = (0..<300).map { index in
                ResultRow(
                    job: Int64(index + 100), priority: "background", model: "steady", latencyMS: 300,
                    finishedAt: at.addingTimeInterval(-Double(index)), trail: [ResultRow.call("steady", latencyMS: 300)]
                )
            }
            try await ResultRow.insert(faster, into: pool)
            let cleared = try await alerts.evaluate(at: at.addingTimeInterval(1))
            #expect(cleared.map(\.event) == [.cleared])
            #expect(cleared.first?.value == 0)

            // Paused, the backlog does not drain at any throughput: every job with a deadline is at risk.
            try await BackgroundPolicy.set("background_paused", to: "true", in: pool)
            let paused = try await alerts.evaluate(at: at.addingTimeInterval(2))
            #expect(paused.map(\.event) == [.raised])
            #expect(paused.first?.value == 30)
            #expect(paused.first?.message.contains("never while background work is paused") == true, "\(paused)")
        }
    }

    /// A walkthrough's workers, starting on a backlog with nothing finished in 15 minutes, were paged
    /// that 567 jobs would miss their deadlines; all ran in time, claimed first as each came near it.
    @Test("with no throughput measured, backlog jobs are at risk only while no worker is alive to claim them")
    func backlogWithoutThroughput() async throws {
        try await Self.withCatalog { pool in
            let at = try await ResultRow.databaseNow(pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let store = QueueStore(pool: pool)
            _ = try await store.submit(
                batch: (0..<5).map { _ in
                    Submission(request: hello, priority: .background, deadline: Date().addingTimeInterval(300))
                })
            func atRisk() async throws -> Double {
                try await pool.query(
                    "SELECT value FROM switchyard.alert_measurements($1) WHERE kind = 'backlog_deadlines'", [at]
                ).scalar(Double.self)
            }
            #expect(try await atRisk() == 5)
            let identity = WorkerIdentity(id: "alive", concurrency: 4, hostname: "h", pid: 1, version: "t")
            _ = try await store.heartbeat(worker: identity, held: [], lease: .seconds(30))
            #expect(try await atRisk() == 0)
        }
    }

    @Test("jobs a worker put off to a later price window do not stand in the backlog's line; those submitted for later do")
    func backlogLeavesPostponedOut() async throws {
        try await Self.withCatalog { pool in
            let at = try await ResultRow.databaseNow(pool)
            // One background job a minute over the last 15.
            try await ResultRow.insert(
                (0..<15).map { index in
                    ResultRow(
                        job: Int64(index + 1), priority: "background", model: "steady", latencyMS: 300,
                        finishedAt: at.addingTimeInterval(-60 * Double(index)),
                        trail: [ResultRow.call("steady", latencyMS: 300)])
                }, into: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            let store = QueueStore(pool: pool)
            // 5 jobs due in 10 minutes, behind 60 a worker put off for an hour (no price within
            // the ceiling until then): none is ahead of them, and they are not at risk.
            let due = try await store.submit(
                batch: (0..<5).map { _ in
                    Submission(request: hello, priority: .background, deadline: Date().addingTimeInterval(600))
                })
            let waiting = try await store.submit(batch: (0..<60).map { _ in Submission(request: hello, priority: .background) })
            try await pool.query(
                """
                UPDATE switchyard.jobs SET run_at = now() + interval '1 hour', postponed_at = now()
                WHERE id = ANY ($1)
                """, [waiting])
            let measured = try await pool.query(
                "SELECT value FROM switchyard.alert_measurements($1) WHERE kind = 'backlog_deadlines'",
                [at.addingTimeInterval(5)]
            ).scalar(Double.self)
            #expect(measured == 0)
            // Paused, nothing drains: the put-off ones with a deadline are at risk too, and said apart.
            try await pool.query(
                "UPDATE switchyard.jobs SET deadline = now() + interval '2 hours' WHERE id = ANY ($1)",
                [Array(waiting.prefix(3))])
            try await BackgroundPolicy.set("background_paused", to: "true", in: pool)
            let paused = try await pool.query(
                "SELECT message FROM switchyard.alert_measurements($1) WHERE kind = 'backlog_deadlines'",
                [at.addingTimeInterval(5)]
            ).scalar(String.self)
            #expect(
                paused.hasPrefix("8 queued background jobs would miss their deadline (3 of them waiting to run later): "),
                "\(paused)")
            try await BackgroundPolicy.set("background_paused", to: "false", in: pool)
            try await pool.query("UPDATE switchyard.jobs SET deadline = NULL WHERE id = ANY ($1)", [waiting])
            // The same 60 submitted to run in a minute are in line by then, and the 5 would wait an hour;
            // claimed first once near their deadline (sql/0077), at one a minute 2 of them start in time.
            try await pool.query("UPDATE switchyard.jobs SET postponed_at = NULL, run_at = now() + interval '1 minute' WHERE id = ANY ($1)", [waiting])
            let submittedLater = try await pool.query(
                "SELECT value FROM switchyard.alert_measurements($1) WHERE kind = 'backlog_deadlines'",
                [at.addingTimeInterval(5)]
            ).scalar(Double.self)
            #expect(submittedLater == Double(due.count - 2))
            // Submitted for the next day, they come due after every deadline here: not in line (a soak's
            // 3,000 paged about a job due in minutes while nothing was queued).
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() + interval '1 day' WHERE id = ANY ($1)", [waiting])
            let tomorrow = try await pool.query(
                "SELECT value FROM switchyard.alert_measurements($1) WHERE kind = 'backlog_deadlines'",
                [at.addingTimeInterval(5)]
            ).scalar(Double.self)
            #expect(tomorrow == 0)
        }
    }

    @Test("a task class whose jobs fail raises job_failures naming the most frequent error; requests' own faults do not count")
    func jobFailureAlert() async throws {
        try await Self.withCatalog { pool in
            let alerts = AlertStore(pool: pool)
            let at = try await ResultRow.databaseNow(pool)
            let unroutable: JSONValue = [
                "code": "unroutable",
                "message": #"no model of rule "chat" can take this request (flaky: reasoning score 61 < quality floor 70)"#,
            ]
            func jobs(_ taskClass: String, _ count: Int, failing: Int, error: JSONValue, from first: Int64) -> [ResultRow] {
                (0..<count).map { index in
                    index < failing
                        ? ResultRow(job: first + Int64(index), status: "failed", taskClass: taskClass, model: nil,
                                    provider: nil, tier: nil, finishedAt: at.addingTimeInterval(-Double(index)),
                                    error: error)
                        : ResultRow(job: first + Int64(index), taskClass: taskClass, model: "steady", latencyMS: 300,
                                    finishedAt: at.addingTimeInterval(-Double(index)),
                                    trail: [ResultRow.call("steady", latencyMS: 300)])
                }
            }
            try await ResultRow.insert(
                // 8 of 30 unroutable and one deadline passed (a retry that could not start before it
                // ends so whatever failed): over 5% with confidence.
                jobs("chat", 30, failing: 8, error: unroutable, from: 1)
                    + [ResultRow(job: 31, status: "failed", taskClass: "chat", model: "steady", finishedAt: at,
                                 error: ["code": "deadline_passed", "message": "cut at its deadline"])]
                    // Half of these the provider refused as bad requests: the requests' fault.
                    + jobs("summarize", 20, failing: 10, error: ["code": "bad_request", "message": "invalid"], from: 100)
                    // Every one failed, but too few to judge.
                    + jobs("tiny", 5, failing: 5, error: unroutable, from: 200)
                    // Cancelled jobs are not failures.
                    + (0..<20).map { ResultRow(job: 300 + Int64($0), status: "cancelled", taskClass: "quiet", finishedAt: at) }
                    // Requests no model of the rule takes, or no worker can read: their own fault too.
                    + jobs("vision", 12, failing: 6, error: ["code": "unsupported_request", "message": "n > 1"], from: 400)
                    + jobs("vision", 4, failing: 4, error: ["code": "unreadable_request", "message": "no messages"], from: 420)
                    // Failed without a recorded error, in a class of its own: named as such, with no message.
                    + jobs("bare", 10, failing: 10, error: .null, from: 500)
                    // No failure at all.
                    + jobs("fine", 15, failing: 0, error: .null, from: 600),
                into: pool)
            let raised = try await alerts.evaluate(at: at)
            #expect(raised.map(\.subject).sorted() == ["bare", "chat"], "\(raised)")
            #expect(raised.first { $0.subject == "bare" }?.message
                == "task class bare: 10 of 10 jobs failed over the last 5 min (100.0%, limit 5%); most often no code (10)")
            let measured = try await pool.query(
                "SELECT message FROM switchyard.alert_measurements($1) WHERE kind = 'job_failures' AND subject = 'fine'", [at]
            ).scalar(String.self)
            #expect(measured == "task class fine: 0 of 15 jobs failed over the last 5 min (0.0%, limit 5%)")
            let alert = try #require(raised.first { $0.subject == "chat" })
            #expect(alert.subject == "chat")
            #expect(abs((alert.value ?? 0) - 9.0 / 31) < 1e-9)
            #expect(alert.threshold == 0.05)
            #expect(
                alert.message == "task class chat: 9 of 31 jobs failed over the last 5 min (29.0%, limit 5%); most often "
                    + #"unroutable (8): no model of rule "chat" can take this request (flaky: reasoning score 61 < quality floor 70)"#,
                "\(alert.message)")
            // A model rule does not see it: the failures made no calls.
            #expect(try await HealthStore(pool: pool).snapshot().models["steady"] == nil)

            // Ten minutes later nothing finished in the window: it clears.
            let cleared = try await alerts.evaluate(at: at.addingTimeInterval(600))
            #expect(cleared.map(\.event) == [.cleared, .cleared])
            #expect(cleared.map(\.subject).sorted() == ["bare", "chat"])
            // Off, the rule raises nothing.
            try await pool.query("UPDATE switchyard.settings SET value = 'off' WHERE name = 'alert_job_failure_rate'")
            #expect(try await alerts.evaluate(at: at).isEmpty)
        }
    }

    @Test("a rule whose quality floor no model reaches fails its jobs as unroutable, and the job-failure alert says so")
    func unroutableRuleRaisesJobFailures() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let catalog = """
                {"models": {
                   "flaky":  {"provider": "simulated", "tier": "standard", "capabilities": {"reasoning": 80},
                              "settings": {"mode": "instant"}},
                   "steady": {"provider": "simulated", "tier": "standard", "capabilities": {"reasoning": 70},
                              "settings": {"mode": "instant"}}},
                 "routing_rules": {"default": {"primary": "steady"},
                                   "complex_reasoning": {"primary": "flaky", "fallback": ["steady"], "quality_floor": 90}}}
                """
            _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
            let store = QueueStore(pool: pool)
            let ids = try await store.submit(
                batch: (0..<12).map { Submission(request: Submission.prompt("prove lemma \($0)"), taskClass: "complex_reasoning") })
            try await OffPeakExecutionTests.withRoutingWorker(pool) {
                try await waitUntil("the 12 jobs have results") {
                    try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 12
                }
            }
            #expect(Set(try await store.statuses(of: ids).values) == ["failed"])
            // The worker's housekeeper may have raised it already.
            let alerts = AlertStore(pool: pool)
            _ = try await alerts.evaluate()
            let open = try await alerts.open()
            let alert = try #require(open.first { $0.kind == "job_failures" }, "\(open)")
            #expect(alert.subject == "complex_reasoning" && alert.value == 1)
            // Raised by the housekeeper of a slow run, it may count fewer than the 12.
            #expect(alert.message.contains(#/task class complex_reasoning: (\d+) of \1 jobs failed/#), "\(alert.message)")
            #expect(alert.message.contains(#/most often unroutable \(\d+\): no model of rule/#), "\(alert.message)")
            #expect(alert.message.contains("< quality floor 90"), "\(alert.message)")
        }
    }
}
