import Foundation
import Postgres
import QueueModel
import Testing

@testable import Dispatcher
@testable import Worker

/// `dispatcher status`, `top`, `report` and `feedback` on a known data set, and the pure pieces
/// behind them.
@Suite("Dispatcher: status, top, report, feedback")
struct DispatcherObservabilityTests {
    @Test("status renders every section on one screen and as JSON, a key per section")
    func statusReport() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await ResultRow.insert(ObservabilityViewTests.dataSet(), into: pool)
            let context = StatusContext(pool: pool, window: .seconds(3600), at: ObservabilityViewTests.at)
            let report = await StatusReport.load(context)
            let screen = report.lines().joined(separator: "\n")
            for title in ["THROUGHPUT AND LATENCY", "QUEUE", "WORKERS", "MODELS", "ALERTS"] {
                #expect(screen.contains("\n\(title)\n"), "missing \(title)")
            }
            #expect(screen.contains("116 jobs finished"))
            #expect(
                screen.range(of: #"alpha +116 +4.3% +8.6% +555 ms"#, options: .regularExpression) != nil, "\(screen)")
            #expect(!screen.contains("unavailable"))
            let json = report.json
            #expect(json["overview"]?["total"]?["jobs"] == 116)
            #expect(json["models"]?[0]?["model"] == "alpha")
            #expect(json["queue"]?.arrayValue?.count == 2)
            #expect(json["window_s"] == 3600)
        }
    }

    /// `feedback --list` showed an average of 65.25 as 65.2 (printf rounds a half to even).
    @Test("rates and scores round a half up", arguments: [
        (65.25, "65.3"), (82.44, "82.4"), (0.15, "0.2"), (99.96, "100.0"), (123.5, "124"),
    ])
    func rateCell(value: Double, text: String) {
        #expect(StatusFormat.rate(value) == text)
    }

    /// An on-call walkthrough's model timed out on 31% of its calls and showed a P95 of 1.50 s.
    @Test("a percentile the timeouts reach is shown as at least the timeout")
    func latencyCellWithTimeouts() {
        #expect(StatusFormat.latency(1500.4, quantile: 0.95, timeoutRate: 0.31) == "≥" + StatusFormat.milliseconds(1500.4))
        #expect(StatusFormat.latency(412, quantile: 0.5, timeoutRate: 0.31) == StatusFormat.milliseconds(412))
        #expect(StatusFormat.latency(900, quantile: 0.95, timeoutRate: 0.01) == StatusFormat.milliseconds(900))
        #expect(StatusFormat.latency(nil, quantile: 0.95, timeoutRate: 0.5) == StatusFormat.milliseconds(nil))
        // The percentiles are of the timed calls: 4% timeouts among 10% timed calls is 40% of them.
        #expect(StatusFormat.latency(1500, quantile: 0.95, timeoutRate: 0.04, errorRate: 0.9) == "≥" + StatusFormat.milliseconds(1500))
    }

    /// A review's status read "half_open (a probe failed while half-open)" as a failure now, and
    /// cut the probe count off with the reason ("half_open (failure rate 21.7% over the last 23
    /// requests (e…)"); models list showed a bare "half_open".
    @Test("a half-open breaker shows its probes apart from why it opened, whatever the reason's length")
    func breakerCell() {
        let long = "failure rate 21.7% over the last 23 requests (errors and timeouts; limit 2.0%)"
        #expect(StatusFormat.breaker("half_open", reason: long + "; 2 of 5 probes answered")
            == "half_open: 2 of 5 probes answered (opened on: failure rate 21.7% over the last 23 requests)")
        // An on-call walkthrough's status cut the aside mid-word ("… 551 requests (e…"): it goes first.
        #expect(StatusFormat.breaker("open", reason: "failure rate 3.1% over the last 551 requests (errors and timeouts; limit 2.0%)")
            == "open (failure rate 3.1% over the last 551 requests)")
        #expect(StatusFormat.breaker("open", reason: String(repeating: "x", count: 60) + " (y)")
            == "open (" + String(repeating: "x", count: 47) + "…)")
        // A nested aside goes whole (a review's cut left "… (b" unbalanced).
        #expect(StatusFormat.breaker("open", reason: "failure rate 3.1% of the calls (errors (and timeouts); limit 2.0%)")
            == "open (failure rate 3.1% of the calls)")
        #expect(StatusFormat.breaker("half_open", reason: "a probe failed while half-open")
            == "half_open: probing (opened on: a probe failed while half-open)")
        // A failed probe keeps the cause in an aside, which the cut dropped whole (a review's status
        // read "open (a probe failed while half-open)" where models list had the cause).
        #expect(StatusFormat.breaker("open", reason: "a probe failed while half-open (opened for: 20 failures in a row "
            + "(20 of 570 calls failed; the last healthy model of rule default))")
            == "open (a probe failed; opened for: 20 failures in a row)")
        #expect(StatusFormat.breaker("half_open", reason: "a probe failed while half-open (opened for: failure rate 32.1% "
            + "over the last 28 requests (errors and timeouts; limit 2.0%)); 1 of 5 probes answered")
            .hasPrefix("half_open: 1 of 5 probes answered (opened on: a probe failed; opened for: failure rate"))
        #expect(StatusFormat.breaker("half_open", reason: "alert: error rate 4.0%; 1 of 5 probes answered", alertsShown: true)
            == "half_open: 1 of 5 probes answered (opened on: alert)")
        #expect(StatusFormat.breaker("open", reason: "5 failures in a row") == "open (5 failures in a row)")
        #expect(StatusFormat.breaker("closed", reason: nil) == "closed")
        #expect(StatusFormat.breaker("half_open", reason: nil) == "half_open")
    }

    @Test("status on a fresh database: every section renders, and the window is reported empty")
    func statusWhenNothingFinished() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let report = await StatusReport.load(StatusContext(pool: pool, window: .seconds(60), at: nil))
            let screen = report.lines().joined(separator: "\n")
            #expect(!screen.contains("unavailable"), "\(screen)")
            #expect(screen.contains("no jobs finished in the last"), "\(screen)")
            // The keys of a busy window, with zeros: a script reading .overview.total.jobs works in both.
            #expect(report.json["overview"]?["total"]?["jobs"] == 0)
            #expect(report.json["overview"]?["total"]?["cost"] == 0)
            #expect(report.json["overview"]?["total"]?["latency_p50_ms"] == .null)
            #expect(report.json["overview"]?["by_provider"] == [])
            for function in ["job_stats", "call_stats", "model_stats"] {
                let rows = try await pool.query("SELECT count(*) FROM switchyard.\(function)()").scalar(Int.self)
                #expect(rows == 0, "\(function)")
            }
        }
    }

    @Test("workers that stopped over ten minutes ago are counted under the table, not listed")
    func staleWorkersCounted() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                """
                INSERT INTO switchyard.workers (id, hostname, concurrency, heartbeat_at, lease_seconds)
                VALUES ('live', 'h', 16, now() + interval '2 minutes', 30),
                       ('just-died', 'h', 16, now() - interval '2 minutes', 30)
                """)
            try await pool.query(
                """
                INSERT INTO switchyard.workers (id, hostname, concurrency, heartbeat_at, lease_seconds)
                SELECT 'crashed-' || n, 'h', 16, now() - interval '3 hours' - n * interval '1 minute', 30
                FROM generate_series(1, 25) n
                """)
            // (The live one's heartbeat is ahead: a loaded full run read the workers 37 s after the insert.)
            let report = await StatusReport.load(StatusContext(pool: pool, window: .seconds(60), at: nil))
            let screen = report.lines().joined(separator: "\n")
            #expect(screen.contains("1 alive of 27"), "\(screen)")
            #expect(screen.contains("live ") && screen.contains("just-died"), "\(screen)")
            // A stale worker's in-flight count is its last heartbeat's: shown as unknown.
            let died = try #require(report.lines().first { $0.contains("just-died") })
            #expect(died.split(separator: " ", omittingEmptySubsequences: true).prefix(5).map(String.init)
                == ["just-died", "h", "—", "—", "0"], "\(died)")
            #expect(!screen.contains("crashed-"), "\(screen)")
            #expect(screen.contains("25 more stopped without deregistering, silent for 3.0 h or more"), "\(screen)")
            #expect(report.json["workers"]?.arrayValue?.count == 27)
            // None listed: not "1 more" (a walkthrough read it as another worker than the summary's).
            try await pool.query("DELETE FROM switchyard.workers WHERE id <> 'crashed-1'")
            let alone = await StatusReport.load(StatusContext(pool: pool, window: .seconds(60), at: nil)).lines().joined(separator: "\n")
            #expect(alone.contains("0 alive of 1") && alone.contains("\n  1 stopped without deregistering"), "\(alone)")
        }
    }

    @Test("status says how many jobs were taken back from which worker when their leases ran out")
    func rescuesShown() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await pool.query(
                "INSERT INTO switchyard.workers (id, hostname, concurrency, heartbeat_at, lease_seconds) VALUES ('live', 'h', 16, now(), 30)")
            for _ in 0..<3 { _ = try await store.submit(Submission(request: ["messages": [["role": "user", "content": "hi"]]])) }
            // Claimed by a worker cut off from the database: its leases run out, and they are rescued.
            let lost = try await store.claim(worker: "cut-off", freeSlots: 3, backgroundSlots: 0, lease: .seconds(30))
            #expect(lost.count == 3)
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second'")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.rescue_expired(10)").scalar(Int.self) == 3)
            // One of them is finished by another worker since; two wait in the queue.
            let again = try await store.claim(worker: "live", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
            _ = try await store.complete(
                worker: "live", again.map { Completion(jobID: $0.id, attempt: $0.attempt, kind: .result, status: "succeeded") })
            let report = await StatusReport.load(StatusContext(pool: pool, window: .seconds(300), at: nil))
            let screen = report.lines().joined(separator: "\n")
            #expect(
                screen.contains("leases run out in the last 5 min: 3 jobs taken back from cut-off (3) and run again"),
                "\(screen)")
            #expect(report.json["rescued_jobs"] == [["worker": "cut-off", "jobs": 3, "failed": 0]])
            // A job with no attempt left fails there: counted, and said (an SQL walkthrough's were
            // left out of status).
            _ = try await store.submit(
                Submission(request: ["messages": [["role": "user", "content": "once"]]], maxAttempts: 1))
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() + interval '1 hour' WHERE attempt > 0")
            let once = try await store.claim(worker: "gone", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
            #expect(once.count == 1)
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second' WHERE lease_owner = 'gone'")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.rescue_expired(10)").scalar(Int.self) == 1)
            let failedScreen = await StatusReport.load(StatusContext(pool: pool, window: .seconds(300), at: nil))
                .lines().joined(separator: "\n")
            #expect(
                failedScreen.contains(
                    "4 jobs taken back from cut-off (3), gone (1) and run again (1 failed instead, no attempt left)"),
                "\(failedScreen)")
            // Outside the window, nothing is said.
            let later = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: Date().addingTimeInterval(3600)))
            #expect(!later.lines().joined().contains("leases run out"))
        }
    }

    @Test("status names the job running longest once it has run five minutes, with its worker")
    func longestRunningShown() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            for _ in 0..<2 { _ = try await store.submit(Submission(request: ["messages": [["role": "user", "content": "hi"]]])) }
            let claimed = try await store.claim(worker: "w1", freeSlots: 2, backgroundSlots: 0, lease: .seconds(30))
            #expect(claimed.count == 2)
            var report = await StatusReport.load(StatusContext(pool: pool, window: .seconds(300), at: nil))
            #expect(!report.lines().joined().contains("running longest"))
            #expect(report.json["longest_running"]?["worker"] == "w1")
            // Held 16 minutes, as a worker on a dead connection held its jobs.
            try await pool.query(
                "UPDATE switchyard.jobs SET claimed_at = now() - interval '16 minutes' WHERE id = $1", [claimed[1].id])
            report = await StatusReport.load(StatusContext(pool: pool, window: .seconds(300), at: nil))
            let screen = report.lines().joined(separator: "\n")
            // (16.0 min, or a tenth more on a machine slow between the two statements.)
            #expect(screen.contains("running longest: job \(claimed[1].id), 16."), "\(screen)")
            #expect(screen.contains(" min on w1 (past its calls' timeouts"), "\(screen)")
            #expect(report.json["longest_running"]?["job_id"]?.intValue == Int(claimed[1].id))
        }
    }

    @Test("a section can be added to status without touching the others")
    func extraSection() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let extra = StatusSection(key: "backlog", title: "BACKGROUND BACKLOG") { _ in
                StatusOutput(lines: ["nothing waiting"], json: ["jobs": 0])
            }
            let report = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: nil), sections: StatusSection.all + [extra])
            #expect(report.lines().suffix(2) == ["BACKGROUND BACKLOG", "  nothing waiting"])
            #expect(report.json["backlog"]?["jobs"] == 0)
        }
    }

    @Test("report --html: one self-contained page with latency, cost, tier mix and fallback charts")
    func htmlReport() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await ResultRow.insert(ObservabilityViewTests.dataSet(), into: pool)
            let series = try await ReportStore(pool: pool).series(
                window: .seconds(3600), bucket: .seconds(600), at: ObservabilityViewTests.at)
            #expect(series.buckets.count == 6)
            #expect(series.totals.reduce(0) { $0 + $1.jobs } == 116)
            #expect(series.totals.reduce(0) { $0 + $1.fellBack } == 15)
            let alpha = series.models.filter { $0.model == "alpha" }
            #expect(alpha.reduce(0) { $0 + $1.calls } == 116)
            #expect(alpha.reduce(0) { $0 + $1.answered } == 100)
            #expect(alpha.reduce(Decimal(0)) { $0 + $1.cost } == Decimal(string: "0.1"))

            let html = HTMLReport(series: series, window: .seconds(3600), generatedAt: ObservabilityViewTests.at)
                .render()
            #expect(html.hasPrefix("<!DOCTYPE html>"))
            for heading in ["Latency by model", "Cost by model", "Tier mix and fallbacks", "Summary"] {
                #expect(html.contains(heading))
            }
            #expect(html.components(separatedBy: "<svg").count - 1 == 5)  // alpha, beta, cost, tiers, fallbacks
            // Self-contained: no scripts, no links, no remote anything (the SVG namespace is not fetched).
            #expect(!html.contains("<script") && !html.contains("<link") && !html.contains("src="))
            #expect(html.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "").range(of: "http") == nil)
            #expect(html.contains("secondary 8.6%"))
            // Background work and the window's savings, as background status and report savings say them.
            #expect(!html.contains("Background work and savings"))
            let full = HTMLReport(
                series: series, window: .seconds(3600), generatedAt: ObservabilityViewTests.at,
                background: try await BacklogStatus.load(pool),
                savings: try await SavingsReport.load(pool, since: ObservabilityViewTests.at.addingTimeInterval(-3600))
            ).render()
            #expect(full.contains("<h2>Background work and savings</h2>"))
            #expect(full.contains("background backlog: 0 queued, 0 running, 0 waiting to run later"), "\(full)")
            #expect(full.contains("gate: open"))
            #expect(full.contains("<td>total</td><td class=\"num\">"), "\(full)")
        }
    }

    @Test("top draws a frame over the last one, cut to the terminal's size")
    func topFrame() {
        let report = StatusReport(
            window: .seconds(60), generatedAt: Date(timeIntervalSince1970: 0),
            sections: [(StatusSection.alerts, StatusOutput(lines: [String(repeating: "x", count: 200)], json: []))])
        let frame = TopCommand.frame(report, interval: .seconds(2), size: (rows: 3, columns: 40), inPlace: true)
        #expect(frame.hasPrefix("\u{1B}[H") && frame.hasSuffix("\u{1B}[J"))
        let lines = frame.dropFirst(3).dropLast(4).components(separatedBy: "\u{1B}[K\n")
        #expect(lines.count == 2)
        #expect(lines.allSatisfy { $0.replacingOccurrences(of: "\u{1B}[K", with: "").count <= 40 })
    }

    /// An operator's walkthrough: a dropped role's tenant mapping waited, unlisted anywhere after
    /// migrate, for whoever created a role of that name.
    @Test("status names a tenant mapping whose role was dropped, and how to delete it")
    func orphanTenantMapping() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let role = "gone_\(UInt32.random(in: 0...UInt32.max))"
            try await pool.query("CREATE ROLE \(role) NOLOGIN")
            try await pool.query("INSERT INTO switchyard.tenant_roles (role, tenant) VALUES ($1, 'billing')", [role])
            try await pool.query("DROP ROLE \(role)")
            let report = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: nil), sections: [StatusSection.alerts])
            #expect(report.lines().contains {
                $0.contains("TENANT MAPPING of role \(role) to billing: no such role")
                    && $0.hasSuffix("DELETE FROM switchyard.tenant_roles WHERE role = '\(role)'")
            }, "\(report.lines())")
            #expect(report.json["orphan_tenant_mappings"]?.arrayValue?.first?["role"]?.stringValue == role)
        }
    }

    /// An on-call walkthrough's surge was one tenant's jobs ahead of the others', which only SQL showed.
    @Test("status names the tenants with most jobs queued, per partition")
    func queuedByTenant() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hi"]]]
            var submissions = (0..<5).map { _ in Submission(request: hello, tenant: "globex") }
            submissions += (0..<2).map { _ in Submission(request: hello, tenant: "acme") }
            submissions += [Submission(request: hello), Submission(request: hello, tenant: "initech"),
                            Submission(request: hello, priority: .background, tenant: "acme")]
            submissions += ["globex", "initech", "umbrella"].map { Submission(request: hello, priority: .background, tenant: $0) }
            _ = try await store.submit(batch: submissions)
            let report = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: nil), sections: [StatusSection.queue])
            let lines = report.lines()
            // Past the three, how many more (a walkthrough's fourth tenant and its 938 jobs were left out
            // without a word): here the jobs without a tenant.
            #expect(lines.contains("  interactive queued by tenant: globex 5, acme 2, initech 1; 1 more tenant (or none) with 1 job"),
                    "\(lines)")
            // "(or none)" only when the rest has jobs without a tenant (a walkthrough read it of four named tenants).
            #expect(lines.contains("  background queued by tenant: acme 1, globex 1, initech 1; 1 more tenant with 1 job"), "\(lines)")
            #expect(report.json["queued_by_tenant"]?["interactive"]?[0]?["tenant"] == "globex")
            #expect(report.json["queued_by_other_tenants"]?["interactive"]?["queued"] == 1)
            #expect(report.json["queued_by_other_tenants"]?["background"]?["tenants"] == 1)
        }
    }

    /// A review's only live worker skipped a model whose key it lacked; status showed its jobs
    /// waiting, and said nothing of why.
    @Test("status names the models a live worker skips, with why")
    func skippedModels() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let identity = WorkerIdentity(id: "w-1", concurrency: 4, hostname: "h", pid: 1, version: "t")
            _ = try await store.heartbeat(worker: identity, held: [], lease: .seconds(30))
            try await store.noteSkippedModels(
                worker: identity, ["gpt-4o": "its api_key_env is not read: OPENAI_API_KEY is not set"])
            let report = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: nil), sections: [StatusSection.workers])
            #expect(report.lines().contains("  w-1 skips gpt-4o: its api_key_env is not read: OPENAI_API_KEY is not set"),
                    "\(report.lines())")
            #expect(report.json["workers"]?[0]?["skipped_models"] == ["gpt-4o": "its api_key_env is not read: OPENAI_API_KEY is not set"])
            // A row another session holds is not waited for (a review's worker waited 12 s after its
            // heartbeat, and its leases ran out): not noted now, the worker tries again.
            let holder = try await PostgresConnection.connect(pool.configuration)
            try await holder.query("BEGIN")
            try await holder.query("SELECT FROM switchyard.workers WHERE id = 'w-1' FOR UPDATE")
            #expect(try await store.noteSkippedModels(worker: identity, [:]) == false)
            try await holder.query("ROLLBACK")
            await holder.close()
            // None skipped: nothing said; a bad note is refused.
            #expect(try await store.noteSkippedModels(worker: identity, [:]))
            let none = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: nil), sections: [StatusSection.workers])
            #expect(!none.lines().contains { $0.contains(" skips ") })
            await #expect(throws: PostgresError.self) {
                try await pool.query("SELECT switchyard.note_skipped_models('w-1', NULL, '[1]')")
            }
        }
    }

    /// A docs walkthrough's status listed tiers by their jobs: primary, secondary, (none), tertiary.
    @Test("status lists tiers in their order, a failed job's (none) last")
    func tiersInOrder() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let at = try await ResultRow.databaseNow(pool)
            var rows: [ResultRow] = []
            for (index, tier) in (Array(repeating: "secondary", count: 5) + ["primary"] + ["tertiary"] + [nil, nil]).enumerated() {
                var row = ResultRow(job: Int64(index + 1), model: tier == nil ? nil : "m", tier: tier, finishedAt: at)
                if tier == nil { row.status = "failed" }
                rows.append(row)
            }
            try await ResultRow.insert(rows, into: pool)
            let report = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: at), sections: [StatusSection.overview])
            let order = report.lines().compactMap { line -> String? in
                ["primary", "secondary", "tertiary", "(none)"].first { line.hasPrefix("  \($0) ") }
            }
            #expect(order == ["primary", "secondary", "tertiary", "(none)"], "\(report.lines())")
        }
    }

    /// A review's `top` with 52 models never showed its 5 open alerts: they came last, past the
    /// terminal's height, and MODELS listed every model, called or not.
    @Test("alerts come before the tables; quiet models are counted, not listed; a cut frame says so")
    func manyModels() async throws {
        #expect(StatusSection.all.map(\.key).prefix(2) == ["overview", "alerts"])
        try await TestDatabase.withMigratedPool { pool in
            let models = (0..<30).map { #""m\#($0)": {"provider": "simulated"}"# }.joined(separator: ", ")
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(#"{"models": {\#(models)}, "routing_rules": {"default": {"primary": "m0"}}}"#.utf8))
            // Health rows for a third of them: a figures audit's status counted only models with a
            // call or a breaker row, and its --json, said to list them all, left the others out.
            try await pool.query(
                "INSERT INTO switchyard.model_health (model) SELECT 'm' || n FROM generate_series(0, 9) n ON CONFLICT DO NOTHING")
            try await pool.query(
                "UPDATE switchyard.model_health SET state = 'open', opened_at = now(), reason = 'test' WHERE model = 'm3'")
            // Disabled models are said to be (a figures audit's status read them as merely quiet).
            try await pool.query("UPDATE switchyard.models SET enabled = false WHERE name IN ('m3', 'm7', 'm8')")
            // A breaker row of a model no longer in the catalog: listed, neither enabled nor disabled.
            try await pool.query("INSERT INTO switchyard.model_health (model) VALUES ('gone')")
            let report = await StatusReport.load(
                StatusContext(pool: pool, window: .seconds(60), at: nil), sections: [StatusSection.models])
            let lines = report.lines()
            #expect(lines.contains { $0.contains("m3") && $0.contains("open") }, "\(lines)")
            #expect(!lines.contains { $0.hasPrefix("  m1 ") }, "\(lines)")
            #expect(lines.contains { $0.contains("… and 30 models not called in the window") }, "\(lines)")
            #expect(lines.contains { $0.contains("m3 (disabled)") }, "\(lines)")
            #expect(lines.contains { $0.contains("breakers closed; disabled in the catalog: m7, m8 (status --json") }, "\(lines)")
            #expect(report.json["models"]?.arrayValue?.count == 31)
            #expect(report.json["models"]?.arrayValue?.filter { $0["enabled"] == false }.count == 3)
            #expect(report.json["models"]?.arrayValue?.first { $0["model"] == "gone" }?["enabled"] == .null)
        }
        let long = StatusReport(
            window: .seconds(60), generatedAt: Date(timeIntervalSince1970: 0),
            sections: [(StatusSection.models, StatusOutput(lines: (0..<50).map { "row \($0)" }, json: []))])
        let frame = TopCommand.frame(long, interval: .seconds(2), size: (rows: 10, columns: 80), inPlace: false)
        #expect(frame.contains("more lines (dispatcher status shows all)"), "\(frame)")
        // Drawn to a pipe (top --iterations N > file), keys are not read: no "q quits".
        #expect(frame.hasPrefix("switchyard top — every 2 s — "), "\(frame)")
        let drawn = TopCommand.frame(long, interval: .seconds(2), size: (rows: 10, columns: 80), inPlace: true)
        #expect(drawn.contains("switchyard top — every 2 s, q quits"), "\(drawn)")
    }

    @Test("a window is printed in the unit it was given in, down to milliseconds")
    func windowText() {
        #expect(StatusFormat.window(.milliseconds(1)) == "1 ms")
        #expect(StatusFormat.window(.milliseconds(500)) == "500 ms")
        #expect(StatusFormat.window(.milliseconds(1500)) == "1.5 s")
        #expect(StatusFormat.window(.seconds(90)) == "90 s")
        #expect(StatusFormat.window(.seconds(300)) == "5 min")
        #expect(StatusFormat.window(.seconds(3600)) == "1 h")
    }

    @Test("feedback scores: 0–100 or stars")
    func scores() throws {
        #expect(try FeedbackCommand.parseScore("80") == 80)
        #expect(try FeedbackCommand.parseScore("4/5") == 80)
        #expect(try FeedbackCommand.parseScore("2/3") == 66.7)
        #expect(throws: QueueError.self) { try FeedbackCommand.parseScore("6/5") }
        #expect(throws: QueueError.self) { try FeedbackCommand.parseScore("good") }
    }

    @Test("the metrics responder answers GET /metrics, 404 elsewhere, 405 for other methods")
    func responder() {
        func status(_ head: String) -> String {
            let response = String(decoding: MetricsServer.respond(to: head, render: { "m 1\n" }), as: UTF8.self)
            return response.components(separatedBy: "\r\n").first ?? ""
        }
        #expect(status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == "HTTP/1.1 200 OK")
        #expect(status("GET /metrics?x=1 HTTP/1.1\r\n\r\n") == "HTTP/1.1 200 OK")
        #expect(status("GET / HTTP/1.1\r\n\r\n") == "HTTP/1.1 404 Not Found")
        #expect(status("POST /metrics HTTP/1.1\r\n\r\n") == "HTTP/1.1 405 Method Not Allowed")
        #expect(status("garbage") == "HTTP/1.1 400 Bad Request")
    }
}
