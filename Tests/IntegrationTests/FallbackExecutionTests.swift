import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// Routing and fallback end to end: a real Postgres, a worker routing by an imported catalog, and
/// a fake OpenAI/Anthropic server whose answers each test scripts.
@Suite("Fallback execution through the fake provider")
struct FallbackExecutionTests {
    static let key = "sk-f6Tz9Qw2Lm8Xr4Vn7Kp3Js"

    /// A catalog of fake-server models: `primary` → `secondary` → `big` (the larger context) for
    /// class `chat`, and an Anthropic model for class `claude`. Every model's key is in `FAKE_KEY`
    /// but the primary's, which is in `primaryKeyVariable`.
    static func catalog(
        _ server: FakeProviderServer, primaryLatencyMS: Int = 1500, primaryKeyVariable: String = "FAKE_KEY"
    ) -> String {
        """
        {
          "models": {
            "primary":   {"provider": "openai", "base_url": "\(server.openAIBaseURL)", "api_key_env": "\(primaryKeyVariable)",
                          "tier": "standard", "price_per_1k_input": 0.001, "price_per_1k_output": 0.002,
                          "context_window": 8000},
            "secondary": {"provider": "openai", "base_url": "\(server.openAIBaseURL)", "api_key_env": "FAKE_KEY",
                          "tier": "cheap", "price_per_1k_input": 0.0005, "price_per_1k_output": 0.001,
                          "context_window": 8000},
            "big":       {"provider": "openai", "base_url": "\(server.openAIBaseURL)", "api_key_env": "FAKE_KEY",
                          "tier": "premium", "price_per_1k_input": 0.01, "price_per_1k_output": 0.03,
                          "context_window": 200000},
            "claude":    {"provider": "anthropic", "base_url": "\(server.anthropicBaseURL)", "api_key_env": "FAKE_KEY",
                          "upstream_model": "claude-test", "tier": "standard", "context_window": 200000}
          },
          "routing_rules": {
            "chat":   {"primary": "primary", "fallback": ["secondary", "big"], "max_latency_ms": \(primaryLatencyMS)},
            "claude": {"primary": "claude"}
          }
        }
        """
    }

