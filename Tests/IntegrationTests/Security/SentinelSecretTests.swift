import Foundation
import Postgres
import QueueModel
import Testing

/// Invariant 4 end to end: a sentinel API key, given to a real worker process through its
/// environment and echoed back by providers in every way they can (error messages, a 429, an
/// unreadable 200, a successful answer, both adapters), never appears in any column of any
/// table, in the worker's trace-level log, or in what `dispatcher result` prints.
@Suite("Security: a sentinel key never lands anywhere")
struct SentinelSecretTests {
    static let variable = "SWITCHYARD_E2E_SENTINEL_KEY"
    static let sentinel = "sk-swq7Xk2-e2e-sentinel-5a9c1f00d2e7"
    /// A tail of the key: a cut or partly masked copy must not appear either.
    static let fragment = "5a9c1f00d2e7"
    static let echo = "Incorrect API key provided: \(sentinel). Authorization: Bearer \(sentinel)"

    static func catalog(_ fake: FakeProviderServer) -> String {
        func model(_ provider: String) -> String {
            let base = provider == "openai" ? fake.openAIBaseURL : fake.anthropicBaseURL
            return #"{"provider": "\#(provider)", "base_url": "\#(base)", "api_key_env": "\#(variable)"}"#
        }
        return """
            {"models": {
                "echo-401": \(model("openai")), "echo-500": \(model("openai")), "echo-429": \(model("openai")),
                "echo-malformed": \(model("openai")), "echo-ok": \(model("openai")), "echo-400": \(model("openai")),
                "a-401": \(model("anthropic")), "a-ok": \(model("anthropic"))},
             "routing_rules": {
                "chain": {"primary": "echo-401", "fallback": ["echo-500", "echo-429", "echo-malformed", "echo-ok"]},
                "refused": {"primary": "echo-400"},
                "anthropic": {"primary": "a-401", "fallback": ["a-ok"]}}}
            """
    }

    @Test("the key is in no table, no log line and no printed result, whatever the providers echo")
    func sentinelNowhere() async throws {
        try await withFakeProviderServer { fake in
            let answer = "your key is \(Self.sentinel) (Bearer \(Self.sentinel))"
            try await fake.script([
                "echo-401": ["kind": "unauthorized", "message": .string(Self.echo)],
                "echo-500": ["kind": "server_error", "message": .string(Self.echo)],
                "echo-429": ["kind": "rate_limited", "retry_after_ms": 50, "message": .string(Self.echo)],
                "echo-malformed": ["status": 200, "body": .string("<html>\(Self.sentinel)</html>")],
                "echo-ok": ["kind": "ok", "content": .string(answer)],
                "echo-400": ["kind": "bad_request", "message": .string(Self.echo)],
                "a-401": ["kind": "unauthorized", "message": .string(Self.echo)],
                "a-ok": ["kind": "ok", "content": .string(answer)],
            ])
            try await TestDatabase.withMigrated { configuration in
                let pool = PostgresPool(configuration, options: .init(maxConnections: 4))
                defer { Task { await pool.close() } }
                _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog(fake).utf8))
                let store = QueueStore(pool: pool)
                var jobs: [Int64] = []
                for (taskClass, count) in [("chain", 3), ("refused", 2), ("anthropic", 2)] {
                    for index in 0..<count {
                        jobs.append(
                            try await store.submit(
                                Submission(request: Submission.prompt("\(taskClass) \(index)"), taskClass: taskClass)))
                    }
                }
                let worker = try WorkerProcess.start(
                    configuration, id: "sentinel-worker", arguments: ["--concurrency", "4", "--retry-base", "100ms"],
                    environment: [Self.variable: Self.sentinel, "SWITCHYARD_LOG_LEVEL": "trace"])
                let finished = try await PoisonJobTests.waitForResults(
                    pool, count: jobs.count, limit: .seconds(90), worker: worker)
                worker.terminate()
                let status = await worker.wait()
                #expect(finished == jobs.count, "worker log:\n\(worker.log.suffix(3000))")
                #expect(status == 0)
                let statuses = try await pool.query(
                    "SELECT task_class, status, count(*) FROM switchyard.results GROUP BY 1, 2 ORDER BY 1, 2"
                ).map {
                    "\(try $0[0].decode(String.self)) \(try $0[1].decode(String.self)) \(try $0[2].decode(Int.self))"
                }
                #expect(statuses == ["anthropic succeeded 2", "chain succeeded 3", "refused failed 2"])

                // The database: every column of every row of every table.
                #expect(try await SecurityFixtures.tablesMentioning(Self.sentinel, in: pool) == [:])
                #expect(try await SecurityFixtures.tablesMentioning(Self.fragment, in: pool) == [:])
                // The echo did reach the stored answers and trails — redacted.
                let redacted = try await SecurityFixtures.tablesMentioning("[REDACTED]", in: pool)
                #expect((redacted["switchyard.results"] ?? 0) >= 5, "\(redacted)")

                // The worker's log, at trace level (requests and responses included).
                let log = worker.log
                #expect(log.contains("model call failed"))
                #expect(!log.contains(Self.sentinel))
                #expect(!log.contains(Self.fragment))

                // What a user reads back.
                let binary = WorkerProcess.binary("dispatcher")
                let url = WorkerProcess.databaseURL(configuration)
                for id in jobs {
                    let (_, output) = try await BlockingWork.run {
                        try ChildProcess.run(binary, ["result", String(id), "--json", "--database-url", url])
                    }
                    #expect(output.contains("\"job_id\""), "\(output)")
                    #expect(!output.contains(Self.fragment), "job \(id): \(output)")
                }

                // Keys come from the environment only: a catalog that carries one is refused
                // without repeating it.
                let file = FileManager.default.temporaryDirectory.appending(
                    path: "switchyard-\(UUID().uuidString).json")
                defer { try? FileManager.default.removeItem(at: file) }
                try Data(#"{"models": {"leak": {"provider": "openai", "api_key": "\#(Self.sentinel)"}}}"#.utf8).write(
                    to: file)
                let (importStatus, importOutput) = try await BlockingWork.run {
                    try ChildProcess.run(binary, ["models", "import", file.path, "--database-url", url])
                }
                #expect(importStatus != 0)
                #expect(importOutput.contains("api_key_env"), "\(importOutput)")
                #expect(!importOutput.contains(Self.fragment), "\(importOutput)")
                #expect(try await SecurityFixtures.tablesMentioning(Self.fragment, in: pool) == [:])
            }
        }
    }
}
