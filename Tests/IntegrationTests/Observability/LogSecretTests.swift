import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// Invariant 4 in the logs: a job driven through the routing executor at trace level, with a
/// provider that echoes the API key back in its errors, leaves no trace of the key in any line;
/// every line about the job names the job, the model and the attempt; and the prompt and the
/// answer appear only at trace level.
@Suite("Logs: job context, no API key, no prompt above debug")
struct LogSecretTests {
    static let variable = "SWITCHYARD_LOG_SENTINEL_KEY"
    static let sentinel = "sk-swq7Xk2-log-sentinel-4d1e9b77c02a"
    static let prompt = "PROMPT-MARKER-7731 what is in the box?"

    @Test("a sentinel key never appears in any log line, and job lines carry job, model and attempt")
    func sentinelKeyNeverLogged() async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                let endpoint = "\"provider\": \"openai\", \"base_url\": \"\(server.openAIBaseURL)\", "
                    + "\"api_key_env\": \"\(Self.variable)\""
                let catalog = """
                    {
                      "models": {"leaky": {\(endpoint)}, "echoer": {\(endpoint)}, "answer": {\(endpoint)}},
                      "routing_rules": {"chat": {"primary": "leaky", "fallback": ["echoer", "answer"]}}
                    }
                    """
                _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
                let echo = "Incorrect API key provided: \(Self.sentinel). Authorization: Bearer \(Self.sentinel)"
                try await server.script([
                    "leaky": ["kind": "unauthorized", "message": .string(echo)],
                    "echoer": ["kind": "server_error", "message": .string(echo)],
                    "answer": ["kind": "ok", "content": "ANSWER-MARKER-5521 a cat"],
                ])

                let capture = LogCapture()
                let logger = capture.logger(level: .trace)
                let fleet = FleetState(pool: pool, logger: logger, environment: [Self.variable: Self.sentinel])
                await fleet.reload()
                let metrics = WorkerMetrics()
                let executor = RoutingExecutor(
                    fleet: fleet,
                    providers: ProviderFactory(concurrency: 2, environment: [Self.variable: Self.sentinel]),
                    worker: "log-test", logger: logger, metrics: metrics)

                let store = QueueStore(pool: pool)
                let id = try await store.submit(Submission(request: Submission.prompt(Self.prompt), taskClass: "chat"))
                let job = try #require(
                    try await store.claim(worker: "log-test", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
                        .first)
                let outcome = await executor.execute(job)
                guard case .succeeded(let answer) = outcome else {
                    Issue.record("expected the job to succeed on the third model, got \(outcome)")
                    return
                }
                #expect(answer.model == "answer")
                #expect(metrics.attempts.value(["leaky", "refused"]) == 1)
                #expect(metrics.attempts.value(["answer", "succeeded"]) == 1)

                let lines = capture.all
                #expect(lines.count >= 5)
                for line in lines {
                    #expect(!line.contains(Self.sentinel), "the key leaked: \(line)")
                    #expect(!line.contains("4d1e9b77c02a"), "part of the key leaked: \(line)")
                }
                // The provider's echo reached the log, redacted.
                #expect(lines.contains { $0.contains("model=leaky") && $0.contains("[REDACTED]") })

                for line in lines where line.contains("job=\(id)") {
                    #expect(line.contains(" attempt=1"), "no attempt: \(line)")
                    #expect(line.range(of: #" model=\S+"#, options: .regularExpression) != nil, "no model: \(line)")
                }
                let failures = lines.filter { $0.contains("msg=\"model call failed\"") }
                #expect(failures.count == 2)
                #expect(failures.allSatisfy { $0.contains("job=\(id)") && $0.contains("level=info") })
                // The status as the provider sent it (a number in JSON lines), never "none".
                #expect(failures.allSatisfy { !$0.contains("http_status=none") })
                #expect(failures.contains { $0.range(of: #" http_status=[0-9]{3} "#, options: .regularExpression) != nil })

                // The prompt and the answer: trace only.
                let private_ = lines.filter { $0.contains("PROMPT-MARKER-7731") || $0.contains("ANSWER-MARKER-5521") }
                #expect(private_.count == 2)
                #expect(private_.allSatisfy { $0.contains("level=trace") })

                // At the default level nothing private is written at all.
                let quiet = LogCapture()
                let infoExecutor = RoutingExecutor(
                    fleet: fleet,
                    providers: ProviderFactory(concurrency: 2, environment: [Self.variable: Self.sentinel]),
                    worker: "log-test", logger: quiet.logger(level: .info))
                try await server.script(["answer": ["kind": "ok", "content": "ANSWER-MARKER-5521 a dog"]])
                let second = try await store.submit(
                    Submission(request: Submission.prompt(Self.prompt), taskClass: "chat"))
                _ = second
                let another = try #require(
                    try await store.claim(worker: "log-test", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
                        .first)
                _ = await infoExecutor.execute(another)
                #expect(!quiet.all.isEmpty)
                #expect(quiet.all.allSatisfy { !$0.contains("MARKER") && !$0.contains(Self.sentinel) })
            }
        }
    }
}
