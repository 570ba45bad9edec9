import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// Tenants' limits (`sql/0088`): a paused tenant's jobs, or those of a tenant over its budget,
/// are held in the queue, unclaimed, until it is resumed, its budget raised, or a new period begins.
@Suite("Tenants: pause and budgets")
struct TenantLimitsTests {
    static let lease = Duration.seconds(30)

    static func tenants(_ jobs: [Job]) -> [String: Int] { FairTenantsTests.countsByTenant(jobs) }

    static func status(_ pool: PostgresPool, _ id: Int64) async throws -> String {
        try await pool.query("SELECT switchyard.job_status($1)", [id]).scalar(String.self)
    }

    static func ids(_ pool: PostgresPool, tenant: String) async throws -> [Int64] {
        try await pool.query("SELECT id FROM switchyard.jobs WHERE tenant = $1 ORDER BY id", [tenant])
            .map { try $0.decode("id", as: Int64.self) }
    }

    /// `dispatcher tenants ARGUMENTS` against the pool's database.
    static func tenantsCommand(_ pool: PostgresPool, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        let url = pool.configuration.effectiveConnectionString
        return try await BlockingWork.run {
            try ChildProcess.run(WorkerProcess.binary("dispatcher"), ["tenants"] + arguments + ["--database-url", url])
        }
    }

