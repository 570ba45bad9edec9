import Foundation
import Postgres
import QueueModel
import Testing

/// The write-back's two forms: the worker's binary arrays and the JSON items SQL callers send.
/// Both go through one function; the rows they store must be the same.
@Suite("Write-back: binary arrays and JSON items store the same rows")
struct WriteBackArraysTests {
    static let hello: JSONValue = ["messages": [["role": "user", "content": "hi"]]]
    /// Strings that exercise both paths of the string writer (copied whole, escaped) and NUL.
    static let strings = [
        "", "plain", "quote \" inside", "back\\slash", "new\nline", "tab\t", "bell \u{7}", "nul \u{0} byte",
        "Grüße 世界 😀", "\u{1F}", "ends with quote\"", "{\"a\":1}", "NULL",
    ]

    /// Every kind of outcome, with every optional field set or not.
    static func outcomes(for jobs: [Job]) -> [Completion] {
        let at = Date(timeIntervalSince1970: 1_795_745_131.597805)
        return jobs.enumerated().map { index, job in
            let text = strings[index % strings.count]
            let trail = [
                AttemptRecord(attempt: job.attempt, model: "m", provider: "simulated", tier: "primary", outcome: "error",
                              httpStatus: 500, latencyMS: 12.3456789, error: text, worker: "w", at: at),
                AttemptRecord(attempt: job.attempt, outcome: "succeeded", at: at),
            ]
            switch index % 5 {
            case 0, 1:
                return Completion(
                    jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded",
                    taskClass: index % 2 == 0 ? text : nil, model: "m", provider: "simulated", tier: "primary",
                    response: [
                        "id": .string("chatcmpl-\(index)"), "object": "chat.completion", "z": nil, "a": true,
                        "choices": [["message": ["role": "assistant", "content": .string(text)]]],
                        "usage": ["prompt_tokens": 6, "completion_tokens": 2],
                    ],
                    trail: trail, tokensIn: 6, tokensOut: index, cost: Decimal(string: "0.0000012"),
                    baseCost: Decimal(string: index % 2 == 0 ? "0.0000012" : "0.0000024"),
                    primaryCost: Decimal(string: "0.5"), latencyMS: 1.5 * Double(index),
                    metadata: index % 2 == 0 ? ["rule": .string(text), "n": 3] : [:]
                )
            case 2:
                return Completion(
                    jobID: job.id, attempt: job.attempt, kind: .result, status: "failed",
                    error: ["code": "provider_error", "message": .string(text)], trail: trail)
            case 3:
                return Completion(
                    jobID: job.id, attempt: job.attempt, kind: .retry, error: ["code": "x", "message": .string(text)],
                    trail: trail, retryAt: at.addingTimeInterval(Double(index)))
            default:
                let kind = [Completion.Kind.release, .postpone, .wait][index % 3]
                return Completion(jobID: job.id, attempt: job.attempt, kind: kind, retryAt: kind == .release ? nil : at)
            }
        }
    }

    /// The outcomes as the JSON items `switchyard.complete(worker, items)` takes.
    static func items(_ outcomes: [Completion]) -> JSONValue {
        .array(outcomes.map { completion in
            var item: [String: JSONValue] = [
                "id": .number(Double(completion.jobID)), "attempt": .number(Double(completion.attempt)),
                "kind": .string(completion.kind.rawValue),
                "trail": .array(completion.trail.map { record in
                    var entry: [String: JSONValue] = [
                        "attempt": .number(Double(record.attempt)), "outcome": .string(record.outcome),
                        "at": .string(record.at.postgresText),
                    ]
                    if let model = record.model { entry["model"] = .string(model) }
                    if let provider = record.provider { entry["provider"] = .string(provider) }
                    if let tier = record.tier { entry["tier"] = .string(tier) }
                    if let status = record.httpStatus { entry["http_status"] = .number(Double(status)) }
                    if let latency = record.latencyMS { entry["latency_ms"] = .number((latency * 1000).rounded() / 1000) }
                    if let error = record.error { entry["error"] = .string(error) }
                    if let worker = record.worker { entry["worker"] = .string(worker) }
                    return .object(entry)
                }),
            ]
            if let value = completion.status { item["status"] = .string(value) }
            if let value = completion.taskClass { item["task_class"] = .string(value) }
            if let value = completion.model { item["model"] = .string(value) }
            if let value = completion.provider { item["provider"] = .string(value) }
            if let value = completion.tier { item["tier"] = .string(value) }
            if let value = completion.response { item["response"] = value }
            if let value = completion.error { item["error"] = value }
            if let value = completion.tokensIn { item["tokens_in"] = .number(Double(value)) }
            if let value = completion.tokensOut { item["tokens_out"] = .number(Double(value)) }
            if let value = completion.cost { item["cost"] = .string(value.description) }
            if let value = completion.baseCost { item["base_cost"] = .string(value.description) }
            if let value = completion.primaryCost { item["primary_cost"] = .string(value.description) }
            if let value = completion.latencyMS { item["latency_ms"] = .number(value) }
            if !completion.metadata.isEmpty { item["metadata"] = .object(completion.metadata) }
            if let value = completion.retryAt { item["retry_at"] = .string(value.postgresText) }
            if let value = completion.policy { item["policy"] = .string(value) }
            return .object(item)
        })
    }