    /// Runs a routing worker in-process against a fresh database and a fresh fake server.
    static func withRoutingWorker<T>(
        primaryLatencyMS: Int = 1500,
        _ body: (QueueStore, FakeProviderServer, PostgresPool) async throws -> T
    ) async throws -> T {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                _ = try await CatalogStore(pool: pool).importDocument(
                    Data(catalog(server, primaryLatencyMS: primaryLatencyMS).utf8)
                )
                return try await withRoutingWorker(on: pool, environment: ["FAKE_KEY": key]) {
                    try await body(QueueStore(pool: pool), server, pool)
                }
            }
        }
    }

    /// Runs a routing worker in-process on `pool`, reading API keys from `environment`, until
    /// `body` returns.
    static func withRoutingWorker<T>(
        on pool: PostgresPool, environment: [String: String],
        logger: Logger = Logger(label: "worker", level: .error) { _ in }, _ body: () async throws -> T
    ) async throws -> T {
        var configuration = WorkerServiceTests.configuration(concurrency: 4)
        let fleet = FleetState(pool: pool, logger: logger, environment: environment, worker: configuration.identity.id)
        configuration.retryPolicy = RetryPolicy(base: .seconds(60))
        let executor = RoutingExecutor(
            fleet: fleet, providers: ProviderFactory(concurrency: 4, environment: environment),
            worker: configuration.identity.id
        )
        return try await WorkerServiceTests.withWorker(pool, configuration, executor, fleet: fleet) { _ in
            try await body()
        }
    }

    static func submitAndWait(_ store: QueueStore, _ submission: Submission) async throws -> JSONValue {
        let id = try await store.submit(submission)
        for _ in 0..<1000 {
            if let result = try await store.result(of: id) { return result }
            if try await store.status(of: id) == "scheduled" {
                // Failed and waiting for a retry: read the trail from the live row instead.
                return ["status": "scheduled"]
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw QueueError(.timedOut, "job \(id) did not finish")
    }

    static func chat(_ text: String = "hello") -> Submission {
        Submission(request: Submission.prompt(text), taskClass: "chat")
    }

    static func trail(_ result: JSONValue) -> [(model: String, outcome: String)] {
        (result["attempts"]?.arrayValue ?? []).map {
            ($0["model"]?.stringValue ?? "", $0["outcome"]?.stringValue ?? "")
        }
    }

    /// An affinity walkthrough could not tell from a result whether its model was its key's.
    @Test("under a hash rule, a call that went to another model than the key's home names the home in the trail")
    func affinityHomeInTrail() async throws {
        try await Self.withHashRuleWorker { store, server in
            let ring = HashRing(members: ["primary", "secondary", "big"])
            let key = try #require((0..<1000).map { "conv-\($0)" }.first { ring.walk(from: $0)[0] == "primary" })
            try await server.script(["primary": ["kind": "server_error"]])
            let result = try await Self.submitAndWait(
                store, Submission(request: Submission.prompt("hello"), taskClass: "pinned", affinityKey: key))
            #expect(result["status"] == "succeeded")
            let trail = result["attempts"]?.arrayValue ?? []
            #expect(trail.map { $0["model"] } == ["primary", "secondary"])
            // The home's own call has no mark; the one that went elsewhere names it.
            #expect(trail.map { $0["affinity_home"] } == [nil, "primary"], "\(trail)")
            // A job without a key under the same rule has none.
            let unkeyed = try await Self.submitAndWait(
                store, Submission(request: Submission.prompt("hello"), taskClass: "pinned"))
            #expect((unkeyed["attempts"]?.arrayValue ?? []).allSatisfy { $0["affinity_home"] == nil })
        }
    }

    /// An operator's walkthrough: while one model's breaker was open, every job of its hash rule
    /// named it in `passed_over`, those whose key's home was a healthy model and ran there too.
    @Test("under a hash rule, a keyed job names an open breaker in passed_over only when it is its key's home")
    func passedOverUnderHashIsTheHome() async throws {
        try await Self.withHashRuleWorker { store, server in
            // Out of credit: primary's breaker opens at once, fleet-wide.
            try await server.script(["primary": ["kind": "quota", "status": 402, "type": nil, "code": 402,
                                                 "message": "Insufficient credits"]])
            let opening = try await Self.submitAndWait(store, Self.chat())
            #expect(opening["model"] == "secondary")
            let ring = HashRing(members: ["primary", "secondary", "big"])
            let keys = (0..<1000).map { "conv-\($0)" }
            let elsewhere = try #require(keys.first { ring.walk(from: $0)[0] == "big" })
            let home = try #require(keys.first { ring.walk(from: $0)[0] == "primary" })
            let healthy = try await Self.submitAndWait(
                store, Submission(request: Submission.prompt("hello"), taskClass: "pinned", affinityKey: elsewhere))
            #expect(healthy["model"] == "big")
            #expect(healthy["metadata"]?["passed_over"] == nil, "\(String(describing: healthy["metadata"]))")
            let walkedPast = try await Self.submitAndWait(
                store, Submission(request: Submission.prompt("hello"), taskClass: "pinned", affinityKey: home))
            #expect(walkedPast["model"] != "primary")
            #expect(walkedPast["metadata"]?["passed_over"]?[0]?["model"] == "primary",
                    "\(String(describing: walkedPast["metadata"]))")
        }
    }

    /// A routing worker on the fake provider's catalog with a rule `pinned` over primary, secondary
    /// and big, hashed on the affinity key.
    static func withHashRuleWorker(_ body: (QueueStore, FakeProviderServer) async throws -> Void) async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                let pinned = #""pinned": {"primary": "primary", "fallback": ["secondary", "big"], "strategy": "hash"},"#
                let catalog = Self.catalog(server)
                    .replacingOccurrences(of: #""claude": {"primary""#, with: pinned + #""claude": {"primary""#)
                _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
                try await Self.withRoutingWorker(on: pool, environment: ["FAKE_KEY": Self.key]) {
                    try await body(QueueStore(pool: pool), server)
                }
            }
        }
    }

    @Test("primary answers 500: the job succeeds on the secondary, and the trail shows both")
    func serverErrorFallsBack() async throws {
        try await Self.withRoutingWorker { store, server, pool in
            try await server.script(["primary": ["kind": "server_error"]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "succeeded")
            #expect(result["model"] == "secondary")
            #expect(result["tier"] == "secondary")
            let trail = Self.trail(result)
            #expect(trail.map(\.model) == ["primary", "secondary"])
            #expect(trail.map(\.outcome) == ["error", "succeeded"])
            #expect(result["attempts"]?[0]?["http_status"] == 500)
            #expect(result["response"]?["object"] == "chat.completion")
            #expect(result["cost"]?.doubleValue ?? -1 > 0)
            // The 500 says nothing about the primary's speed: no latency for lowest_latency to read
            // (a model failing at once read as the fastest).
            try await waitUntil("both calls are reported") {
                try await pool.query("SELECT count(*) FROM switchyard.model_health WHERE total_requests > 0").scalar(Int.self) == 2
            }
            let ewma = try await pool.query(
                "SELECT model, latency_ewma_ms FROM switchyard.model_health ORDER BY model"
            ).map { (try $0.decode("model", as: String.self), try $0.decode("latency_ewma_ms", as: Double?.self)) }
            #expect(ewma.first { $0.0 == "primary" }?.1 == nil, "\(ewma)")
            #expect(ewma.first { $0.0 == "secondary" }?.1 != nil, "\(ewma)")
        }
    }

    @Test("429 with retry-after: the same model is called again after the wait")
    func rateLimitHonoursRetryAfter() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            try await server.script(["primary": [["kind": "rate_limited", "retry_after_ms": "300"], ["kind": "ok"]]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "succeeded")
            #expect(result["model"] == "primary")
            #expect(Self.trail(result).map(\.outcome) == ["rate_limited", "succeeded"])
            #expect(try await server.count(for: "primary") == 2)
            #expect(try await server.count(for: "secondary") == 0)
            // The 429 is no failure of the model's: its breaker counts the answer alone.
            try await waitUntil("the worker has reported the model's calls") {
                try await store.pool.query(
                    "SELECT coalesce(max(total_requests), 0) FROM switchyard.model_health WHERE model = 'primary'"
                ).scalar(Int.self) >= 1
            }
            let health = try #require(try await store.pool.query(
                "SELECT total_requests, total_failures FROM switchyard.model_health WHERE model = 'primary'").first)
            #expect(try health.decode("total_requests", as: Int.self) == 1)
            #expect(try health.decode("total_failures", as: Int.self) == 0)
        }
    }

    @Test("a bare 429 (no wait asked, none set) counts against the model's breaker: nothing else would slow it")
    func bareRateLimitCounts() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            try await server.script(["primary": ["kind": "rate_limited"]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["model"] == "secondary")
            try await waitUntil("the worker has reported the model's calls") {
                try await store.pool.query(
                    "SELECT coalesce(max(total_failures), 0) FROM switchyard.model_health WHERE model = 'primary'"
                ).scalar(Int.self) >= 1
            }
        }
    }

    @Test("429 asking for longer than the plan's attempts may take: the next model at once, not a wait")
    func longRetryAfterFallsBack() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            // No deadline: the wait is held to what the plan's remaining attempts may take.
            try await server.script(["primary": ["kind": "rate_limited", "retry_after": "20"]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "succeeded")
            #expect(result["model"] == "secondary")
            #expect(Self.trail(result).map(\.outcome) == ["rate_limited", "succeeded"])
            #expect(try await server.count(for: "primary") == 1)
            // The provider asked for 20 s: the next job is not sent to it before then.
            let next = try await Self.submitAndWait(store, Self.chat())
            #expect(next["model"] == "secondary")
            #expect(Self.trail(next).map(\.outcome) == ["succeeded"])
            #expect(try await server.count(for: "primary") == 1)
            // And says why its rule's primary was not called (a walkthrough's said nothing).
            let passedOver = next["metadata"]?["passed_over"]?[0]
            #expect(passedOver?["model"] == "primary", "\(String(describing: next["metadata"]))")
            #expect(passedOver?["reason"]?.stringValue?.hasPrefix("paused by its provider until ") == true,
                    "\(String(describing: passedOver))")
        }
    }

    @Test("429 on the plan's last model: it waits the retry-after (past its own timeout), there is no other")
    func lastModelWaits() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            try await server.script(["claude-test": [["kind": "rate_limited", "retry_after": "2"], ["kind": "ok"]]])
            let result = try await Self.submitAndWait(store, Submission(request: Submission.prompt("hi"), taskClass: "claude"))
            #expect(result["status"] == "succeeded")
            #expect(Self.trail(result).map(\.outcome) == ["rate_limited", "succeeded"])
        }
    }

    /// A soak's models paused a second at a time by 429s put 40,000 jobs back 156,530 times.
    @Test("a job whose every model is paused for a moment waits in its slot, not put back")
    func shortPauseHeldInSlot() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            try await server.script(["claude-test": [["kind": "rate_limited", "retry_after": "1"], ["kind": "ok"], ["kind": "ok"]]])
            let first = try await store.submit(Submission(request: Submission.prompt("hi"), taskClass: "claude"))
            try await waitUntil("the first job has met the 429") { try await server.count(for: "claude-test") == 1 }
            let second = try await store.submit(Submission(request: Submission.prompt("hi"), taskClass: "claude"))
            var statuses: Set<String> = []
            try await waitUntil("both have succeeded", every: .milliseconds(20)) {
                let now = try await store.statuses(of: [first, second])
                if let status = now[second] { statuses.insert(status) }
                return now.values.allSatisfy { $0 == "succeeded" } && now.count == 2
            }
            #expect(!statuses.contains("scheduled"), "\(statuses)")
            let result = try #require(try await store.result(of: second))
            #expect(Self.trail(result).map(\.outcome) == ["succeeded"])
        }
    }

    @Test("a pause longer than an interactive job may wait is an outage: the job stops waiting after its minute")
    func longPauseIsAnOutage() async throws {
        try await Self.withRoutingWorker { store, server, pool in
            // The provider asks for ten minutes: the worker pauses the model for them.
            try await server.script(["claude-test": ["kind": "rate_limited", "retry_after": "600"]])
            let first = try await store.submit(Submission(request: Submission.prompt("hi"), taskClass: "claude"))
            try await waitUntil("the first job has met the 429") { try await server.count(for: "claude-test") == 1 }
            try await waitUntil("the first job is back in the queue") { try await store.status(of: first) == "scheduled" }
            // A job whose person has waited two minutes already: no putting back for ten more.
            let second = try await store.submit(
                Submission(request: Submission.prompt("hi"), taskClass: "claude", runAt: Date().addingTimeInterval(3600)))
            try await pool.query(
                """
                UPDATE switchyard.jobs SET created_at = now() - interval '2 minutes', run_at = now() - interval '2 minutes'
                WHERE id = $1
                """, [second])
            try await waitUntil("the second job's attempt is spent") {
                try await pool.query("SELECT attempt FROM switchyard.jobs WHERE id = $1 AND lease_owner IS NULL", [second])
                    .first.map { try $0.decode("attempt", as: Int.self) } == 1
            }
            #expect(try await server.count(for: "claude-test") == 1)
        }
    }

    @Test("a primary slower than its latency target times out, and the job falls back")
    func slowPrimaryTimesOut() async throws {
        try await Self.withRoutingWorker(primaryLatencyMS: 300) { store, server, _ in
            try await server.script(["primary": ["kind": "ok", "delay_ms": 3000]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "succeeded")
            #expect(result["model"] == "secondary")
            #expect(Self.trail(result).map(\.outcome) == ["timeout", "succeeded"])
            // The rule's max_latency_ms is the primary call's target, and the trail says so (the
            // latency alert judges the call by it); the secondary's is its tier's.
            #expect(result["attempts"]?[0]?["target_ms"] == 300)
            #expect(result["attempts"]?[1]?["target_ms"] == nil)
        }
    }

    /// The deadline cuts the call: 8 s against a tier timeout of 20 s gave the model under half its
    /// time (not counted); 14 s against 16 s, most of it (counted: a model that hangs on every call
    /// of jobs with such deadlines must still meet its breaker). Each with seconds to spare for a
    /// late claim on a loaded machine.
    @Test("a call cut short by the job's deadline is no failure of the model's, unless it had most of its time",
          arguments: [(20_000, 8.0, false), (16_000, 14.0, true)])
    func deadlineCutIsNotTheModels(tierMS: Int, deadline: TimeInterval, counted: Bool) async throws {
        try await Self.withRoutingWorker(primaryLatencyMS: tierMS) { store, server, pool in
            try await server.script(["primary": [["kind": "ok"], ["kind": "ok", "delay_ms": 30_000], ["kind": "ok"]]])
            // A first job, so the worker is claiming by the time the hurried one is submitted (a
            // worker still starting on a loaded machine claimed it 6 s late, its budget then under
            // half the tier's).
            #expect(try await Self.submitAndWait(store, Self.chat())["model"] == "primary")
            var hurried = Self.chat()
            hurried.deadline = Date().addingTimeInterval(deadline)
            let id = try await store.submit(hurried)
            try await waitUntil("the cut job has ended") { try await store.result(of: id) != nil }
            let cut = try #require(try await store.result(of: id))
            #expect(cut["status"] == "failed")
            // Not given its time, the call is the deadline's, not a timeout of the model's: status and
            // the alerts count timeouts against the model (an on-call walkthrough's clients with short
            // deadlines showed healthy models at 3–6% timeouts).
            #expect(Self.trail(cut).map(\.outcome) == [counted ? "timeout" : "deadline"], "\(cut["attempts"]?.jsonText ?? "")")
            // And the error says the deadline cut it (it read "every model in the plan failed (primary);
            // last: timed_out", a walkthrough's one model said to have timed out).
            #expect(cut["error"]?["code"] == "deadline_passed")
            if !counted {
                #expect(cut["error"]?["message"]?.stringValue?.contains("cut the call to primary short") == true,
                        "\(cut["error"]?.jsonText ?? "")")
            }
            let next = try await Self.submitAndWait(store, Self.chat())
            #expect(next["model"] == "primary")
            // Nor a call of the model's at all: the first job's and the last one's are (a deadline's
            // cut counted among its calls lowered its error and timeout rates).
            let row = try #require(try await pool.query(
                "SELECT calls, timeouts FROM switchyard.call_stats('1 hour') WHERE dimension = 'model' AND subject = 'primary'"
            ).first)
            #expect(try row.decode("calls", as: Int.self) == (counted ? 3 : 2))
            #expect(try row.decode("timeouts", as: Int.self) == (counted ? 1 : 0))
            try await waitUntil("the primary's two answers are reported") {
                try await pool.query(
                    "SELECT coalesce(max(total_requests - total_failures), 0) FROM switchyard.model_health WHERE model = 'primary'"
                ).scalar(Int.self) >= 2
            }
            let failures = try await pool.query(
                "SELECT total_failures FROM switchyard.model_health WHERE model = 'primary'"
            ).scalar(Int.self)
            #expect(failures == (counted ? 1 : 0))
        }
    }

    @Test("a context-length error moves the job to a model with a larger context window")
    func contextLengthMovesToLargerModel() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            try await server.script(["primary": ["kind": "context_length"], "secondary": ["kind": "context_length"]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "succeeded")
            #expect(result["model"] == "big")
            // The secondary has the same small window: it is skipped, not tried.
            #expect(Self.trail(result).map(\.model) == ["primary", "big"])
            #expect(try await server.count(for: "secondary") == 0)
        }
    }

    @Test("a 400 fails the job without falling back: the request is at fault")
    func badRequestFailsWithoutFallback() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            try await server.script(["primary": ["kind": "bad_request", "message": "temperature must be <= 2"]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "failed")
            #expect(result["error"]?["code"] == "bad_request")
            #expect(result["error"]?["message"]?.stringValue?.contains("temperature must be <= 2") == true)
            #expect(try await server.count(for: "secondary") == 0)
            #expect(try await server.count(for: "big") == 0)
        }
    }

    /// A walkthrough's OpenRouter 402 failed the job as bad_request; an Anthropic 400 "credit
    /// balance is too low" fell back, but status showed the model at 0% errors beside its open breaker.
    @Test("an account out of credit (a 402, or a 400 that says so) falls back, and counts as the model's error")
    func outOfCreditFallsBackAndCounts() async throws {
        try await Self.withRoutingWorker { store, server, pool in
            try await server.script([
                "primary": [
                    "kind": "quota", "status": 402, "type": nil, "code": 402,
                    "message": "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
                ]
            ])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "succeeded")
            #expect(result["model"] == "secondary")
            #expect(Self.trail(result).map(\.outcome) == ["quota_exhausted", "succeeded"])
            #expect(result["attempts"]?[0]?["http_status"] == 402)
            let errors = try await pool.query(
                "SELECT count(*) FILTER (WHERE model_error) FROM switchyard.calls WHERE model = 'primary'").scalar(Int.self)
            #expect(errors == 1)
            // Said with a 400, as Anthropic says it: the model's error too (a request's 400 is not).
            #expect(try await pool.query(
                "SELECT switchyard.is_model_error('quota_exhausted', 400) AND NOT switchyard.is_model_error('error', 400)"
            ).scalar(Bool.self))
            // Its breaker is open now: the next job goes to secondary, and says why primary was not tried
            // (the model that answered read as the rule's primary, and only status told of the breaker).
            let next = try await Self.submitAndWait(store, Self.chat())
            #expect(next["model"] == "secondary")
            #expect(Self.trail(next).map(\.model) == ["secondary"])
            #expect(next["metadata"]?["passed_over"] == [
                ["model": "primary", "reason": "its breaker is open (or a probe of it is in flight)"],
            ], "\(String(describing: next["metadata"]))")
            // A job that fails says so too (a soak's failures read "every model in the plan failed
            // (soak-c)" with nothing on the two passed over), and names its rule.
            try await server.script(["secondary": ["kind": "server_error"], "big": ["kind": "server_error"]])
            var once = Self.chat()
            once.maxAttempts = 1
            let failed = try await Self.submitAndWait(store, once)
            #expect(failed["status"] == "failed")
            #expect(failed["metadata"]?["rule"] == "chat")
            #expect(failed["metadata"]?["passed_over"]?[0]?["model"] == "primary", "\(String(describing: failed["metadata"]))")
        }
    }

    /// A review's fleet with one worker on a stale key lost the model for every worker, and status
    /// named no worker.
    @Test("a refused key opens the model's breaker with the name of the worker whose key it was")
    func refusedKeyNamesTheWorker() async throws {
        try await Self.withRoutingWorker { store, server, pool in
            try await server.script(["primary": ["kind": "unauthorized"]])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["model"] == "secondary")
            #expect(Self.trail(result).map(\.outcome) == ["refused", "succeeded"])
            let worker = try #require(result["attempts"]?[0]?["worker"]?.stringValue)
            // Not the model's error: one worker's refusals raised the error-rate alert, which opened
            // the breaker for every worker.
            #expect(try await pool.query("SELECT count(*) FROM switchyard.calls WHERE model = 'primary' AND model_error")
                .scalar(Int.self) == 0)
            try await waitUntil("the fleet has the breaker open") {
                try await pool.query("SELECT count(*) FROM switchyard.fleet_health WHERE model = 'primary' AND state = 'open'")
                    .scalar(Int.self) == 1
            }
            let reason = try await pool.query("SELECT reason FROM switchyard.fleet_health WHERE model = 'primary'")
                .scalar(String.self)
            #expect(reason.hasPrefix("worker \(worker)'s key was refused: HTTP 401 unauthorized"), "\(reason)")
        }
    }

    @Test("a 400 only this model gives (unsupported_parameter, as o1 answers max_tokens): the next model answers")
    func unsupportedParameterFallsBack() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            try await server.script([
                "primary": [
                    "kind": "bad_request", "code": "unsupported_parameter",
                    "message": .string(
                        "Unsupported parameter: 'max_tokens' is not supported with this model. "
                            + "Use 'max_completion_tokens' instead."),
                ]
            ])
            let result = try await Self.submitAndWait(store, Self.chat())
            #expect(result["status"] == "succeeded")
            #expect(result["model"] == "secondary")
            #expect(Self.trail(result).map(\.model) == ["primary", "secondary"])
            #expect(result["attempts"]?[0]?["error"]?.stringValue?.contains("unsupported_request") == true)
            // Not the model's error in the statistics and alerts either.
            #expect(Self.trail(result).map(\.outcome) == ["unsupported", "succeeded"])
            // More such requests than the breaker's failures in a row (5): the model is not broken, the
            // requests are, so its breaker stays closed and it is still tried for each.
            for _ in 0..<6 {
                #expect(try await Self.submitAndWait(store, Self.chat())["model"] == "secondary")
            }
            #expect(try await server.count(for: "primary") == 7)
        }
    }

    @Test("a request no model of its plan can take (n = 2, Anthropic only) fails at once, not retried")
    func unsupportedEverywhereFails() async throws {
        try await Self.withRoutingWorker { store, server, pool in
            // What the router can read from the request: the Anthropic model is left out of the
            // plan (route --explain planned it, and the worker spent an attempt to refuse it).
            var submission = Submission(request: Submission.prompt("hi"), taskClass: "claude")
            submission.request["n"] = 2
            let planned = try await Self.submitAndWait(store, submission)
            #expect(planned["status"] == "failed")
            // Other models of the catalog would take it: the rule's fault (adding one fixes it), so
            // `unroutable`, which the job-failure alert counts; with none, `unsupported_request`.
            #expect(planned["error"]?["code"] == "unroutable")
            #expect(planned["error"]?["message"]?.stringValue?.contains("Anthropic models have no equivalent of n = 2") == true,
                    "\(planned)")
            #expect(planned["attempt_count"] == 1, "a retry would meet the same refusal")
            // What only the translation finds (a tool call's arguments that are no JSON object):
            // refused at the call, as before.
            let history: JSONValue = [
                "messages": [
                    ["role": "user", "content": "weather?"],
                    ["role": "assistant", "content": nil,
                     "tool_calls": [["id": "c1", "type": "function", "function": ["name": "f", "arguments": "[1,2]"]]]],
                    ["role": "tool", "tool_call_id": "c1", "content": "sunny"],
                ]
            ]
            let result = try await Self.submitAndWait(store, Submission(request: history, taskClass: "claude"))
            #expect(result["status"] == "failed")
            #expect(result["error"]?["code"] == "unsupported_request")
            #expect(result["attempt_count"] == 1, "a retry would meet the same refusal")
            #expect(Self.trail(result).map(\.outcome) == ["unsupported"])
            #expect(try await server.count(for: "claude-test") == 0, "refused before it was sent")
            let errors = try await pool.query(
                "SELECT count(*) FROM switchyard.calls WHERE model = 'claude' AND model_error").scalar(Int.self)
            #expect(errors == 0)
        }
    }

    @Test("an Anthropic model: the request goes out as a Messages call and comes back OpenAI-shaped")
    func anthropicExchange() async throws {
        try await Self.withRoutingWorker { store, server, _ in
            let request: JSONValue = [
                "messages": [["role": "system", "content": "Be brief."], ["role": "user", "content": "Name a colour."]],
                "max_tokens": 50,
            ]
            let result = try await Self.submitAndWait(store, Submission(request: request, taskClass: "claude"))
            #expect(result["status"] == "succeeded")
            #expect(result["provider"] == "anthropic")
            #expect(result["response"]?["choices"]?[0]?["message"]?["role"] == "assistant")
            #expect(result["response"]?["usage"]?["prompt_tokens"]?.intValue != nil)
            let sent = try #require(try await server.requests(for: "claude-test").first)
            #expect(sent["path"]?.stringValue?.hasSuffix("/v1/messages") == true)
            #expect(sent["body"]?["system"] == "Be brief.")
            #expect(sent["body"]?["max_tokens"] == 50)
            #expect(sent["headers"]?["x-api-key"] == .string(Self.key))
            // The key is used, never stored.
            #expect(!result.jsonText.contains(Self.key))
        }
    }

    @Test("a model failing under one worker process is avoided by another worker process")
    func breakerIsSharedAcrossProcesses() async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigrated { configuration in
                let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
                defer { Task { await pool.close() } }
                _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog(server).utf8))
                try await server.script(["primary": ["kind": "server_error"]])
                let store = QueueStore(pool: pool)
                let environment = ["FAKE_KEY": Self.key]

                // Worker A meets the failing primary until its breaker opens (5 failures in a row).
                let first = try WorkerProcess.start(configuration, id: "breaker-a", environment: environment)
                let firstJobs = try await store.submit(batch: (0..<8).map { _ in Self.chat() })
                try await Self.waitForResults(store, firstJobs)
                // Its outcomes reach the shared breaker within a report interval.
                try await waitUntil("the shared breaker is open") {
                    try await pool.query("SELECT state FROM switchyard.fleet_health WHERE model = 'primary'")
                        .scalar(String?.self) == "open"
                }
                let callsBefore = try await server.count(for: "primary")
                first.terminate()
                _ = await first.wait()

                // Worker B, a fresh process, never calls the primary: it goes straight to the secondary.
                let second = try WorkerProcess.start(configuration, id: "breaker-b", environment: environment)
                let secondJobs = try await store.submit(batch: (0..<8).map { _ in Self.chat() })
                try await Self.waitForResults(store, secondJobs)
                second.terminate()
                _ = await second.wait()
                #expect(try await server.count(for: "primary") == callsBefore)
                for id in secondJobs {
                    let result = try #require(try await store.result(of: id))
                    #expect(result["model"] == "secondary")
                    #expect(result["tier"] == "primary")
                }
            }
        }
    }

    @Test("a worker missing every model's key leaves even its first job for a worker that has them, attempt not spent")
    func noKeyAtAllWaits() async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog(server).utf8))
                let store = QueueStore(pool: pool)
                var chat = Self.chat()
                chat.maxAttempts = 1
                let id = try await store.submit(chat)
                try await Self.withRoutingWorker(on: pool, environment: [:]) {
                    try await waitUntil("the job is put back to wait") {
                        try await store.status(of: id) == "scheduled"
                    }
                    // For five seconds, not the quarter second of a refusal: no worker may have the
                    // keys (with them missing everywhere, a review's jobs went back every second).
                    #expect(try await pool.query(
                        "SELECT run_at > now() + interval '2 seconds' FROM switchyard.jobs WHERE id = $1", [id]
                    ).scalar(Bool.self))
                }
                #expect(try await store.result(of: id) == nil)
                let attempt = try await pool.query("SELECT attempt FROM switchyard.jobs WHERE id = $1", [id])
                    .scalar(Int.self)
                #expect(attempt == 0)
                #expect(try await server.count(for: "primary") == 0)
            }
        }
    }

    @Test("a key missing from one worker's environment: it skips the model, others keep it, the breaker stays closed")
    func missingKeyStaysWithItsWorker() async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                _ = try await CatalogStore(pool: pool).importDocument(
                    Data(Self.catalog(server, primaryKeyVariable: "PRIMARY_KEY").utf8))
                let store = QueueStore(pool: pool)

                // This worker has no PRIMARY_KEY: it skips the primary from its first job (which
                // recorded a failed attempt on it, and a fallback, before).
                let logs = LogCapture()
                try await Self.withRoutingWorker(
                    on: pool, environment: ["FAKE_KEY": Self.key], logger: logs.logger(level: .warning)
                ) {
                    for _ in 0..<4 {
                        let next = try await Self.submitAndWait(store, Self.chat())
                        #expect(next["model"] == "secondary")
                        #expect(Self.trail(next).map(\.model) == ["secondary"])
                    }
                    // Status says so (only the worker's log did): its row notes the model, with why.
                    try await waitUntil("the worker has noted the model it skips") {
                        try await ObservabilityStore(pool: pool).workers().contains { !$0.skippedModels.isEmpty }
                    }
                    let worker = try #require(try await ObservabilityStore(pool: pool).workers().first)
                    #expect(worker.skippedModels.keys.sorted() == ["primary"])
                    #expect(worker.skippedModels["primary"]?.contains("PRIMARY_KEY") == true, "\(worker.skippedModels)")
                }
                // Said once, naming the variable; the worker's keys never appear.
                let skipped = logs.all.filter { $0.contains("model skipped by this worker") }
                #expect(skipped.count == 1, "\(logs.all)")
                #expect(skipped.first?.contains("PRIMARY_KEY") == true)
                #expect(!logs.all.joined().contains(Self.key))
                // Its reports have reached the fleet's breaker (a worker reports once more as it stops).
                let state = try await pool.query("SELECT state FROM switchyard.fleet_health WHERE model = 'primary'")
                    .scalar(String?.self)
                #expect(state != "open")
                // Nor does it count as the model's error in the fleet's error rate (its alert can
                // open the breaker for every worker).
                #expect(try await pool.query("SELECT count(*) FROM switchyard.calls WHERE model = 'primary' AND model_error")
                    .scalar(Int.self) == 0)

                // A worker that has the key calls the primary as usual.
                let bothKeys = ["FAKE_KEY": Self.key, "PRIMARY_KEY": Self.key]
                try await Self.withRoutingWorker(on: pool, environment: bothKeys) {
                    let result = try await Self.submitAndWait(store, Self.chat())
                    #expect(result["model"] == "primary")
                    #expect(Self.trail(result).map(\.model) == ["primary"])
                }
                #expect(try await server.count(for: "primary") == 1)
            }
        }
    }

    static func waitForResults(_ store: QueueStore, _ ids: [Int64]) async throws {
        for _ in 0..<1500 {
            let statuses = try await store.statuses(of: ids)
            if statuses.values.allSatisfy({ JobWaiterStatuses.final.contains($0) }) && statuses.count == ids.count {
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw QueueError(.timedOut, "jobs did not finish")
    }
}

enum JobWaiterStatuses {
    static let final: Set<String> = ["succeeded", "failed", "cancelled", "expired"]
}