    static func succeeded(_ job: Job, cost: Decimal) -> Completion {
        Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded", model: "m", provider: "p",
                   tier: "primary", response: ["ok": true], cost: cost)
    }

    @Test("a paused tenant's jobs are held: queued, submitted and put back; resumed, they run, other tenants' all along")
    func pause() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await FairTenantsTests.enqueue(pool, 5, tenant: "acme")
            let running = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 0, lease: Self.lease)
            #expect(Self.tenants(running) == ["acme": 2])
            try await FairTenantsTests.enqueue(pool, 5, tenant: "globex")

            #expect(try await TenantLimits.pause("acme", in: pool) == 3)
            let queued = try await Self.ids(pool, tenant: "acme").filter { !running.map(\.id).contains($0) }
            for id in queued { #expect(try await Self.status(pool, id) == "held") }
            // Submitted while paused: held as it is inserted.
            let submitted = try await store.submit(
                Submission(request: ["messages": [["role": "user", "content": "later"]]], tenant: "acme"))
            #expect(try await Self.status(pool, submitted) == "held")
            let waiting = try await store.waiting(of: [submitted])
            #expect(waiting[submitted]?.tenantHold?.contains("tenant acme is paused") == true, "\(waiting)")

            // Claims take the other tenant's jobs only.
            let claimed = try await store.claim(worker: "w", freeSlots: 20, backgroundSlots: 0, lease: Self.lease)
            #expect(Self.tenants(claimed) == ["globex": 5])

            // A running job put back (its retry now) is held; one that ends counts what it cost.
            _ = try await store.complete(worker: "w", [
                Completion(jobID: running[0].id, attempt: running[0].attempt, kind: .retry,
                           error: ["code": "server_error", "message": "boom"], retryAt: nil),
                Self.succeeded(running[1], cost: Decimal(string: "0.25")!),
            ])
            #expect(try await Self.status(pool, running[0].id) == "held")
            let depth = try await ObservabilityStore(pool: pool).queueDepth()
            #expect(depth.first { $0.priority == "interactive" }?.held == 5)
            #expect(depth.first { $0.priority == "interactive" }?.queued == 0)
            // Given a new run_at (as a drain's release of postponed jobs does), it stays held.
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() WHERE id = $1", [submitted])
            #expect(try await Self.status(pool, submitted) == "held")
            #expect(try await store.claim(worker: "w", freeSlots: 20, backgroundSlots: 0, lease: Self.lease).isEmpty)

            // The housekeeper's round holds one a transaction begun before the pause let by.
            try await pool.query(
                "UPDATE switchyard.jobs SET run_at = held_run_at, held_run_at = NULL WHERE id = $1", [queued[0]])
            let round = try await TenantLimits.enforce(pool)
            #expect(round.map(\.change) == ["still held"] && round.first?.jobs == 1, "\(round)")

            #expect(try await TenantLimits.resume("acme", in: pool) == 5)
            let resumed = try await store.claim(worker: "w", freeSlots: 20, backgroundSlots: 0, lease: Self.lease)
            #expect(Set(resumed.map(\.id)) == Set(queued + [submitted, running[0].id]))
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenant_limits").scalar(Int.self) == 0)
            #expect(try await TenantLimits.enforce(pool).isEmpty)
        }
    }

    @Test("a budget: spending is added up each round; spent, the tenant is held with why; raised or removed, released")
    func budget() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await FairTenantsTests.enqueue(pool, 4, tenant: "acme")
            try await FairTenantsTests.enqueue(pool, 1, tenant: "globex")
            let first = try await store.claim(worker: "w", freeSlots: 5, backgroundSlots: 0, lease: Self.lease)
            let acme = first.filter { $0.tenant == "acme" }
            _ = try await store.complete(worker: "w", acme.prefix(2).map { Self.succeeded($0, cost: Decimal(string: "0.3")!) })
            _ = try await store.complete(worker: "w", first.filter { $0.tenant == "globex" }.map {
                Self.succeeded($0, cost: Decimal(string: "7")!)
            })

            let set = try await TenantLimits.setBudget("acme", Decimal(1), per: .month, in: pool)
            #expect(set.change == "unchanged" && set.reason == nil)
            var usage = try await TenantLimits.usage(in: pool, tenant: "acme")
            #expect(usage.first?.spentThisMonth == Decimal(string: "0.6") && usage.first?.running == 2, "\(usage)")

            _ = try await store.complete(worker: "w", acme.suffix(2).map { Self.succeeded($0, cost: Decimal(string: "0.5")!) })
            try await FairTenantsTests.enqueue(pool, 3, tenant: "acme")
            let round = try await TenantLimits.enforce(pool)
            #expect(round.count == 1 && round.first?.tenant == "acme" && round.first?.change == "held" && round.first?.jobs == 3,
                    "\(round)")
            let reason = try #require(round.first?.reason)
            #expect(reason.contains("tenant acme has spent its monthly budget ($1.60 of $1.00 since"), "\(reason)")
            #expect(reason.contains("dispatcher tenants budget acme AMOUNT"))
            // Added up: nothing pending, two tenants' rows for today.
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenant_spend_pending").scalar(Int.self) == 0)
            #expect(try await pool.query("SELECT sum(cost) FROM switchyard.tenant_spend").scalar(Decimal.self) == Decimal(string: "8.6"))
            usage = try await TenantLimits.usage(in: pool)
            #expect(usage.map(\.tenant) == ["acme", "globex"])
            #expect(usage[0].held == 3 && usage[0].heldReason == reason && usage[0].spentToday == Decimal(string: "1.6"))
            #expect(usage[1].spentThisMonth == 7 && usage[1].budget == nil)
            #expect(try await store.claim(worker: "w", freeSlots: 5, backgroundSlots: 0, lease: Self.lease).isEmpty)

            // Raised past what it spent: released at once.
            let raised = try await TenantLimits.setBudget("acme", Decimal(5), per: .month, in: pool)
            #expect(raised.change == "released" && raised.jobs == 3, "\(raised)")
            #expect(try await store.claim(worker: "w", freeSlots: 5, backgroundSlots: 0, lease: Self.lease).count == 3)
            // A budget under what it spent holds it at once; removed, nothing is held and the row goes.
            try await FairTenantsTests.enqueue(pool, 2, tenant: "acme")
            let lowered = try await TenantLimits.setBudget("acme", Decimal(string: "0.5")!, per: .day, in: pool)
            #expect(lowered.change == "held" && lowered.jobs == 2 && lowered.reason?.contains("daily budget") == true)
            // A new amount keeps the period.
            _ = try await TenantLimits.setBudget("acme", Decimal(string: "0.6")!, in: pool)
            #expect(try await TenantLimits.usage(in: pool, tenant: "acme").first?.period == .day)
            let removed = try await TenantLimits.setBudget("acme", nil, per: .month, in: pool)
            #expect(removed.change == "released" && removed.jobs == 2)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenant_limits").scalar(Int.self) == 0)

            // Refused: no budget of $0 or less, no other period.
            for (amount, period) in [("0", "month"), ("-1", "month"), ("5", "week")] {
                await #expect(throws: PostgresError.self) {
                    try await pool.query("SELECT * FROM switchyard.set_tenant_budget('acme', $1::numeric, $2)", [amount, period])
                }
            }
        }
    }

    @Test("a budget's period: a day counts the UTC day's spending, a month the calendar month's, pending or added up")
    func periods() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                """
                INSERT INTO switchyard.tenant_spend (tenant, day, cost) VALUES
                    ('acme', '2026-02-28', 100), ('acme', '2026-03-01', 2), ('acme', '2026-03-14', 3)
                """)
            try await pool.query(
                "INSERT INTO switchyard.tenant_spend_pending (tenant, day, cost) VALUES ('acme', '2026-03-15', 4)")
            func reason(_ budget: Int, _ period: String) async throws -> String? {
                try await pool.query(
                    """
                    SELECT switchyard.tenant_hold_reason(
                        ROW('acme', NULL, NULL, $1::numeric, $2::text, NULL, NULL, now(), NULL, NULL, NULL, NULL)::switchyard.tenant_limits,
                        '2026-03-15 23:59:59Z')
                    """, [budget, period]
                ).scalar(String?.self)
            }
            #expect(try await reason(5, "day") == nil)
            #expect(try await reason(4, "day")?.contains("($4.00 of $4.00 since 2026-03-15); its jobs run again at 2026-03-16 00:00 UTC") == true)
            #expect(try await reason(10, "month") == nil)
            #expect(try await reason(9, "month")?.contains("($9.00 of $9.00 since 2026-03-01); its jobs run again at 2026-04-01 00:00 UTC") == true)
            #expect(try await pool.query("SELECT switchyard.usd(0.00042)").scalar(String.self) == "$0.00042")
            #expect(try await pool.query("SELECT switchyard.usd(0.0000001)").scalar(String.self) == "$0.0000001")
            #expect(try await pool.query("SELECT switchyard.usd(0)").scalar(String.self) == "$0")
            // A name a shell would split is quoted in the command a reason suggests.
            let quoted = try await pool.query(
                """
                SELECT switchyard.tenant_hold_reason(
                    ROW('acme corp; it''s', now(), NULL, NULL, NULL, NULL, NULL, now(), NULL, NULL, NULL, NULL)::switchyard.tenant_limits)
                """).scalar(String.self)
            #expect(quoted.hasSuffix("dispatcher tenants resume 'acme corp; it'\\''s'"), "\(quoted)")
            #expect(TenantLimits.shellWord("acme corp; it's") == "'acme corp; it'\\''s'" && TenantLimits.shellWord("acme-1") == "acme-1")
        }
    }

    @Test("only an operator pauses or budgets a tenant; an application reads its own tenants' limits and spending")
    func roles() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await TenantLimits.pause("acme", in: pool)
            _ = try await TenantLimits.setBudget("globex", Decimal(3), per: .month, in: pool)
            try await SecurityFixtures.withRoles(pool, ["app": "switchyard_submitter"]) { roles in
                try await SecurityFixtures.map(pool, [(roles["app"]!, "acme")])
                try await pool.withConnection { connection in
                    try await connection.query("SET ROLE \(try SecurityFixtures.quoted(roles["app"]!))")
                    defer { Task { try? await connection.query("RESET ROLE") } }
                    let seen = try await connection.query("SELECT tenant FROM switchyard.tenant_limits")
                        .map { try $0.decode("tenant", as: String.self) }
                    #expect(seen == ["acme"])
                    for call in ["pause_tenant('globex')", "resume_tenant('acme')", "set_tenant_budget('acme', 100)",
                                 "enforce_tenant_limits()"] {
                        do {
                            _ = try await connection.query("SELECT switchyard.\(call)")
                            Issue.record("an application ran \(call)")
                        } catch let error as PostgresError {
                            #expect(error.sqlState == .insufficientPrivilege, "\(error)")
                        }
                    }
                    try await connection.query("RESET ROLE")
                }
            }
        }
    }

    @Test("cancelling a tenant's jobs: its queued and held jobs end cancelled at once, its running ones are asked to stop")
    func cancelAll() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await FairTenantsTests.enqueue(pool, 4, tenant: "acme")
            let running = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 0, lease: Self.lease)
            try await FairTenantsTests.enqueue(pool, 3, tenant: "acme", .background)
            try await FairTenantsTests.enqueue(pool, 2, tenant: "globex")
            _ = try await TenantLimits.pause("acme", in: pool)
            try await FairTenantsTests.enqueue(pool, 1, tenant: "acme")

            let (cancelled, cancelling) = try await TenantLimits.cancelJobs(of: "acme", in: pool)
            #expect(cancelled == 6 && cancelling == 2)
            let results = try await pool.query("SELECT status, error ->> 'message' AS message FROM switchyard.results")
            #expect(results.count == 6)
            for row in results {
                #expect(try row.decode("status", as: String.self) == "cancelled")
                #expect(try row.decode("message", as: String.self) == "cancelled before it started, with every job of tenant acme")
            }
            for job in running { #expect(try await Self.status(pool, job.id) == "cancelling") }
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE tenant = 'globex'").scalar(Int.self) == 2)
            // Their workers end them as cancelled, not put back.
            _ = try await store.complete(worker: "w", running.map {
                Completion(jobID: $0.id, attempt: $0.attempt, kind: .release)
            })
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE tenant = 'acme'").scalar(Int.self) == 0)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.results WHERE status = 'cancelled'").scalar(Int.self) == 8)
        }
    }

    /// A paused tenant's jobs with deadlines paged as at risk, and its interactive jobs put back to
    /// wait for a model counted in the queue wait: they wait for their tenant, not for the fleet.
    @Test("the queue-wait and backlog-deadline alerts leave a held tenant's jobs out")
    func alertsLeaveHeldOut() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request, priority, tenant, deadline)
                SELECT '{"messages":[{"role":"user","content":"x"}]}', 'background', 'acme', now() + interval '5 minutes'
                FROM generate_series(1, 3)
                """)
            try await pool.query(
                "INSERT INTO switchyard.jobs (request, tenant) VALUES ('{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}', 'acme')")
            // Put back to wait for a model ten minutes ago, due again in a minute.
            try await pool.query(
                """
                UPDATE switchyard.jobs SET waiting_since = now() - interval '10 minutes', run_at = now() + interval '1 minute'
                WHERE priority = 'interactive'
                """)
            func measured() async throws -> [String: Double] {
                Dictionary(uniqueKeysWithValues: try await pool.query(
                    "SELECT kind, value FROM switchyard.alert_measurements() WHERE kind IN ('queue_wait', 'backlog_deadlines')"
                ).map { (try $0.decode("kind", as: String.self), try $0.decode("value", as: Double.self)) })
            }
            let before = try await measured()
            #expect(before["backlog_deadlines"] == 3 && (before["queue_wait"] ?? 0) > 500_000, "\(before)")
            _ = try await TenantLimits.pause("acme", in: pool)
            #expect(try await measured().isEmpty)
            // Released, its wait starts again: the time it was held was its tenant's.
            _ = try await TenantLimits.resume("acme", in: pool)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE waiting_since IS NOT NULL").scalar(Int.self) == 0)
        }
    }

    @Test("the tenant_budget alert raises for a tenant held for its budget, and clears as it is released")
    func budgetAlert() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query("INSERT INTO switchyard.tenant_spend (tenant, day, cost) VALUES ('acme', (now() AT TIME ZONE 'UTC')::date, 2)")
            _ = try await TenantLimits.setBudget("acme", Decimal(5), per: .day, in: pool)
            func events() async throws -> [String] {
                try await pool.query("SELECT event FROM switchyard.evaluate_alerts() WHERE kind = 'tenant_budget'")
                    .map { try $0.decode("event", as: String.self) }
            }
            #expect(try await events().isEmpty)
            let lowered = try await TenantLimits.setBudget("acme", Decimal(1), in: pool)
            #expect(lowered.change == "held")
            #expect(try await events() == ["raised"])
            let message = try await pool.query(
                "SELECT message FROM switchyard.alerts WHERE kind = 'tenant_budget' AND cleared_at IS NULL").scalar(String.self)
            #expect(message.hasPrefix("tenant acme has spent its daily budget ($2.00 of $1.00 since "), "\(message)")
            _ = try await TenantLimits.setBudget("acme", Decimal(3), in: pool)
            #expect(try await events() == ["cleared"])
        }
    }

    @Test("the tenant_budget_share alert raises for a tenant that has spent most of its budget, before its work stops")
    func budgetShareAlert() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                "INSERT INTO switchyard.tenant_spend (tenant, day, cost) VALUES ('acme corp', (now() AT TIME ZONE 'UTC')::date, 0.85)")
            _ = try await TenantLimits.setBudget("acme corp", Decimal(2), per: .day, in: pool)
            func events() async throws -> [String] {
                try await pool.query("SELECT event FROM switchyard.evaluate_alerts() WHERE kind = 'tenant_budget_share'")
                    .map { try $0.decode("event", as: String.self) }
            }
            #expect(try await events().isEmpty)  // 42.5%
            _ = try await TenantLimits.setBudget("acme corp", Decimal(1), in: pool)
            #expect(try await events() == ["raised"])  // 85%: not held, and warned
            let alert = try await pool.query(
                "SELECT message, value, threshold FROM switchyard.alerts WHERE kind = 'tenant_budget_share' AND cleared_at IS NULL")
            #expect(try alert.first?.decode("message", as: String.self)
                == "tenant acme corp has spent $0.85 of its daily budget of $1.00 (85.0%; the alert is at 80.0%): its jobs "
                    + "are held once it is spent (to raise it: dispatcher tenants budget 'acme corp' AMOUNT)")
            #expect(try alert.first?.decode("value", as: Double.self) == 0.85)
            #expect(try alert.first?.decode("threshold", as: Double.self) == 0.8)
            #expect(try await TenantLimits.usage(in: pool, tenant: "acme corp").first?.heldReason == nil)
            _ = try await TenantLimits.setBudget("acme corp", Decimal(2), in: pool)
            #expect(try await events() == ["cleared"])
            // Its clearing says what was measured, not what follows (a review's read "over 80.0%").
            #expect(try await pool.query(
                "SELECT clear_message FROM switchyard.alerts WHERE kind = 'tenant_budget_share'").scalar(String.self)
                == "tenant acme corp has spent $0.85 of its daily budget of $2.00 (42.5%; the alert is at 80.0%)")
            // Held already, it says so.
            _ = try await TenantLimits.setBudget("acme corp", Decimal(string: "0.5")!, in: pool)
            #expect(try await events() == ["raised"])
            #expect(try await pool.query(
                "SELECT message FROM switchyard.alerts WHERE kind = 'tenant_budget_share' AND cleared_at IS NULL").scalar(String.self)
                .hasSuffix("(170.0%; the alert is at 80.0%): its jobs are held until its next period (to raise the budget: "
                    + "dispatcher tenants budget 'acme corp' AMOUNT)"))
            // At a share of 0, any spending, but not none.
            try await pool.query("UPDATE switchyard.settings SET value = '0' WHERE name = 'alert_tenant_budget_share'")
            _ = try await TenantLimits.setBudget("initech", Decimal(1), per: .day, in: pool)
            #expect(try await events().isEmpty)  // initech has spent nothing; acme corp's stays open
            // Off: the open one clears, and no warning at any share.
            try await pool.query("UPDATE switchyard.settings SET value = 'off' WHERE name = 'alert_tenant_budget_share'")
            #expect(try await events() == ["cleared"])
            _ = try await TenantLimits.setBudget("acme corp", Decimal(1), in: pool)
            #expect(try await events().isEmpty)
            // A budget removed clears its alerts, saying so, not "no traffic in the window" (a review).
            try await pool.query("UPDATE switchyard.settings SET value = '0.8' WHERE name = 'alert_tenant_budget_share'")
            #expect(try await events() == ["raised"])
            _ = try await TenantLimits.setBudget("acme corp", nil, in: pool)
            #expect(try await events() == ["cleared"])
            #expect(try await pool.query(
                """
                SELECT clear_message FROM switchyard.alerts WHERE kind = 'tenant_budget_share' ORDER BY id DESC LIMIT 1
                """).scalar(String.self)
                == "tenant_budget_share acme corp: nothing left to measure (the tenant has no budget now, or the rule is off)")
        }
    }

    @Test("dispatcher tenants: lists, pauses, resumes and budgets, says why a tenant is held, and refuses bad input")
    func command() async throws {
        try await TestDatabase.withMigratedPool { pool in
            func dispatcher(_ arguments: [String]) async throws -> (status: Int32, output: String) {
                try await TenantLimitsTests.tenantsCommand(pool, arguments)
            }
            try await FairTenantsTests.enqueue(pool, 3, tenant: "acme")
            try await FairTenantsTests.enqueue(pool, 2, tenant: "globex")
            let paused = try await dispatcher(["pause", "acme"])
            #expect(paused.status == 0 && paused.output.contains("tenant acme paused: 3 queued jobs held now"), "\(paused.output)")
            let budget = try await dispatcher(["budget", "globex", "12.5", "--per", "day"])
            #expect(budget.status == 0 && budget.output.contains("tenant globex's budget: $12.50 per day"), "\(budget.output)")
            let listed = try await dispatcher([])
            #expect(listed.status == 0, "\(listed.output)")
            let lines = listed.output.split(separator: "\n").map(String.init)
            #expect(lines.first == "tenant  queued  held  running  per minute  today  this month  budget      state", "\(listed.output)")
            #expect(lines.contains("acme         0     3        0           —     $0          $0  —           held: paused"), "\(listed.output)")
            #expect(lines.contains("globex       2     0        0           —     $0          $0  $12.50/day  not held"), "\(listed.output)")
            #expect(lines.last?.hasPrefix("tenant acme is paused (since ") == true, "\(listed.output)")
            // Thousands of tenants printed thousands of lines: --limit lists the first by name, and counts the rest.
            let first1 = try await dispatcher(["--limit", "1"])
            #expect(first1.output.contains("acme ") && !first1.output.contains("globex "), "\(first1.output)")
            #expect(first1.output.contains(
                "1 more tenant (0 held) with 2 jobs queued or held; --limit 0 lists all, dispatcher tenants list NAME one"),
                "\(first1.output)")
            let globexFirst = try await dispatcher(["list", "--limit", "1", "--json"])
            #expect(try JSONValue(parsing: globexFirst.output).arrayValue?.count == 1)
            let first = try await Self.ids(pool, tenant: "acme")[0]
            let wait = try await BlockingWork.run {
                try ChildProcess.run(
                    WorkerProcess.binary("dispatcher"), ["wait", "\(first)", "--timeout", "0s", "--database-url", pool.configuration.effectiveConnectionString])
            }
            #expect(wait.output.contains("  held: tenant acme is paused"), "\(wait.output)")
            #expect(wait.output.contains("note: job \(first) is held: tenant acme is paused (since "), "\(wait.output)")
            let json = try await dispatcher(["list", "globex", "--json"])
            #expect(json.status == 0 && json.output.contains("\"budget_period\": \"day\""), "\(json.output)")
            let resumed = try await dispatcher(["resume", "acme"])
            #expect(resumed.status == 0 && resumed.output.contains("tenant acme resumed: 3 held jobs may run again"), "\(resumed.output)")
            let cancelled = try await dispatcher(["cancel", "acme"])
            #expect(cancelled.status == 0, "\(cancelled.output)")
            #expect(cancelled.output.contains(
                "tenant acme: 3 queued jobs cancelled, 0 running ones cancelling (at their workers' next heartbeat); jobs it "
                    + "submits from now on run (to stop those: dispatcher tenants pause acme)"), "\(cancelled.output)")

            for (arguments, message) in [
                (["budget", "acme", "-3"], "a budget is an amount in US dollars like 50 or 12.5, more than 0, with at most 12 "
                    + "digits before the point and 6 after it (got \"-3\")"),
                (["budget", "acme", "0.0000001"], "and 6 after it (got \"0.0000001\")"),
                (["budget", "acme", "5", "--per", "week"], "--per is month or day (got \"week\")"),
                (["pause"], "dispatcher tenants pause takes a tenant (got none)"),
                (["pause", "acme", "--per", "day"], "--per is for dispatcher tenants budget, not pause"),
                (["pause", "acme", "--limit", "1"], "--limit is for dispatcher tenants list, not pause"),
                (["--limit", "-1"], "--limit is a number of tenants, 0 for all (got \"-1\")"),
                (["acme"], "unknown tenants command \"acme\""),
                // A name no submission can give, and none has: "acme " in a script.
                (["pause", "acme "], "tenant 'acme ' begins or ends with white space, and no job, spending or limit has it"),
                (["budget", "\u{200B}globex", "5"], "tenant '<U+200B>globex' begins or ends with white space"),
                (["pause", "acme\u{200D}"], "tenant 'acme<U+200D>' begins or ends with white space"),
                (["pause", "acme\u{00AD}"], "tenant 'acme<U+00AD>' begins or ends with white space"),
            ] {
                let refused = try await dispatcher(arguments)
                #expect(refused.status == 2 && refused.output.contains(message), "\(arguments): \(refused.output)")
            }
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenant_limits").scalar(Int.self) == 1)
        }
    }

    /// A review's retries started 27-58 ms after a pause: their write-backs had read the tenant as
    /// not held, and committed after the pause. (Waiting for them in the pause deadlocked.)
    @Test("a job put back unheld as its tenant was paused is not claimed, and the round holds it; the round passes over a tenant being changed")
    func putBackDuringPause() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            let store = QueueStore(pool: pool)
            try await FairTenantsTests.enqueue(pool, 1, tenant: "acme")
            try await FairTenantsTests.enqueue(pool, 1, tenant: "acme", .background)
            let jobs = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 2, lease: Self.lease)
            #expect(jobs.count == 2)
            let writeBack = try await PostgresConnection.connect(configuration)
            defer { Task { await writeBack.close() } }
            // Put back (as a retry's write-back does), its trigger run before the pause: not held.
            try await writeBack.query("BEGIN")
            try await writeBack.query(
                "UPDATE switchyard.jobs SET lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL WHERE tenant = 'acme'")
            #expect(try await TenantLimits.pause("acme", in: pool) == 0)
            try await writeBack.query("COMMIT")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE held_run_at IS NULL").scalar(Int.self) == 2)
            // Due and unheld, in either partition: the claim passes them over all the same.
            #expect(try await store.claim(worker: "w", freeSlots: 4, backgroundSlots: 4, lease: Self.lease).isEmpty)
            let round = try await TenantLimits.enforce(pool)
            #expect(round.count == 1 && round.first?.change == "still held" && round.first?.jobs == 2, "\(round)")
            for job in jobs { #expect(try await Self.status(pool, job.id) == "held") }

            // An operator's change left open: the round passes over that tenant, and returns.
            try await writeBack.query("BEGIN")
            _ = try await writeBack.query("SELECT * FROM switchyard.set_tenant_budget('acme', 10)")
            // (Blocked, it would wait for the operator: given up after 20 s instead, and failed.)
            try await pool.withConnection { connection in
                try await connection.query("SET statement_timeout = '20s'")
                #expect(try await connection.query("SELECT * FROM switchyard.enforce_tenant_limits()").isEmpty)
                try await connection.query("RESET statement_timeout")
            }
            try await writeBack.query("ROLLBACK")
        }
    }

    /// A third review's pauses failed with deadlocks 6% of the time: the hold waited for a job a
    /// claim had locked, then kept it locked, and the write-backs of the tenant's jobs crossed it.
    @Test("a pause never waits for a job's row: one a claim under way holds is that claim's")
    func pauseNeverWaits() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            try await FairTenantsTests.enqueue(pool, 3, tenant: "acme")
            let ids = try await Self.ids(pool, tenant: "acme")
            let claiming = try await PostgresConnection.connect(configuration)
            defer { Task { await claiming.close() } }
            try await claiming.query("BEGIN")
            try await claiming.query("SELECT id FROM switchyard.jobs WHERE id = $1 FOR NO KEY UPDATE", [ids[0]])
            // (Blocked, it would wait for the claim: given up after 20 s instead, and failed.)
            let held = try await pool.withConnection { connection in
                try await connection.query("SET statement_timeout = '20s'")
                defer { Task { try? await connection.query("RESET statement_timeout") } }
                return try await connection.query("SELECT switchyard.pause_tenant('acme')").scalar(Int.self)
            }
            #expect(held == 2)
            try await claiming.query(
                "UPDATE switchyard.jobs SET lease_owner = 'w', lease_expires_at = now() + interval '1 minute' WHERE id = $1",
                [ids[0]])
            try await claiming.query("COMMIT")
            #expect(try await Self.status(pool, ids[0]) == "running")
            for id in ids.dropFirst() { #expect(try await Self.status(pool, id) == "held") }
        }
    }

    @Test("held tenants are not the claim's: the fair claim's tenant scan leaves them out")
    func heldLeaveTheClaim() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await FairTenantsTests.enqueue(pool, 3, tenant: "active")
            for tenant in ["held-1", "held-2", "held-3"] {
                try await FairTenantsTests.enqueue(pool, 2, tenant: tenant)
                _ = try await TenantLimits.pause(tenant, in: pool)
            }
            #expect(try await pool.query("SELECT switchyard.several_tenants('interactive')").scalar(Bool.self) == false)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenants_due('interactive', NULL, NULL, 10)").scalar(Int.self) == 1)
            _ = try await TenantLimits.resume("held-2", in: pool)
            try await pool.query("RESET switchyard.one_tenant_at_interactive")
            #expect(try await pool.query("SELECT string_agg(t, ',' ORDER BY t) FROM switchyard.tenants_due('interactive', NULL, NULL, 10) t")
                .scalar(String.self) == "active,held-2")
        }
    }

    /// A review's upgrade stalled every worker running through it: each session that had claimed
    /// through the fair path kept fair_claim's result at the jobs' columns of before (42804).
    @Test("a session that claimed through the fair path before sql/0088 claims after it")
    func upgradeKeepsClaiming() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            let before = Array(Migration.all.prefix { $0.version < 88 })
            _ = try await Migrator(migrations: before).migrate(pool)
            try await FairTenantsTests.enqueue(pool, 5, tenant: "acme")
            try await FairTenantsTests.enqueue(pool, 5, tenant: "globex")
            let worker = try await PostgresConnection.connect(configuration)
            defer { Task { await worker.close() } }
            #expect(try await worker.query("SELECT * FROM switchyard.claim('w', 4, 0, 30)").count == 4)
            _ = try await Migrator().migrate(pool)
            #expect(try await worker.query("SELECT * FROM switchyard.claim('w', 4, 0, 30)").count == 4)
        }
    }

    /// A write-back that began before the migration committed ran complete as it was, and added
    /// nothing up: a review's upgrade lost two results' cost.
    @Test("a recount counts the month's spending from the results again, the pending rows with them, once")
    func recount() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await FairTenantsTests.enqueue(pool, 3, tenant: "acme")
            let jobs = try await store.claim(worker: "w", freeSlots: 3, backgroundSlots: 0, lease: Self.lease)
            _ = try await store.complete(worker: "w", jobs.map { Self.succeeded($0, cost: Decimal(string: "0.5")!) })
            _ = try await TenantLimits.enforce(pool)
            // One result's cost never added up (as an old write-back's), another still pending.
            try await pool.query("UPDATE switchyard.tenant_spend SET cost = cost - 0.5")
            try await FairTenantsTests.enqueue(pool, 1, tenant: "acme")
            let more = try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: Self.lease)
            _ = try await store.complete(worker: "w", more.map { Self.succeeded($0, cost: Decimal(string: "0.25")!) })
            // Due, as the migration leaves it for a minute on.
            try await pool.query("INSERT INTO switchyard.tenant_spend_recount (due_at) VALUES (now())")
            _ = try await TenantLimits.enforce(pool)
            #expect(try await pool.query("SELECT sum(cost) FROM switchyard.tenant_spend").scalar(Decimal.self) == Decimal(string: "1.75"))
            // Done, it is not due again (the migration's own is due a minute after it).
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenant_spend_recount WHERE due_at <= now()").scalar(Int.self) == 0)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenant_spend_pending").scalar(Int.self) == 0)
            #expect(try await TenantLimits.usage(in: pool, tenant: "acme").first?.spentThisMonth == Decimal(string: "1.75"))
        }
    }

    /// Through a worker: its housekeeper adds the spending up and holds the tenant.
    @Test("a worker's housekeeper holds a tenant that spent its budget; the other tenant's jobs all run")
    func workerHolds() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await TenantLimits.setBudget("acme", Decimal(string: "0.05")!, per: .month, in: pool)
            try await FairTenantsTests.enqueue(pool, 3, tenant: "acme")
            let executor = GatedExecutor(outcome: { _ in
                .succeeded(JobAnswer(model: "gated", provider: "test", tier: "primary", response: ["ok": true],
                                     cost: Decimal(string: "0.02")))
            })
            executor.releaseAll()
            let configuration = WorkerServiceTests.configuration(concurrency: 4, reserve: 0)
            try await WorkerServiceTests.withWorker(pool, configuration, executor) { _ in
                try await waitUntil("acme's three jobs have their results") {
                    try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 3
                }
                try await waitUntil("the housekeeper holds acme") {
                    try await pool.query("SELECT held_reason IS NOT NULL FROM switchyard.tenant_limits").scalar(Bool.self)
                }
                try await FairTenantsTests.enqueue(pool, 5, tenant: "acme")
                try await FairTenantsTests.enqueue(pool, 5, tenant: "globex")
                try await waitUntil("globex's jobs have their results") {
                    try await pool.query("SELECT count(*) FROM switchyard.results WHERE tenant = 'globex'").scalar(Int.self) == 5
                }
            }
            #expect(executor.started.filter { $0.tenant == "acme" }.count == 3)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE held_run_at IS NOT NULL").scalar(Int.self) == 5)
            let usage = try await TenantLimits.usage(in: pool, tenant: "acme")
            #expect(usage.first?.spentThisMonth == Decimal(string: "0.06") && usage.first?.held == 5, "\(usage)")
        }
    }
}
