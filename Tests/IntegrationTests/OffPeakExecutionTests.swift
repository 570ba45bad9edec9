import Foundation
import Postgres
import Synchronization
import QueueModel
import Testing

@testable import Worker

/// A routing worker under the background policy, against a real Postgres.
@Suite("Off-peak execution: ceilings, escalation, postponement, cost")
struct OffPeakExecutionTests {
    /// `premium` ($0.01/1K, no windows) and `budget` ($0.002/1K, ×0.1 all day → $0.0002/1K).
    static let catalog = """
        {"models": {
           "premium": {"provider": "simulated", "tier": "premium", "price_per_1k_input": 0.01,
                       "price_per_1k_output": 0.01, "settings": {"mode": "instant"}},
           "budget":  {"provider": "simulated", "tier": "open_source", "price_per_1k_input": 0.002,
                       "price_per_1k_output": 0.002, "settings": {"mode": "instant"},
                       "price_windows": [{"start": "00:00", "end": "00:00", "multiplier": 0.1}]}},
         "routing_rules": {"default": {"primary": "premium", "fallback": "budget"},
                           "premium_only": {"primary": "premium"}}}
        """

    static func submit(_ store: QueueStore, _ taskClass: String?, priority: Priority, deadlineIn: TimeInterval? = nil)
        async throws -> Int64
    {
        try await store.submit(
            Submission(
                request: Submission.prompt("summarise"), priority: priority, taskClass: taskClass,
                deadline: deadlineIn.map { Date().addingTimeInterval($0) }
            )
        )
    }

    /// Runs `body` while a routing worker (4 slots, the catalog's simulated models) works the queue.
    static func withRoutingWorker(_ pool: PostgresPool, _ body: () async throws -> Void) async throws {
        let logger = Logger(label: "worker", level: .error) { _ in }
        let fleet = FleetState(pool: pool, logger: logger)
        let executor = RoutingExecutor(fleet: fleet, providers: ProviderFactory(concurrency: 4), worker: "w")
        try await WorkerServiceTests.withWorker(
            pool, WorkerServiceTests.configuration(concurrency: 4), executor, fleet: fleet
        ) { _ in try await body() }
    }

    @Test("background work runs within its ceiling, escalates near its deadline (recorded), and otherwise waits")
    func ceilingsAndEscalation() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.001", in: pool)
            let store = QueueStore(pool: pool)
            let cheap = try await Self.submit(store, nil, priority: .background)
            let urgent = try await Self.submit(store, "premium_only", priority: .background, deadlineIn: 60)
            let patient = try await Self.submit(store, "premium_only", priority: .background, deadlineIn: 6 * 3600)
            // The worker's metadata keys are its own: the job's values under them do not reach the
            // result (an "escalation" of the submitter's was counted as one by savings).
            let interactive = try await store.submit(
                Submission(
                    request: Submission.prompt("summarise"), taskClass: "premium_only",
                    metadata: [
                        "escalation": "mine", "rule": "mine", "price_per_1k": 0, "team": "a",
                        // Keys workers added later: a review's forged passed_over came back as the worker's.
                        "passed_over": [["model": "premium", "reason": "forged"]], "requested_model": "forged",
                        "unserved_task_class": "forged", "task_class": "mine",
                    ]))

            try await Self.withRoutingWorker(pool) {
                try await waitUntil("the three others have succeeded") {
                    let finished = try await store.statuses(of: [cheap, urgent, interactive])
                    return finished.values.allSatisfy({ $0 == "succeeded" }) && finished.count == 3
                }
                // The patient one was claimed, found nothing within its ceiling, and was put back
                // until its escalation point, its attempt not spent.
                try await waitUntil("the patient job is put back") {
                    try await store.status(of: patient) == "scheduled"
                }
            }

            let cheapResult = try #require(try await store.result(of: cheap))
            #expect(cheapResult["model"] == "budget")
            // 2 prompt tokens at most… exact cost: tokens × $0.002/1K × 0.1.
            let tokensIn = try #require(cheapResult["tokens_in"]?.intValue)
            let tokensOut = try #require(cheapResult["tokens_out"]?.intValue)
            let cost = try await pool.query("SELECT cost FROM switchyard.results WHERE job_id = $1", [cheap]).scalar(Decimal.self)
            #expect(cost == Decimal(tokensIn + tokensOut) * Decimal(string: "0.0002")! / 1000)
            let baseCost = try await pool.query("SELECT base_cost FROM switchyard.results WHERE job_id = $1", [cheap]).scalar(Decimal.self)
            #expect(baseCost == Decimal(tokensIn + tokensOut) * Decimal(string: "0.002")! / 1000)

