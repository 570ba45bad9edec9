import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// A provider's refusal (401, 403) of one worker is that worker's: it skips the model for a while,
/// and the fleet's breaker opens only once every live worker has been refused
/// (`sql/0097_refused_workers.sql`). A real Postgres; the second test with two routing workers and
/// the fake provider refusing one's key.
@Suite("A provider's refusal of one worker")
struct RefusedWorkerTests {
    static func refusal(_ worker: String?, model: String = "m") -> HealthReport {
        var report = HealthReport(model: model)
        report.worker = worker
        report.refused = "worker \(worker ?? "old")'s key was refused: HTTP 401 unauthorized (invalid_api_key): Incorrect API key"
        return report
    }

    static func answered(_ worker: String, model: String = "m") -> HealthReport {
        var report = HealthReport(model: model)
        report.worker = worker
        report.record(success: true, latencyMS: 100)
        return report
    }

    static func health(_ pool: PostgresPool, model: String = "m") async throws -> (state: String, reason: String?, refused: [String]) {
        // No row until the first report: closed, nothing refused.
        let row = try #require(
            try await pool.query(
                """
                SELECT coalesce(f.state, 'closed') AS state, f.reason,
                       coalesce((SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(h.refused_by) k), '') AS refused
                FROM (VALUES ($1)) AS m(model)
                LEFT JOIN switchyard.fleet_health f USING (model) LEFT JOIN switchyard.model_health h USING (model)
                """, [model]
            ).first)
        let refused: String = try row.decode("refused")
        return (try row.decode("state"), try row.decode("reason", as: String?.self), refused.split(separator: ",").map(String.init))
    }

    @Test("one worker refused leaves the breaker closed and is noted; once every live worker is refused it opens")
    func everyLiveWorker() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                """
                INSERT INTO switchyard.workers (id, concurrency, heartbeat_at) VALUES
                    ('w-a', 4, now()), ('w-b', 4, now()), ('w-gone', 4, now() - interval '5 minutes')
                """)
            let store = HealthStore(pool: pool)
            #expect(try await store.report([Self.refusal("w-a")]) == ["m": .closed])
            var health = try await Self.health(pool)
            #expect(health.state == "closed")
            #expect(health.refused == ["w-a"])
            // Said again, still one worker of two: closed. A worker gone silent is not waited for.
            #expect(try await store.report([Self.refusal("w-a")]) == ["m": .closed])
            #expect(try await store.report([Self.refusal("w-b")]) == ["m": .open])
            health = try await Self.health(pool)
            #expect(health.refused == ["w-a", "w-b"])
            #expect(
                health.reason == "every live worker was refused (2 workers); the last: worker w-b's key was refused: "
                    + "HTTP 401 unauthorized (invalid_api_key): Incorrect API key", "\(String(describing: health.reason))")
        }
    }

    @Test("an answered call takes a worker off, a refusal twice breaker_open_seconds old is forgotten, and a report naming no worker opens at once")
    func forgotten() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                "INSERT INTO switchyard.workers (id, concurrency, heartbeat_at) VALUES ('w-a', 4, now()), ('w-b', 4, now())")
            let store = HealthStore(pool: pool)
            try await store.report([Self.refusal("w-a")])
            try await store.report([Self.answered("w-a")])
            #expect(try await Self.health(pool).refused == [])
            try await store.report([Self.refusal("w-a")])
            try await pool.query(
                """
                UPDATE switchyard.model_health
                SET refused_by = jsonb_set(refused_by, '{w-a,at}', to_jsonb(now() - interval '61 seconds'))
                WHERE model = 'm'
                """)
            #expect(try await store.report([Self.refusal("w-b")]) == ["m": .closed])
            #expect(try await Self.health(pool).refused == ["w-b"])
            // A worker from before 0097 does not say who it is: its refusal opens the breaker, as it did.
            #expect(try await store.report([Self.refusal(nil)]) == ["m": .open])
            #expect(try await Self.health(pool).reason?.hasPrefix("worker old's key was refused") == true)
        }
    }

    /// A review's revoked key opened nothing while a worker without the key was alive (it never
    /// calls the model), and a stopped worker's refusal stayed listed minutes past its time.
    @Test("a worker that skips the model for good does not hold the breaker closed; old and gone refusals leave at any report")
    func workersThatNeverCall() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(
                """
                INSERT INTO switchyard.workers (id, concurrency, heartbeat_at, skipped_models) VALUES
                    ('w-a', 4, now(), '{}'), ('w-b', 4, now(), '{}'),
                    ('w-nokey', 4, now(), '{"m": "its API key variable FAKE_KEY is not set in this worker environment"}')
                """)
            let store = HealthStore(pool: pool)
            try await store.report([Self.refusal("w-a")])
            // An old refusal, and one of a worker since stopped: gone at the next report of any kind.
            try await pool.query(
                """
                UPDATE switchyard.model_health
                SET refused_by = refused_by || jsonb_build_object('w-gone', jsonb_build_object('at', now(), 'reason', 'r'),
                                                                  'w-b', jsonb_build_object('at', now() - interval '61 seconds',
                                                                                            'reason', 'r'))
                WHERE model = 'm'
                """)
            try await store.report([Self.answered("w-a")])
            #expect(try await Self.health(pool).refused == [])
            try await store.report([Self.refusal("w-a")])
            #expect(try await store.report([Self.refusal("w-b")]) == ["m": .open])
            #expect(try await Self.health(pool).refused == ["w-a", "w-b"])
        }
    }

    /// A review's burst right after a refusal's skip ran out sent a refused call from each free
    /// slot at once.
    @Test("once a refusal's skip runs out, one call tries the model again while the others pass it over")
    func oneCallTriesAgain() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(#"{"models": {"m": {"provider": "simulated"}}, "routing_rules": {"chat": {"primary": "m"}}}"#.utf8))
            let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, worker: "w-a")
            await fleet.reload()
            let model = try #require(fleet.router.catalog.model(named: "m"))
            func skipped() -> String? { fleet.routingState(sequence: 0).models["m"]?.unavailableHere }
            let first = try #require(fleet.begin(model, estimatedTokens: 10))
            // Refused a minute ago: its skip has run out.
            fleet.end(
                model, call: first, success: false, countsAgainstModel: false, latencyMS: nil,
                refused: ("worker w-a's key was refused: HTTP 401 …", "its key was refused: HTTP 401 unauthorized: Bad key."),
                now: Date().addingTimeInterval(-60))
            #expect(skipped() == nil)
            #expect(fleet.skippedModels.isEmpty)
            let probe = try #require(fleet.begin(model, estimatedTokens: 10))
            let reason = try #require(skipped())
            #expect(reason.hasPrefix("its key was refused: HTTP 401 unauthorized: Bad key; it tries the model again from "), "\(reason)")
            #expect(fleet.skippedModels["m"] == reason)
            #expect(fleet.begin(model, estimatedTokens: 10) == nil)
            // Answered: the model is this worker's again, every slot of it.
            fleet.end(model, call: probe, success: true, latencyMS: 10)
            #expect(skipped() == nil)
            let again = try #require(fleet.begin(model, estimatedTokens: 10))
            #expect(fleet.begin(model, estimatedTokens: 10) != nil)
            fleet.end(model, call: again, success: true, latencyMS: 10)
        }
    }

    /// A review's stale worker put a single-model rule's jobs back for 5 s each, and took some
    /// again: a quarter of them waited 5–25 s while the other workers had the model (and so did a
    /// worker without the key beside one with it).
    @Test("a job whose only model this worker cannot call is passed on, due at once, while another worker calls it, else put back for five seconds")
    func refusedHereGoesBackSoon() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(#"{"models": {"solo": {"provider": "simulated"}}, "routing_rules": {"chat": {"primary": "solo"}}}"#.utf8))
            // Another worker alive, not refused: the fleet's breaker stays closed.
            try await pool.query(
                "INSERT INTO switchyard.workers (id, concurrency, heartbeat_at) VALUES ('w-stale', 4, now()), ('w-good', 4, now())")
            let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, worker: "w-stale")
            await fleet.reload()
            let model = try #require(fleet.router.catalog.model(named: "solo"))
            let call = try #require(fleet.begin(model, estimatedTokens: 10))
            fleet.end(
                model, call: call, success: false, countsAgainstModel: false, latencyMS: nil,
                refused: ("worker w-stale's key was refused: HTTP 401 …", "its key was refused: HTTP 401 …"))
            let executor = RoutingExecutor(fleet: fleet, providers: ProviderFactory(concurrency: 2), worker: "w-stale")
            let store = QueueStore(pool: pool)
            /// How long after the execution ended the job is due, why, and whether it was passed on.
            func putBack() async throws -> (seconds: Double, reason: String, passedOn: Bool) {
                _ = try await store.submit(Submission(request: Submission.prompt("hi"), taskClass: "chat"))
                let job = try #require(
                    try await store.claim(worker: "w-stale", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
                guard case .postponed(let until, let reason, _, _, let passedOn, _) = await executor.execute(job) else {
                    throw WaitTimedOut(description: "the job was not put back")
                }
                return (until.timeIntervalSinceNow, reason, passedOn)
            }
            let refused = try await putBack()
            #expect(refused.seconds <= 0 && refused.passedOn, "\(refused)")
            // Waited past its limit, the job fails its attempt, and is not passed on: named, this
            // worker's claims passed its retry over for five seconds.
            _ = try await store.submit(Submission(request: Submission.prompt("hi"), taskClass: "chat"))
            var old = try #require(
                try await store.claim(worker: "w-stale", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            old.waitingSince = Date().addingTimeInterval(-120)
            guard case .failed = await executor.execute(old) else {
                throw WaitTimedOut(description: "a job that waited two minutes was put back again")
            }
            #expect(!fleet.passedOn().contains(old.id))
            #expect(refused.reason.contains("not on this worker: its key was refused"), "\(refused)")
            fleet.skipHere(model, reason: "its API key variable FAKE_KEY is not set in this worker's environment", hint: nil)
            let missing = try await putBack()
            #expect(missing.seconds <= 0 && missing.passedOn, "\(missing)")
            // No other worker calls it (w-good lacks the key too): five seconds (with the key missing
            // everywhere, a review's jobs went back every second).
            try await pool.query(
                "UPDATE switchyard.workers SET skipped_models = '{\"solo\": \"its API key variable is not set\"}' WHERE id = 'w-good'")
            await fleet.reload()
            let nowhere = try await putBack()
            #expect(nowhere.seconds >= 4 && !nowhere.passedOn, "\(nowhere)")
        }
    }

    /// A routing walkthrough's worker without the fallback's key failed a job on its primary's one
    /// 500 (with --max-attempts 1, for good), the healthy fallback untried though the other worker
    /// called it; and a job passed on lost the calls made before.
    @Test("the models a worker can call failed, and one it cannot another calls: the job is passed on with its calls")
    func fallbackElsewhere() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(
                    #"""
                    {"models": {"down": {"provider": "simulated", "settings": {"latency_p50_ms": 1, "latency_p95_ms": 1,
                                                                               "error_rate": 1}},
                                "away": {"provider": "simulated"},
                                "tiny": {"provider": "simulated", "context_window": 1}},
                     "routing_rules": {"chat": {"primary": "down", "fallbacks": ["away"]},
                                       "small": {"primary": "down", "fallbacks": ["tiny"]}}}
                    """#.utf8))
            try await pool.query(
                "INSERT INTO switchyard.workers (id, concurrency, heartbeat_at) VALUES ('w-here', 4, now()), ('w-other', 4, now())")
            let fleet = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, worker: "w-here")
            await fleet.reload()
            let away = try #require(fleet.router.catalog.model(named: "away"))
            fleet.skipHere(away, reason: "its API key variable AWAY_KEY is not set in this worker's environment", hint: nil)
            let tiny = try #require(fleet.router.catalog.model(named: "tiny"))
            fleet.skipHere(tiny, reason: "its API key variable TINY_KEY is not set in this worker's environment", hint: nil)
            let executor = RoutingExecutor(fleet: fleet, providers: ProviderFactory(concurrency: 2), worker: "w-here")
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Submission.prompt("hi"), taskClass: "chat", maxAttempts: 1))
            let job = try #require(
                try await store.claim(worker: "w-here", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            guard case .postponed(let until, let reason, _, true, true, let trail) = await executor.execute(job) else {
                throw WaitTimedOut(description: "the job was not passed on")
            }
            #expect(until <= Date(), "\(until)")
            #expect(reason.hasPrefix("down failed (last: ") && reason.hasSuffix("away left to the workers that can call it"),
                    "\(reason)")
            #expect(trail.map(\.model) == ["down"] && trail.allSatisfy { $0.worker == "w-here" }, "\(trail)")
            // Written back as the worker writes a job passed on, the other worker claims it with the
            // model that failed named, and calls only the fallback (a re-check's called the failed
            // primary again first).
            _ = try await store.complete(worker: "w-here", [
                Completion(jobID: job.id, attempt: job.attempt, kind: .wait,
                           error: ["code": "waiting_for_model", "message": .string(reason)], trail: trail, retryAt: nil)
            ])
            let other = FleetState(pool: pool, logger: Logger(label: "worker", level: .error) { _ in }, worker: "w-other")
            await other.reload()
            let taken = try #require(
                try await store.claim(worker: "w-other", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            #expect(taken.id == job.id && taken.failedElsewhere == ["down"], "\(taken.failedElsewhere)")
            let otherExecutor = RoutingExecutor(fleet: other, providers: ProviderFactory(concurrency: 2), worker: "w-other")
            guard case .succeeded(let answer) = await otherExecutor.execute(taken) else {
                throw WaitTimedOut(description: "the worker it was passed on to did not answer it")
            }
            #expect(answer.model == "away" && answer.trail.map(\.model) == ["away"], "\(answer.trail)")
            // Passed on once an attempt: a job already waiting for a model in it fails here (two
            // workers each without the other's key passed it back and forth).
            var waited = job
            waited.waitingSince = Date().addingTimeInterval(-1)
            guard case .failed = await executor.execute(waited) else {
                throw WaitTimedOut(description: "a job passed on before in its attempt was passed on again")
            }
            // Nor to a model that would not take it there (too small for the request): it came back.
            _ = try await store.submit(Submission(request: Submission.prompt("hi"), taskClass: "small", maxAttempts: 1))
            let small = try #require(
                try await store.claim(worker: "w-here", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            guard case .failed = await executor.execute(small) else {
                throw WaitTimedOut(description: "a job was passed on to a model too small for it")
            }
            // No other worker calls it: the attempt fails here, as before.
            try await pool.query(
                "UPDATE switchyard.workers SET skipped_models = '{\"away\": \"its API key variable is not set\"}' WHERE id = 'w-other'")
            await fleet.reload()
            guard case .failed(let failure) = await executor.execute(job) else {
                throw WaitTimedOut(description: "the job was put back with no worker to run it")
            }
            #expect(failure.code == "all_candidates_failed", "\(failure)")
        }
    }

    /// A key rotated on one machine and not yet on the other: the stale worker's 401 opened the
    /// model for both, and the good worker's probes closed it until the stale one's next call.
    @Test("two workers, one on a stale key: it skips the model and says so in status, the other keeps calling it")
    func staleKeyOnOneWorker() async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                _ = try await CatalogStore(pool: pool).importDocument(Data(FallbackExecutionTests.catalog(server).utf8))
                try await server.script(["primary": ["refuse_keys": ["sk-stale-0000000000000000"]]])
                let store = QueueStore(pool: pool)
                try await FallbackExecutionTests.withRoutingWorker(
                    on: pool, environment: ["FAKE_KEY": FallbackExecutionTests.key]
                ) {
                    try await FallbackExecutionTests.withRoutingWorker(
                        on: pool, environment: ["FAKE_KEY": "sk-stale-0000000000000000"]
                    ) {
                        // Batches until the stale worker has taken a job and been refused.
                        var ids: [Int64] = []
                        try await waitUntil("the stale worker has been refused", every: .milliseconds(200)) {
                            ids += try await store.submit(batch: Array(repeating: FallbackExecutionTests.chat(), count: 8))
                            return try await Self.health(pool, model: "primary").refused.count == 1
                        }
                        try await waitUntil("every job has its result") {
                            try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == ids.count
                        }
                        let stale = try #require(try await Self.health(pool, model: "primary").refused.first)
                        var byWorker: [String: Set<String>] = [:]
                        for id in ids {
                            let result = try #require(try await store.result(of: id))
                            #expect(result["status"] == "succeeded")
                            let last = try #require(result["attempts"]?.arrayValue?.last)
                            byWorker[last["worker"]?.stringValue ?? "", default: []]
                                .insert(last["model"]?.stringValue ?? "")
                        }
                        // The good worker kept the model; the stale one went to the fallback.
                        #expect(byWorker.keys.count == 2, "\(byWorker)")
                        #expect(byWorker[stale] == ["secondary"], "\(byWorker)")
                        #expect(byWorker.first { $0.key != stale }?.value.contains("primary") == true, "\(byWorker)")
                        let health = try await Self.health(pool, model: "primary")
                        #expect(health.state == "closed", "\(health)")
                        try await waitUntil("status shows the stale worker skipping the model") {
                            let reason = try await pool.query(
                                "SELECT skipped_models ->> 'primary' FROM switchyard.workers WHERE id = $1", [stale]
                            ).scalar(String?.self)
                            return reason?.hasPrefix("its key was refused: HTTP 401 unauthorized") == true
                                && reason?.contains("it tries the model again from") == true
                        }
                        // Revoked for both: the fleet's breaker opens, with both named as refused.
                        try await server.script(["primary": ["kind": "unauthorized"]])
                        try await waitUntil("the breaker opens", every: .milliseconds(200)) {
                            _ = try await store.submit(batch: Array(repeating: FallbackExecutionTests.chat(), count: 4))
                            return try await Self.health(pool, model: "primary").state == "open"
                        }
                        let open = try await Self.health(pool, model: "primary")
                        #expect(
                            open.reason?.hasPrefix("every live worker was refused (2 workers); the last: worker ") == true,
                            "\(open)")
                    }
                }
            }
        }
    }
}