    /// Submits, claims and writes back 60 jobs one way; returns what each job became.
    static func writeBack(binary: Bool) async throws -> [String] {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            for _ in 0..<60 { _ = try await store.submit(Submission(request: Self.hello)) }
            let jobs = try await store.claim(worker: "w", freeSlots: 60, backgroundSlots: 0, lease: .seconds(30))
            #expect(jobs.count == 60)
            let outcomes = Self.outcomes(for: jobs)
            let written: Set<Int64>
            if binary {
                written = Set(try await store.complete(worker: "w", outcomes).keys)
            } else {
                written = Set(try await pool.query(
                    "SELECT job_id FROM switchyard.complete('w', $1::jsonb)",
                    // jsonb refuses \u0000: the worker writes U+FFFD; so does this caller.
                    [Self.items(outcomes).jsonText.replacingOccurrences(of: "\\u0000", with: "\u{FFFD}")]
                ).map { try $0[0].decode(Int64.self) })
            }
            #expect(written == Set(jobs.map(\.id)))
            // Ids relative to the first, so the two databases compare.
            let first = jobs.map(\.id).min()!
            let results = try await pool.query(
                """
                SELECT (job_id - $1) || ' ' || to_jsonb(r) - 'job_id' - 'created_at' - 'started_at' - 'finished_at'
                       - 'queue_wait_ms' - 'request'
                FROM switchyard.results r ORDER BY job_id
                """, [first]
            ).map { try $0[0].decode(String.self) }
            let queued = try await pool.query(
                """
                SELECT (id - $1) || ' ' || jsonb_build_object('attempt', attempt, 'attempts', attempts,
                    'run_at', CASE WHEN run_at = created_at THEN 'as submitted' ELSE run_at::text END,
                                                               'lease_owner', lease_owner)
                FROM switchyard.jobs ORDER BY id
                """, [first]
            ).map { try $0[0].decode(String.self) }
            return results + queued
        }
    }

    @Test("60 outcomes of every kind (results, failures, retries, releases, postponements; NUL, quotes, unicode)")
    func sameRows() async throws {
        let binary = try await Self.writeBack(binary: true)
        let items = try await Self.writeBack(binary: false)
        #expect(binary.count == 60)
        #expect(binary == items)
        // Spot checks that the rows hold what was sent.
        #expect(binary[0].contains(#""cost": 0.0000012"#) && binary[0].contains(#""primary_cost": 0.5"#))
        #expect(binary.contains { $0.contains("as submitted") } && binary.contains { $0.contains("2026-11-27 02:05:34.597805") })
        #expect(binary.contains { $0.contains("nul \u{FFFD} byte") })
        #expect(!binary.joined().contains("\\u0000"))
    }

    @Test("the array form of the release before (no p_policies) still writes back: workers not yet restarted keep working")
    func previousForm() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            for _ in 0..<2 { _ = try await store.submit(Submission(request: Self.hello)) }
            let jobs = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 0, lease: .seconds(30))
            #expect(jobs.count == 2)
            // As a worker built before 0020 sends it: twenty arrays after the worker's id.
            let written = try await pool.query(
                """
                SELECT job_id, kind FROM switchyard.complete('w', ARRAY[$1, $2]::bigint[], ARRAY[$3, $4]::integer[],
                    ARRAY['result', 'postpone'], ARRAY['succeeded', NULL], ARRAY[NULL, NULL]::text[],
                    ARRAY[NULL, NULL]::text[], ARRAY[NULL, NULL]::text[], ARRAY[NULL, NULL]::text[],
                    ARRAY[NULL, NULL]::jsonb[], ARRAY[NULL, NULL]::jsonb[], ARRAY['[]', '[]']::jsonb[],
                    ARRAY[NULL, NULL]::integer[], ARRAY[NULL, NULL]::integer[], ARRAY[NULL, NULL]::numeric[],
                    ARRAY[NULL, NULL]::numeric[], ARRAY[NULL, NULL]::numeric[], ARRAY[NULL, NULL]::float8[],
                    ARRAY[NULL, NULL]::jsonb[], ARRAY[NULL, now() + interval '1 hour']::timestamptz[])
                """,
                [jobs[0].id, jobs[1].id, jobs[0].attempt, jobs[1].attempt]
            ).map { try $0[1].decode(String.self) }
            #expect(written.sorted() == ["postpone", "result"])
            #expect(try await store.status(of: jobs[0].id) == "succeeded")
            #expect(try await store.status(of: jobs[1].id) == "scheduled")
        }
    }

    @Test("a wait for a model keeps when it began (a background job's from its first, afresh after sitting due); a price's postponement does not")
    func waitingSince() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, priority: .background))
            try await pool.query("UPDATE switchyard.jobs SET created_at = now() - interval '3 hours'")
            @Sendable func putBack(_ kind: Completion.Kind) async throws -> Date? {
                let job = try #require(
                    try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 1, lease: .seconds(30)).first)
                let back = Completion(jobID: id, attempt: job.attempt, kind: kind, retryAt: Date().addingTimeInterval(-1))
                #expect(try await store.complete(worker: "w", [back]) == [id: kind.rawValue])
                return try await pool.query("SELECT waiting_since FROM switchyard.jobs").scalar(Date?.self)
            }
            let first = try #require(try await putBack(.wait))
            #expect(abs(first.timeIntervalSinceNow) < 60)  // not its creation, three hours ago
            #expect(try await putBack(.wait) == first)
            // Sat due for five minutes (behind a backlog): the same wait; for twenty (the gate was
            // closed): a new one.
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() - interval '5 minutes'")
            #expect(try await putBack(.wait) == first)
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() - interval '20 minutes'")
            #expect(try await putBack(.wait) != first)
            // Sent to a price window: no longer waiting for a model.
            #expect(try await putBack(.postpone) == nil)

            // An interactive job's wait counts from when it became due, through a `wait` and
            // through a `postpone` from a worker before 0040.
            try await pool.query("DELETE FROM switchyard.jobs")
            let interactive = try await store.submit(Submission(request: Self.hello))
            try await pool.query("UPDATE switchyard.jobs SET created_at = now() - interval '30 seconds', run_at = now() - interval '30 seconds'")
            for kind in [Completion.Kind.wait, .postpone] {
                let job = try #require(
                    try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
                let back = Completion(jobID: interactive, attempt: job.attempt, kind: kind, retryAt: Date().addingTimeInterval(-1))
                _ = try await store.complete(worker: "w", [back])
                let waited = try await pool.query("SELECT extract(epoch FROM now() - waiting_since)::float8 FROM switchyard.jobs")
                    .scalar(Double.self)
                #expect(waited >= 30 && waited < 90)
            }
        }
    }

    /// One job, submitted and claimed by worker `w`.
    static func claimedJob(_ pool: PostgresPool) async throws -> Job {
        let store = QueueStore(pool: pool)
        _ = try await store.submit(Submission(request: Self.hello))
        return try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
    }

    @Test("an unknown kind is refused, naming it, and the job stays with its worker")
    func unknownKind() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let job = try await Self.claimedJob(pool)
            let error = await #expect(throws: PostgresError.self) {
                try await pool.query(
                    "SELECT * FROM switchyard.complete('w', $1::jsonb)",
                    [JSONValue.array([["id": .number(Double(job.id)), "attempt": .number(Double(job.attempt)), "kind": "retried"]]).jsonText])
            }
            #expect(error?.message.contains("unknown kind 'retried'") == true)
            #expect(error?.hint?.contains("result, retry, release, postpone") == true)
            #expect(try await pool.query("SELECT lease_owner FROM switchyard.jobs").scalar(String?.self) == "w")
        }
    }

    @Test("arrays of different lengths are refused, not padded with NULLs")
    func unequalLengths() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let job = try await Self.claimedJob(pool)
            // One outcome, but no retry_at element: the retry would have run at once.
            let error = await #expect(throws: PostgresError.self) {
                try await pool.query(
                    """
                    SELECT * FROM switchyard.complete('w', ARRAY[$1::bigint], ARRAY[$2::integer], ARRAY['retry'],
                        ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text],
                        ARRAY[NULL::jsonb], ARRAY[NULL::jsonb], ARRAY['[]'::jsonb], ARRAY[NULL::integer],
                        ARRAY[NULL::integer], ARRAY[NULL::numeric], ARRAY[NULL::numeric], ARRAY[NULL::numeric],
                        ARRAY[NULL::float8], ARRAY[NULL::jsonb], ARRAY[]::timestamptz[], ARRAY[NULL::text])
                    """, [job.id, job.attempt])
            }
            #expect(error?.sqlState == SQLState("22023"))
            #expect(error?.message.contains("every array must have one element per job") == true)
            #expect(try await pool.query("SELECT lease_owner FROM switchyard.jobs").scalar(String?.self) == "w")
        }
    }
}