            let urgentResult = try #require(try await store.result(of: urgent))
            #expect(urgentResult["model"] == "premium")
            #expect(urgentResult["metadata"]?["escalation"]?["reason"]?.stringValue?.contains("escalation horizon") == true)

            let interactiveResult = try #require(try await store.result(of: interactive))
            #expect(interactiveResult["model"] == "premium")
            #expect(interactiveResult["metadata"]?["escalation"] == nil)
            #expect(interactiveResult["metadata"]?["price_per_1k"] == nil)
            #expect(interactiveResult["metadata"]?["rule"] == "premium_only")
            #expect(interactiveResult["metadata"]?["team"] == "a")
            for key in ["passed_over", "requested_model", "unserved_task_class"] {
                #expect(interactiveResult["metadata"]?[key] == nil, "\(key)")
            }
            #expect(interactiveResult["metadata"]?["task_class"] == "mine")  // not Switchyard's: kept

            let row = try #require(try await pool.query("SELECT attempt, run_at FROM switchyard.jobs WHERE id = $1", [patient]).first)
            #expect(try row.decode("attempt", as: Int.self) == 0)
            #expect(try row.decode("run_at", as: Date.self) > Date().addingTimeInterval(3600))
            // Its user can read why (dispatcher result and wait show it).
            let waiting = try await store.waiting(of: [patient])[patient]?.reason ?? ""
            #expect(
                waiting.hasPrefix(
                    "no model of its rule is within the background ceiling of $0.001/1K at any hour; it runs above "
                        + "the ceiling from "), "\(waiting)")
            #expect(waiting.hasSuffix(" s before its deadline"), "\(waiting)")
            // Without a deadline: what ends the wait is an operator's.
            let noDeadline = try await Self.submit(store, "premium_only", priority: .background)
            try await Self.withRoutingWorker(pool) {
                try await waitUntil("the job without a deadline is put back") {
                    try await store.waiting(of: [noDeadline])[noDeadline]?.reason != nil
                }
            }
            #expect(
                try await store.waiting(of: [noDeadline])[noDeadline]?.reason
                    == "no model of its rule is within the background ceiling of $0.001/1K at any hour; it waits until "
                    + "the ceiling is raised or a drain begins (dispatcher background ceiling | drain), looking again hourly")

            // The guarantee, as SQL: no background result ran above its ceiling without a
            // recorded escalation.
            let violations = try await pool.query(
                """
                SELECT count(*) FROM switchyard.results
                WHERE priority = 'background' AND status = 'succeeded' AND NOT metadata ? 'escalation'
                  AND (metadata->>'price_per_1k')::numeric > 0.001
                """
            ).scalar(Int.self)
            #expect(violations == 0)
            let savings = try await SavingsReport.load(pool, since: nil)
            #expect(savings.rows.last?.jobs == 3)
            #expect((savings.rows.last?.savedByCheaperModel ?? 0) > 0)
            #expect((savings.rows.last?.savedByOffPeak ?? 0) > 0)
            #expect(savings.rows.last?.escalatedJobs == 1)
            #expect(savings.text.contains("by model  by off-peak"), "\(savings.text)")
        }
    }

    @Test("a drain puts the jobs waiting for a cheaper price back to work at once; jobs submitted for later keep their time")
    func drainReleasesPostponed() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.001", in: pool)
            let store = QueueStore(pool: pool)
            let patient = try await Self.submit(store, "premium_only", priority: .background)
            let later = try await store.submit(
                Submission(request: Submission.prompt("summarise"), priority: .background,
                           runAt: Date().addingTimeInterval(3600)))
            try await Self.withRoutingWorker(pool) {
                try await waitUntil("the patient job is put back until the next cheap window") {
                    try await store.status(of: patient) == "scheduled"
                }
                try await BackgroundPolicy.set(
                    "background_drain_until", to: Date().addingTimeInterval(3600).postgresText, in: pool)
                try await waitUntil("the patient job has run, drained") {
                    try await store.status(of: patient) == "succeeded"
                }
            }
            let drained = try #require(try await store.result(of: patient))
            #expect(drained["model"] == "premium")
            // Run above the ceiling, and the result says why (it did not).
            let reason = drained["metadata"]?["escalation"]?["reason"]?.stringValue ?? ""
            #expect(reason.contains("a drain until") && reason.contains("$0.001/1K"), "\(reason)")
            #expect(try await store.status(of: later) == "scheduled")
        }
    }

    /// A review's background job, planned inside a window at 21:47:58, met a failing primary; its
    /// fallback was called at 21:48:01, after the window closed, at 4× the ceiling, unrecorded.
    @Test("a model that went over the ceiling since the plan is not called: the job fails or waits, its calls kept",
          arguments: [(false, false), (true, false), (true, true)])
    func windowClosesMidJob(primaryWindowed: Bool, deadlineNear: Bool) async throws {
        // Planned and the primary called at 10:59:59 UTC (the next one), inside the window; every
        // later reading (the primary's failure, the fallback's start) is past 11:00.
        let calendar = Calendar(identifier: .gregorian)
        var utc = calendar
        utc.timeZone = TimeZone(identifier: "UTC")!
        let planned = try #require(
            utc.nextDate(
                after: Date().addingTimeInterval(120), matching: DateComponents(hour: 10, minute: 59, second: 59),
                matchingPolicy: .strict))
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                // The primary within the ceiling at any hour, or (primaryWindowed) only in the window too.
                let primaryPrice = primaryWindowed ? "0.002" : "0.0005"
                let catalog = """
                    {"models": {
                       "failing": {"provider": "openai", "base_url": "\(server.openAIBaseURL)", "api_key_env": "FAKE_KEY",
                                   "price_per_1k_input": \(primaryPrice), "price_per_1k_output": \(primaryPrice),
                                   "price_windows": [{"start": "10:00", "end": "11:00", "multiplier": 0.25}]},
                       "windowed": {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002,
                                    "settings": {"mode": "instant"},
                                    "price_windows": [{"start": "10:00", "end": "11:00", "multiplier": 0.25}]}},
                     "routing_rules": {"default": {"primary": "failing", "fallback": "windowed"}}}
                    """
                _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
                try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.001", in: pool)
                try await server.script(["failing": ["kind": "error", "status": 500]])
                let store = QueueStore(pool: pool)
                // Near: within the escalation horizon once the window has closed.
                let job = try await store.submit(
                    Submission(
                        request: Submission.prompt("summarise"), priority: .background,
                        deadline: deadlineNear ? planned.addingTimeInterval(150) : nil))
                // The claim's gate reads the real clock: with the primary windowed, a drain lets it through.
                if primaryWindowed {
                    try await BackgroundPolicy.set(
                        "background_drain_until", to: Date().addingTimeInterval(60).postgresText, in: pool)
                }
                let claimed = try #require(
                    try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 1, lease: .seconds(30)).first)
                #expect(claimed.id == job)
                if primaryWindowed { try await BackgroundPolicy.set("background_drain_until", to: "", in: pool) }

                let key = ["FAKE_KEY": "sk-\(UUID())"]
                let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, environment: key)
                await fleet.reload()
                let readings = Mutex(0)
                var executor = RoutingExecutor(
                    fleet: fleet, providers: ProviderFactory(concurrency: 1, environment: key),
                    worker: "w")
                executor.now = {
                    readings.withLock { count in
                        count += 1
                        // The plan, (with a deadline) the budget's look, and the primary's start.
                        return planned.addingTimeInterval(count <= (deadlineNear ? 3 : 2) ? 0 : 90)
                    }
                }
                let outcome = await executor.execute(claimed)
                switch outcome {
                case .failed(let failure) where !primaryWindowed:
                    // Its primary is within the ceiling now too: an attempt of failed models, retried later.
                    #expect(failure.retryable)
                    #expect(failure.message.contains("not called, over the background ceiling since the plan: windowed"),
                            "\(failure.message)")
                    #expect(failure.trail.map(\.model) == ["failing"])
                case .postponed(let until, let reason, _, false, _, let trail) where primaryWindowed && !deadlineNear:
                    // Nothing within the ceiling until tomorrow's window: it waits, its attempt not spent.
                    #expect(reason.contains("windowed went over the ceiling since it was planned"), "\(reason)")
                    #expect(until == planned.addingTimeInterval(86_400 - 3599))
                    #expect(trail.map(\.model) == ["failing"])
                    #expect(trail.map(\.outcome) == ["error"])
                case .postponed(let until, let reason, _, false, _, let trail) where deadlineNear:
                    // Its deadline near now: planned again at once, to run escalated, not an attempt spent.
                    #expect(reason.contains("escalation horizon"), "\(reason)")
                    #expect(until == planned.addingTimeInterval(90))
                    #expect(trail.map(\.model) == ["failing"])
                default:
                    Issue.record("unexpected outcome: \(outcome)")
                }
            }
        }
    }

    @Test("a background job queued for hours waits for its model from its first putting back, not from its creation")
    func backgroundWaitsFromFirstPuttingBack() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, reason, opened_at, consecutive_failures)
                VALUES ('premium', 'open', '5 failures in a row', now(), 5)
                """)
            let store = QueueStore(pool: pool)
            // Held three hours (at the background gate, behind a backlog) before its first claim,
            // with one attempt: failing it would end the job.
            let job = try await store.submit(
                Submission(request: Submission.prompt("summarise"), priority: .background, taskClass: "premium_only",
                           maxAttempts: 1))
            try await pool.query(
                "UPDATE switchyard.jobs SET created_at = now() - interval '3 hours', run_at = now() - interval '3 hours'")
            try await Self.withRoutingWorker(pool) {
                try await waitUntil("the job is put back to wait for its model") {
                    try await pool.query(
                        "SELECT count(*) FROM switchyard.jobs WHERE waiting_since IS NOT NULL AND lease_owner IS NULL"
                    ).scalar(Int.self) == 1
                }
            }
            #expect(try await store.status(of: job) != "failed")
            let row = try #require(
                try await pool.query(
                    """
                    SELECT attempt, now() - waiting_since < interval '1 minute' AS recent, postponed_at IS NOT NULL AS marked
                    FROM switchyard.jobs WHERE id = $1
                    """, [job]
                ).first)
            #expect(try row.decode("attempt", as: Int.self) == 0)
            #expect(try row.decode("recent", as: Bool.self))
            #expect(try row.decode("marked", as: Bool.self))
        }
    }

    @Test("a policy change releases postponed jobs; a postponement decided under the old policy is not kept")
    func postponementsFollowThePolicy() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            for _ in 0..<3 { _ = try await Self.submit(store, nil, priority: .background) }
            let scheduled = try await store.submit(
                Submission(request: Submission.prompt("summarise"), priority: .background,
                           runAt: Date().addingTimeInterval(3600)))
            let jobs = try await store.claim(worker: "w", freeSlots: 3, backgroundSlots: 3, lease: .seconds(30))
            #expect(jobs.count == 3)
            let current = try #require(try await BackgroundPolicy.load(pool).version)
            let hourAway = Date().addingTimeInterval(3600)
            let written = try await store.complete(
                worker: "w",
                zip(jobs, [current, "a policy changed since", nil]).map { job, policy in
                    Completion(jobID: job.id, attempt: job.attempt, kind: .postpone, retryAt: hourAway, policy: policy)
                })
            #expect(written.count == 3)
            @Sendable func waits(_ id: Int64) async throws -> (later: Bool, postponed: Bool) {
                let row = try #require(try await pool.query(
                    // Sent back a second ahead (a worker on the old policy would loop on it), not later.
                    "SELECT run_at > now() + interval '2 seconds' AS later, postponed_at IS NOT NULL AS postponed FROM switchyard.jobs WHERE id = $1",
                    [id]
                ).first)
                return (try row.decode("later"), try row.decode("postponed"))
            }
            // Decided under the policy in force, or under none named: kept. Under an older one:
            // back at once, to be decided again.
            #expect(try await waits(jobs[0].id) == (true, true))
            #expect(try await waits(jobs[1].id) == (false, false))
            #expect(try await waits(jobs[2].id) == (true, true))
            // Stricter (a pause, a lower ceiling, a drain ended): nothing moves.
            try await BackgroundPolicy.set("background_paused", to: "true", in: pool)
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.1", in: pool)
            try await BackgroundPolicy.set("background_drain_until", to: "", in: pool)
            #expect(try await waits(jobs[0].id) == (true, true))
            // A higher ceiling: every postponed job is back, a job submitted for later is not.
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.5", in: pool)
            #expect(try await waits(jobs[0].id) == (false, false))
            #expect(try await waits(jobs[2].id) == (false, false))
            #expect(try await waits(scheduled) == (true, false))
            #expect(try await BackgroundPolicy.load(pool).version != current)
        }
    }

    /// A cost walkthrough raised its rule's own ceiling, as the waiting job's reason said to, and
    /// moved a model's cheap window to now: the jobs went on waiting an hour with the old reason.
    @Test("a catalog change releases postponed jobs; an import that changes nothing does not")
    func catalogChangesReleasePostponements() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let catalogs = CatalogStore(pool: pool)
            _ = try await catalogs.importDocument(Data(Self.catalog.utf8))
            let store = QueueStore(pool: pool)
            // Submits a job and postpones every queued one (a released one too), as a worker would.
            func postponeOne() async throws -> Int64 {
                let id = try await Self.submit(store, nil, priority: .background)
                let jobs = try await store.claim(worker: "w", freeSlots: 10, backgroundSlots: 10, lease: .seconds(30))
                #expect(jobs.contains { $0.id == id })
                _ = try await store.complete(worker: "w", jobs.map { job in
                    Completion(jobID: job.id, attempt: job.attempt, kind: .postpone, retryAt: Date().addingTimeInterval(3600))
                })
                return id
            }
            func waiting(_ id: Int64) async throws -> Bool {
                try await pool.query(
                    "SELECT run_at > now() AND postponed_at IS NOT NULL FROM switchyard.jobs WHERE id = $1", [id]
                ).scalar(Bool.self)
            }
            let first = try await postponeOne()
            // The same catalog again: nothing written, nothing moves.
            let same = try await catalogs.importDocument(Data(Self.catalog.utf8))
            #expect(same.changes.isEmpty)
            #expect(try await waiting(first))
            // A rule's own ceiling raised: back in the queue at once.
            let ceiling = Self.catalog.replacingOccurrences(
                of: #""premium_only": {"primary": "premium"}"#,
                with: #""premium_only": {"primary": "premium", "settings": {"background_max_cost_per_1k": 0.5}}"#)
            #expect(ceiling != Self.catalog)
            _ = try await catalogs.importDocument(Data(ceiling.utf8))
            #expect(try await !waiting(first))
            // A model's price window moved: likewise.
            let second = try await postponeOne()
            let window = ceiling.replacingOccurrences(of: #""multiplier": 0.1"#, with: #""multiplier": 0.2"#)
            #expect(window != ceiling)
            _ = try await catalogs.importDocument(Data(window.utf8))
            #expect(try await !waiting(second))
            // A price raised lets no job run sooner: they stay put (releasing them would only have
            // every one claimed and put back).
            let third = try await postponeOne()
            let dearer = window.replacingOccurrences(of: #""price_per_1k_output": 0.01"#, with: #""price_per_1k_output": 0.02"#)
            #expect(dearer != window)
            _ = try await catalogs.importDocument(Data(dearer.utf8))
            #expect(try await waiting(third))
            // A postponement decided under the catalog before an import, written after it, is sent
            // back at once (the policy's version covers the catalog): a worker that had not reloaded
            // yet put released jobs off for another hour.
            let before = try #require(try await BackgroundPolicy.load(pool).version)
            _ = try await catalogs.importDocument(Data(window.utf8))
            #expect(try await BackgroundPolicy.load(pool).version != before)
            let late = try await Self.submit(store, nil, priority: .background)
            let claimed = try await store.claim(worker: "w", freeSlots: 10, backgroundSlots: 10, lease: .seconds(30))
            let job = try #require(claimed.first { $0.id == late })
            _ = try await store.complete(worker: "w", [
                Completion(jobID: late, attempt: job.attempt, kind: .postpone, retryAt: Date().addingTimeInterval(3600),
                           policy: before),
            ])
            #expect(try await !waiting(late))
            // Also released: a model's scores changed (over a rule's quality floor now), a rule
            // removed (its classes fall to another); and an operator's UPDATE by hand changes the
            // policy's version as an import does (the tables keep updated_at themselves).
            let scored = try await postponeOne()
            try await pool.query("UPDATE switchyard.models SET capabilities = '{\"reasoning\": 90}' WHERE name = 'budget'")
            #expect(try await !waiting(scored))
            let removed = try await postponeOne()
            let version = try #require(try await BackgroundPolicy.load(pool).version)
            try await pool.query("DELETE FROM switchyard.routes WHERE task_class = 'premium_only'")
            #expect(try await !waiting(removed))
            try await pool.query("UPDATE switchyard.models SET price_per_1k_input = price_per_1k_input / 2 WHERE name = 'budget'")
            #expect(try await BackgroundPolicy.load(pool).version != version)
        }
    }

    @Test("a write-back that postpones waits for a policy change before it locks any job row (no deadlock)")
    func postponingBatchLocksNothingWhileWaiting() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            for _ in 0..<2 { _ = try await Self.submit(store, nil, priority: .background) }
            let jobs = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 2, lease: .seconds(30))
            #expect(jobs.count == 2)
            // A release in progress holds the policy lock (as release_postponed does).
            let release = try await PostgresConnection.connect(pool.configuration)
            try await release.query("BEGIN")
            try await release.query("SELECT FROM switchyard.locks WHERE name = 'policies' FOR UPDATE")
            let writing = Task {
                try await store.complete(worker: "w", [
                    Completion(jobID: jobs[0].id, attempt: jobs[0].attempt, kind: .result, status: "succeeded"),
                    Completion(jobID: jobs[1].id, attempt: jobs[1].attempt, kind: .postpone,
                               retryAt: Date().addingTimeInterval(3600)),
                ])
            }
            try await waitUntilBlocked(pool, calling: "switchyard.complete", "the write-back waits for the lock")
            // The result's row is not held meanwhile: the release could take it.
            let free = try await release.query(
                "SELECT id FROM switchyard.jobs WHERE id = $1 FOR UPDATE NOWAIT", [jobs[0].id])
            #expect(free.count == 1)
            try await release.query("ROLLBACK")
            await release.close()
            #expect(try await writing.value.count == 2)
        }
    }

    @Test("a policy change and a postponement at once: the postponement waits for the change, and is not kept")
    func changeRacesPostponement() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await Self.submit(store, nil, priority: .background)
            let job = try #require(
                try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 1, lease: .seconds(30)).first)
            let decidedUnder = try await BackgroundPolicy.load(pool).version
            // An operator's drain, not yet committed: it releases postponed jobs.
            let operatorSession = try await PostgresConnection.connect(pool.configuration)
            try await operatorSession.query("BEGIN")
            try await operatorSession.query(
                "UPDATE switchyard.settings SET value = '2999-01-01T00:00:00Z' WHERE name = 'background_drain_until'")
            let postponing = Task {
                try await store.complete(worker: "w", [
                    Completion(jobID: job.id, attempt: job.attempt, kind: .postpone,
                               retryAt: Date().addingTimeInterval(3600), policy: decidedUnder)
                ])
            }
            try await waitUntilBlocked(pool, calling: "switchyard.complete", "the postponement waits for the change")
            try await operatorSession.query("COMMIT")
            await operatorSession.close()
            #expect(try await postponing.value.count == 1)
            // Back within a second (not at once: a worker on the old policy would loop on it), not kept.
            let later = try await pool.query(
                "SELECT run_at > now() + interval '2 seconds' OR postponed_at IS NOT NULL FROM switchyard.jobs WHERE id = $1",
                [job.id]
            ).scalar(Bool.self)
            #expect(!later, "a postponement decided under the old policy was kept after the change")
        }
    }
    /// A review's job named a model disabled while it waited: it ran on the rule's models with
    /// nothing in its result saying the requested model was passed over.
    @Test("a job naming a disabled model runs on the rule's models, and its result says why")
    func requestedModelDisabled() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let catalog = Self.catalog.replacingOccurrences(
                of: #""premium": {"provider": "simulated""#, with: #""premium": {"provider": "simulated", "enabled": false"#)
            _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
            let store = QueueStore(pool: pool)
            let named = try await store.submit(Submission(request: [
                "model": "premium", "messages": [["role": "user", "content": "summarise"]],
            ]))
            let plain = try await Self.submit(store, nil, priority: .interactive)
            try await Self.withRoutingWorker(pool) {
                try await waitUntil("both have results") {
                    try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 2
                }
            }
            let result = try #require(try await store.result(of: named))
            #expect(result["model"] == "budget")
            #expect(result["metadata"]?["requested_model"]?["model"] == "premium")
            #expect(result["metadata"]?["requested_model"]?["reason"]?.stringValue?.hasPrefix("it is disabled in the catalog") == true,
                    "\(String(describing: result["metadata"]))")
            #expect(try await store.result(of: plain)?["metadata"]?["requested_model"] == nil)
        }
    }

    /// A job's misspelt task_class ("premium_onyl") was routed by the default rule, and nothing
    /// said its class had found no rule.
    @Test("a job whose own task_class no rule serves says, in its result, that the default rule routed it")
    func unservedTaskClass() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            let store = QueueStore(pool: pool)
            let misspelt = try await Self.submit(store, "premium_onyl", priority: .interactive)
            let served = try await Self.submit(store, "premium_only", priority: .interactive)
            let builtIn = try await Self.submit(store, "code", priority: .interactive)
            let classified = try await Self.submit(store, nil, priority: .interactive)
            try await Self.withRoutingWorker(pool) {
                try await waitUntil("all four have results") {
                    try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 4
                }
            }
            let result = try #require(try await store.result(of: misspelt))
            #expect(result["status"] == "succeeded")
            #expect(result["metadata"]?["unserved_task_class"] == [
                "class": "premium_onyl",
                "reason": #"no rule serves it, by name or in its classes; the "default" rule routed the job (the other rules: premium_only)"#,
            ], "\(String(describing: result["metadata"]))")
            // A served class, a built-in one (the default rule is how the catalog serves it) and a
            // classified request: nothing to say.
            for job in [served, builtIn, classified] {
                #expect(try await store.result(of: job)?["metadata"]?["unserved_task_class"] == nil)
            }
        }
    }

    /// Runs one job whose request names "premium" (with `fields` besides), under the catalog with
    /// `original` replaced by `changed`: the model that answered and the result's requested_model
    /// reason.
    static func namedPremium(
        replacing original: String, with changed: String, fields: [String: JSONValue] = [:]
    ) async throws -> (model: JSONValue?, reason: String) {
        try await TestDatabase.withMigratedPool { pool in
            let catalog = Self.catalog.replacingOccurrences(of: original, with: changed)
            #expect(catalog != Self.catalog)
            _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
            let store = QueueStore(pool: pool)
            var request: [String: JSONValue] = ["model": "premium", "messages": [["role": "user", "content": "summarise"]]]
            request.merge(fields) { _, new in new }
            let named = try await store.submit(Submission(request: .object(request)))
            try await Self.withRoutingWorker(pool) {
                try await waitUntil("it has a result") {
                    try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 1
                }
            }
            let result = try #require(try await store.result(of: named))
            return (result["model"], result["metadata"]?["requested_model"]?["reason"]?.stringValue ?? "")
        }
    }

    /// A walkthrough's jobs naming a slow model were answered by another with nothing but the
    /// trail to say why.
    @Test("a job whose named model was tried and failed says so in its result")
    func requestedModelFailed() async throws {
        let (model, reason) = try await Self.namedPremium(
            replacing: #""price_per_1k_output": 0.01, "settings": {"mode": "instant"}}"#,
            with: #""price_per_1k_output": 0.01, "settings": {"error_rate": 1, "latency_p50_ms": 1, "latency_p95_ms": 2}}"#)
        #expect(model == "budget")
        #expect(reason.hasPrefix("it was tried first and did not answer (error: ") && reason.hasSuffix("; the rule's models ran instead"),
                "\(reason)")
    }

    /// A Python walkthrough's result said "breaker open, over the job's ceiling, or outside its
    /// tiers" of a named model too small for the request, and pointed to an operator's command.
    @Test("a job naming a model the router leaves out says the router's reason in its result")
    func requestedModelLeftOut() async throws {
        let (model, reason) = try await Self.namedPremium(
            replacing: #""premium": {"provider": "simulated""#, with: #""premium": {"provider": "simulated", "context_window": 1000"#,
            fields: ["max_tokens": 2000])
        #expect(model == "budget")
        #expect(reason.hasPrefix("it was left out: context window 1000 <") && reason.hasSuffix("; the rule's models ran instead"),
                "\(reason)")
    }
}
