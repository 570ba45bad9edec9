import Foundation
import Postgres
import QueueModel
import Synchronization
import Testing

@Suite("Queue SQL: submission, validation, fencing, cancellation, deadlines")
struct QueueSQLTests {
    static let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]

    @Test("the housekeeper's tenure: taken when free or run out, renewed by its holder, asked of by a read")
    func housekeeperTenure() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            #expect(try await store.keepHouse(worker: "a", tenure: .seconds(30)))
            #expect(try await store.keepHouse(worker: "a", tenure: .seconds(30)), "renewed")
            // Another asks while a's tenure is in force: no, without locking the row or using a
            // transaction id (every worker asks every round).
            let row = try #require(
                try await pool.query("SELECT switchyard.keep_house('b', 30) AS held, txid_current_if_assigned() AS txid").first)
            #expect(try row.decode("held", as: Bool.self) == false)
            #expect(try row.decode("txid", as: Int64?.self) == nil)
            // a stops (or its tenure runs out): b takes over.
            try await store.standDown(worker: "a")
            #expect(try await store.keepHouse(worker: "b", tenure: .seconds(30)))
            #expect(try await store.keepHouse(worker: "a", tenure: .seconds(30)) == false)
        }
    }

    /// A security review's worker-role session leased jobs and took the housekeeper's tenure
    /// until 2058: rotating the worker password freed neither.
    @Test("a lease and the housekeeper's tenure last at most an hour, however long the worker role asks")
    func boundedLeases() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "rogue", freeSlots: 1, backgroundSlots: 0, lease: .seconds(1e9)).first)
            func leaseLeft() async throws -> Double {
                try await pool.query(
                    "SELECT extract(epoch FROM lease_expires_at - now())::float8 FROM switchyard.jobs WHERE id = $1", [id]
                ).scalar(Double.self)
            }
            #expect(try await leaseLeft() <= 3600)
            _ = try await store.heartbeat(
                worker: WorkerIdentity(id: "rogue", concurrency: 1, hostname: "h", pid: 1, version: "t"),
                held: [(id, job.attempt)], lease: .seconds(1e9))
            #expect(try await leaseLeft() <= 3600)
            #expect(try await store.keepHouse(worker: "rogue", tenure: .seconds(1e9)))
            #expect(try await pool.query(
                "SELECT extract(epoch FROM expires_at - now())::float8 FROM switchyard.housekeeper").scalar(Double.self) <= 3600)
        }
    }

    @Test(
        "every validation rule refuses with a message naming the field and the rule, and stores nothing",
        arguments: [
            ("[1, 2]", "interactive", "request must be a JSON object, got array"),
            (#"{"prompt": "hi"}"#, "interactive", "request.messages is missing"),
            (#"{"messages": "hi"}"#, "interactive", "request.messages must be an array, got string"),
            (#"{"messages": []}"#, "interactive", "request.messages must not be empty"),
            (#"{"messages": ["hi"]}"#, "interactive", "request.messages[0] must be an object with role and content, got string"),
            (#"{"messages": [{"content": "hi"}]}"#, "interactive", "request.messages[0].role is missing"),
            (#"{"messages": [{"role": "robot", "content": "hi"}]}"#, "interactive", "request.messages[0].role must be system, developer, user, assistant or tool (got 'robot')"),
            (#"{"messages": [{"role": "user"}]}"#, "interactive", "request.messages[0].content is missing"),
            (#"{"messages": [{"role": "user", "content": 42}]}"#, "interactive", "request.messages[0].content must be a string or an array of parts, got number"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-17"}"#, "interactive", "request.model names an unknown model: 'gpt-17'"),
            (#"{"messages": [{"role": "user", "content": "hi"}]}"#, "urgent", "priority must be interactive or background (got 'urgent')"),
            // What a provider refuses (a walkthrough's were stored and failed at the provider after their wait).
            (#"{"messages": [{"role": "user", "content": []}]}"#, "interactive", "request.messages[0].content must not be an empty array"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e30}"#, "interactive",
             "request.max_tokens must be between 1 and 2147483647, got 1000000000000000000000000000000"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}"#, "interactive",
             "request.max_completion_tokens must be between 1 and 2147483647, got 0"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "n": 0}"#, "interactive", "request.n must be between 1 and 2147483647, got 0"),
            // A worker reads JSON numbers as doubles: a seed past 2^53 reached the provider changed.
            (#"{"messages": [{"role": "user", "content": "hi"}], "seed": 9007199254740993}"#, "interactive",
             "request.seed must be between -9007199254740991 and 9007199254740991, got 9007199254740993"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "seed": -1e400}"#, "interactive",
             "request.seed must be between -9007199254740991 and 9007199254740991, got -10000000000… (401 digits)"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "seed": 1e400}"#, "interactive",
             "request.seed must be between -9007199254740991 and 9007199254740991, got 100000000000… (401 digits)"),
            // A negative whole number is of the right type, out of its range (an integrator's walkthrough
            // was told "a whole number of at least 0" for -5, while 0 was refused too).
            (#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}"#, "interactive",
             "request.max_tokens must be between 1 and 2147483647, got -5"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "top_k": -1}"#, "interactive",
             "request.top_k must be between 0 and 2147483647, got -1"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 21}"#, "interactive",
             "request.top_logprobs must be between 0 and 20, got 21"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "n": 1.5}"#, "interactive",
             "request.n must be a whole number, got 1.5"),
            // OpenAI's ranges of its other numbers (a walkthrough's temperature 7 failed at the provider).
            (#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 7}"#, "interactive",
             "request.temperature must be between 0 and 2, got 7"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "top_p": -1}"#, "interactive",
             "request.top_p must be between 0 and 1, got -1"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 2.5}"#, "interactive",
             "request.presence_penalty must be between -2 and 2, got 2.5"),
        ]
    )
    func validation(request: String, priority: String, message: String) async throws {
        try await TestDatabase.withMigratedPool { pool in
            // Through switchyard.submit …
            let viaSubmit = try await #require(throws: PostgresError.self) {
                try await pool.query("SELECT switchyard.submit($1::jsonb, priority => $2)", [request, priority])
            }
            #expect(viaSubmit.message == message)
            #expect(viaSubmit.sqlState == .invalidParameterValue)
            #expect(viaSubmit.hint?.isEmpty == false)
            // A submitter may not run `dispatcher models list`: the hint says who can.
            if message.contains("unknown model") {
                #expect(viaSubmit.hint?.contains("an operator lists them: dispatcher models list") == true)
            }
            // … and through a plain INSERT, the same rule and the same words.
            let viaInsert = try await #require(throws: PostgresError.self) {
                try await pool.query("INSERT INTO switchyard.jobs (request, priority) VALUES ($1::jsonb, $2)", [request, priority])
            }
            #expect(viaInsert.message == message)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
        }
    }

    @Test("numbers at the ends of OpenAI's ranges are taken, a negative seed among them")
    func numbersInRange() async throws {
        try await TestDatabase.withMigratedPool { pool in
            for fields in [
                #""seed": -1, "temperature": 2, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2"#,
                #""seed": -9007199254740991, "temperature": 0, "top_p": 0, "top_logprobs": 20, "top_k": 0, "n": 1"#,
                #""max_tokens": 2147483647, "max_completion_tokens": 1, "temperature": 0.7, "top_p": null"#,
            ] {
                let request = #"{"messages": [{"role": "user", "content": "hi"}], \#(fields)}"#
                let id = try await pool.query("SELECT switchyard.submit($1::jsonb)", [request]).scalar(Int64.self)
                #expect(id > 0)
            }
        }
    }

    @Test("an assistant message with tool_calls may leave content out, as OpenAI's SDKs send it; others may not")
    func assistantToolCallsWithoutContent() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let history = #"""
                {"messages": [{"role": "user", "content": "weather?"},
                              {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                               "function": {"name": "weather", "arguments": "{}"}}]},
                              {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]}
                """#
            let id = try await pool.query("SELECT switchyard.submit($1::jsonb)", [history]).scalar(Int64.self)
            #expect(id > 0)
            let bare = try await #require(throws: PostgresError.self) {
                try await pool.query(
                    "SELECT switchyard.submit($1::jsonb)",
                    [#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}"#])
            }
            #expect(bare.message == "request.messages[1].content is missing")
            // No tool call after all: content is needed.
            for calls in ["[]", "null"] {
                let empty = try await #require(throws: PostgresError.self) {
                    try await pool.query(
                        "SELECT switchyard.submit($1::jsonb)",
                        [#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": \#(calls)}]}"#])
                }
                #expect(empty.message == "request.messages[1].content is missing", "\(calls)")
            }
        }
    }

    @Test("size limit, deadline, attempts and metadata rules")
    func otherRules() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await pool.query("UPDATE switchyard.settings SET value = '100' WHERE name = 'max_request_bytes'")
            let long = Submission(request: Submission.prompt(String(repeating: "x", count: 200)))
            let tooBig = try await #require(throws: QueueError.self) { try await store.submit(long) }
            #expect(tooBig.message.contains("over the limit of 100 bytes"))
            #expect(tooBig.hint?.contains("max_request_bytes") == true)
            try await pool.query("UPDATE switchyard.settings SET value = '1048576' WHERE name = 'max_request_bytes'")

            let past = Submission(request: Self.hello, deadline: Date().addingTimeInterval(-60))
            let deadline = try await #require(throws: QueueError.self) { try await store.submit(past) }
            #expect(deadline.message.hasPrefix("deadline ("))
            // Past already, with run_at left to now: said to be past ("must be after run_at (…)"
            // sent a reader to a run_at they never gave).
            #expect(deadline.message.contains("must be in the future"), "\(deadline)")
            let beforeStart = Submission(
                request: Self.hello, runAt: Date().addingTimeInterval(7200), deadline: Date().addingTimeInterval(3600))
            let early = try await #require(throws: QueueError.self) { try await store.submit(beforeStart) }
            #expect(early.message.contains("must be after run_at"), "\(early)")

            let attempts = try await #require(throws: QueueError.self) {
                try await store.submit(Submission(request: Self.hello, maxAttempts: 0))
            }
            #expect(attempts.message == "max_attempts must be between 1 and 100 (got 0)")

            let metadata = try await #require(throws: QueueError.self) {
                try await store.submit(Submission(request: Self.hello, metadata: [1, 2]))
            }
            #expect(metadata.message == "metadata must be a JSON object")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
        }
    }

    /// A security review stored metadata 5,000 levels deep (30 KB); `dispatcher result` and `wait`
    /// could not read the job's result then.
    @Test("metadata is held to the request's depth limit, by submit and INSERT; a result stored deeper still reads")
    func metadataDepth() async throws {
        try await TestDatabase.withMigratedPool { pool in
            func nested(_ levels: Int) -> String {
                String(repeating: #"{"a":"#, count: levels - 1) + "{}" + String(repeating: "}", count: levels - 1)
            }
            let request = #"{"messages":[{"role":"user","content":"hi"}]}"#
            for sql in [
                "SELECT switchyard.submit($1::jsonb, metadata => $2::jsonb)",
                "INSERT INTO switchyard.jobs (request, metadata) VALUES ($1::jsonb, $2::jsonb)",
            ] {
                try await pool.query(sql, [request, nested(32)])
                do {
                    try await pool.query(sql, [request, nested(33)])
                    Issue.record("metadata of 33 levels was accepted: \(sql)")
                } catch let error as PostgresError {
                    #expect(error.message == "metadata nests objects and arrays deeper than the limit of 32 levels")
                    #expect(error.sqlState == .invalidParameterValue)
                }
            }
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 2)

            // One stored before the limit, deeper than the client parses: the result without it.
            let now = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert([ResultRow(job: 9001, model: "alpha", latencyMS: 10, finishedAt: now)], into: pool)
            try await pool.query("UPDATE switchyard.results SET metadata = $1::jsonb WHERE job_id = 9001", [nested(600)])
            let result = try #require(try await QueueStore(pool: pool).result(of: 9001))
            #expect(result["status"] == "succeeded")
            #expect(result["metadata"] == nil)
            #expect(result["request"] != nil)
            #expect(result["unreadable_fields"] == ["metadata"])
        }
    }

    /// A review found the Anthropic translation's message-level marks refused at the door.
    @Test("a message may carry cache_control (as the Anthropic translation takes it); an unknown field may not")
    func messageCacheControl() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: [
                "messages": [
                    ["role": "system", "content": "Long rules.", "cache_control": ["type": "ephemeral"]],
                    ["role": "user", "content": "hi", "cache_control": ["type": "ephemeral", "ttl": "1h"]],
                ]
            ]))
            let unknown = try await #require(throws: QueueError.self) {
                try await store.submit(Submission(request: ["messages": [["role": "user", "content": "hi", "cach_control": [:]]]]))
            }
            #expect(unknown.message.contains("unknown field 'cach_control'"), "\(unknown)")
        }
    }

    @Test("times a worker cannot read, a past deadline, and tenant '*' or '' are refused, by submit and INSERT alike")
    func timesAndTenants() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let request = #"{"messages":[{"role":"user","content":"hi"}]}"#
            func refusal(_ sql: String) async -> String {
                do {
                    try await pool.query(sql, [request])
                    return "accepted"
                } catch let error as PostgresError {
                    return error.message
                } catch {
                    return "\(error)"
                }
            }
            for time in ["0044-03-15 BC", "-infinity", "infinity", "1899-12-31", "9000-01-01"] {
                #expect(await refusal("SELECT switchyard.submit($1::jsonb, run_at => '\(time)')")
                    .hasPrefix("run_at must be between the years 1900 and 8999"), "\(time)")
                #expect(await refusal("INSERT INTO switchyard.jobs (request, run_at) VALUES ($1::jsonb, '\(time)')")
                    .hasPrefix("run_at must be between the years 1900 and 8999"), "\(time)")
            }
            // After its run_at, but already past: the job could only expire.
            #expect(await refusal(
                "SELECT switchyard.submit($1::jsonb, run_at => '2000-01-01', deadline => '2000-01-02')")
                .contains("must be in the future"))
            #expect(await refusal("SELECT switchyard.submit($1::jsonb, deadline => 'infinity')").contains("before the year 9000"))
            // The superuser is unrestricted, but not to reserved or empty tenants.
            #expect(await refusal("SELECT switchyard.submit($1::jsonb, tenant => '*')").contains("is reserved"))
            for tenant in ["", "   "] {
                #expect(await refusal("INSERT INTO switchyard.jobs (request, tenant) VALUES ($1::jsonb, '\(tenant)')")
                    == "tenant must not be empty (or only spaces)")
            }
            // ' acme' would be a tenant of its own beside 'acme'.
            #expect(await refusal("SELECT switchyard.submit($1::jsonb, tenant => ' acme')")
                == "tenant ' acme' begins or ends with white space")
            // Whatever the server's locale says is a space (its C.UTF-8 said a no-break space was not,
            // and a review's gateway submitted for E'\u00a0acme' and for E'\u00a0'); the hint names
            // the tenant without them, not as given (E'\u2003acme' was told to name it E'\u2003acme').
            for (tenant, shown) in [("E'\\u00a0acme'", "'<U+00A0>acme'"), ("E'\\u2003acme\\u202f'", "'<U+2003>acme<U+202F>'")] {
                do {
                    try await pool.query("SELECT switchyard.submit($1::jsonb, tenant => \(tenant))", [request])
                    Issue.record("\(tenant) was accepted")
                } catch let error as PostgresError {
                    #expect(error.message == "tenant \(shown) begins or ends with white space")
                    #expect(error.hint == "Name it without: 'acme'.", "\(tenant)")
                }
            }
            for blank in ["E'\\u00a0'", "E'\\u200b'", "E'\\u2060'"] {
                #expect(await refusal("SELECT switchyard.submit($1::jsonb, tenant => \(blank))")
                    == "tenant must not be empty (or only spaces)", "\(blank)")
            }
            // Invisible, though not white space: a tenant beside acme that reads as acme.
            #expect(await refusal("SELECT switchyard.submit($1::jsonb, tenant => E'\\u200bacme')")
                == "tenant '<U+200B>acme' begins or ends with white space")
            #expect(await refusal("SELECT switchyard.submit($1::jsonb, idempotency_key => E'\\u00a0\\ufeff')")
                == "idempotency_key must not be empty (or only spaces)")
            // Each identifier over its limit is named (one message named all four).
            for (column, limit) in [("task_class", 100), ("affinity_key", 500), ("tenant", 200), ("idempotency_key", 500)] {
                #expect(await refusal("SELECT switchyard.submit($1::jsonb, \(column) => repeat('x', \(limit + 1)))")
                    == "\(column) is \(limit + 1) characters, over the limit of \(limit)")
            }
            // retry()'s keys are its own.
            #expect(await refusal("SELECT switchyard.submit($1::jsonb, idempotency_key => 'switchyard:retry-of:7')")
                .contains("reserved for Switchyard's own"))
            // An empty key would make every job sent with it a repeat of the first.
            for key in ["", " ", "\t "] {
                #expect(await refusal("SELECT switchyard.submit($1::jsonb, idempotency_key => '\(key)')")
                    == "idempotency_key must not be empty (or only spaces)")
                #expect(await refusal("INSERT INTO switchyard.jobs (request, idempotency_key) VALUES ($1::jsonb, '\(key)')")
                    == "idempotency_key must not be empty (or only spaces)")
            }
            let left = try await pool.query(
                "SELECT (SELECT count(*) FROM switchyard.jobs) + (SELECT count(*) FROM switchyard.idempotency_keys)")
            #expect(try left.scalar(Int.self) == 0)
            // What is fine still is.
            #expect(await refusal(
                "SELECT switchyard.submit($1::jsonb, run_at => now() - interval '1 day', deadline => now() + interval '1 hour', tenant => 'acme')")
                == "accepted")
        }
    }

    @Test("a plain INSERT cannot smuggle in run state, and wakes workers like submit does")
    func plainInsert() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let notifications = try await pool.listen(on: ["switchyard_jobs"])
            var events = notifications.makeAsyncIterator()
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request, lease_owner, lease_expires_at, attempt)
                VALUES ('{"messages":[{"role":"user","content":"hi"}]}', 'intruder', now() + interval '1 day', 7)
                """
            )
            let row = try #require(try await pool.query("SELECT lease_owner, attempt FROM switchyard.jobs").first)
            #expect(try row.decode("lease_owner", as: String?.self) == nil)
            #expect(try row.decode("attempt", as: Int.self) == 0)
            guard case .notification(let wake)? = await events.next() else {
                Issue.record("no wake-up notification")
                return
            }
            #expect(wake.channel == "switchyard_jobs")
        }
    }

    @Test("a run_at in the past is now: it does not put a job ahead of those already queued")
    func pastRunAt() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let first = try await store.submit(Submission(request: Self.hello))
            let second = try await store.submit(Submission(request: Self.hello))
            let backdated = try await pool.query(
                "SELECT switchyard.submit($1::jsonb, run_at => '1900-01-01')", [Self.hello.jsonText]
            ).scalar(Int64.self)
            let inserted = try await pool.query(
                "INSERT INTO switchyard.jobs (request, run_at) VALUES ($1::jsonb, now() - interval '1 day') RETURNING id",
                [Self.hello.jsonText]
            ).scalar(Int64.self)
            #expect(
                try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE run_at < created_at").scalar(Int.self) == 0)
            let claimed = try await store.claim(worker: "w", freeSlots: 4, backgroundSlots: 0, lease: .seconds(30))
            #expect(claimed.map(\.id) == [first, second, backdated, inserted])
        }
    }

    @Test("NULL metadata is none, by INSERT as by submit; submit's NULL priority is the default")
    func nullMetadata() async throws {
        try await TestDatabase.withMigratedPool { pool in
            for sql in [
                "SELECT switchyard.submit($1::jsonb, metadata => NULL)",
                "INSERT INTO switchyard.jobs (request, metadata) VALUES ($1::jsonb, NULL)",
            ] {
                try await pool.query(sql, [Self.hello.jsonText])
            }
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE metadata = '{}'").scalar(Int.self) == 2)
            // A driver's None for priority, as for run_at or max_attempts (it was refused, "got NULL").
            let id = try await pool.query("SELECT switchyard.submit($1::jsonb, priority => NULL)", [Self.hello.jsonText])
                .scalar(Int64.self)
            #expect(try await pool.query("SELECT priority FROM switchyard.jobs WHERE id = $1", [id]).scalar(String.self) == "interactive")
        }
    }

    /// An affinity walkthrough's '   ' was one key for every job sent with it (one model for all).
    @Test("an empty or blank affinity key is no key, as '' was; a retry keeps its job's key, whatever it was")
    func blankAffinityKey() async throws {
        try await TestDatabase.withMigratedPool { pool in
            for key in ["", "   ", "\t"] {
                let id = try await pool.query(
                    "SELECT switchyard.submit($1::jsonb, affinity_key => $2)", [Self.hello.jsonText, key]).scalar(Int64.self)
                #expect(try await pool.query("SELECT affinity_key FROM switchyard.jobs WHERE id = $1", [id])
                    .scalar(String?.self) == nil)
            }
            // A job stored with a blank key before this rule (past the check, as a superuser may):
            // cancelled, it is retried with its key as it was (the retry's copy must match).
            let old = try await pool.withConnection { connection in
                try await connection.query("SET session_replication_role = replica")
                let id = try await connection.query(
                    "INSERT INTO switchyard.jobs (request, affinity_key) VALUES ($1::jsonb, '   ') RETURNING id",
                    [Self.hello.jsonText]).scalar(Int64.self)
                try await connection.query("SET session_replication_role = DEFAULT")
                return id
            }
            try await pool.query("SELECT switchyard.cancel($1)", [old])
            let retry = try await pool.query("SELECT switchyard.retry($1)", [old]).scalar(Int64.self)
            #expect(try await pool.query("SELECT affinity_key FROM switchyard.jobs WHERE id = $1", [retry])
                .scalar(String?.self) == "   ")
        }
    }

    @Test("the same idempotency key (per tenant) returns the first job, even after it finished")
    func idempotency() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let first = try await store.submit(Submission(request: Self.hello, idempotencyKey: "order-7"))
            let again = try await store.submit(Submission(request: Self.hello, idempotencyKey: "order-7"))
            #expect(again == first)
            let otherTenant = try await store.submit(Submission(request: Self.hello, idempotencyKey: "order-7", tenant: "acme"))
            #expect(otherTenant != first)
            // A plain INSERT with a used key inserts nothing (like ON CONFLICT DO NOTHING).
            let inserted = try await pool.query(
                "INSERT INTO switchyard.jobs (request, idempotency_key) VALUES ($1::jsonb, 'order-7')", [Self.hello.jsonText]
            )
            #expect(inserted.affectedRows == 0)
            // Finish the first job; the key still answers with it.
            let jobs = try await store.claim(worker: "w", freeSlots: 10, backgroundSlots: 10, lease: .seconds(30))
            let written = try await store.complete(
                worker: "w", jobs.map { Completion(jobID: $0.id, attempt: $0.attempt, kind: .result, status: "succeeded") }
            )
            #expect(written.count == 2)
            #expect(try await store.submit(Submission(request: Self.hello, idempotencyKey: "order-7")) == first)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
        }
    }

    /// A review: a job whose tenant is all spaces (taken before sql/0059) could not be retried,
    /// and its hint asked for a tenant, which a retry cannot name.
    @Test("a retry keeps its job's tenant, even one of spaces from before the check")
    func retryBlankTenant() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, tenant: "acme"))
            #expect(try await store.cancel(id) == "cancelled")
            try await pool.query("UPDATE switchyard.results SET tenant = '   ' WHERE job_id = $1", [id])
            let again = try await store.retry(id)
            #expect(try await pool.query("SELECT tenant FROM switchyard.jobs WHERE id = $1", [again]).scalar(String.self) == "   ")
        }
    }

    /// An operator's walkthrough: the worker role made 37 partitions ahead with one call.
    @Test("ensure_result_partitions makes at most a month ahead")
    func partitionsAhead() async throws {
        try await TestDatabase.withMigratedPool { pool in
            for days in ["32", "-1", "NULL"] {
                let error = await #expect(throws: PostgresError.self) {
                    try await pool.query("SELECT switchyard.ensure_result_partitions(\(days))")
                }
                #expect(error?.message.hasPrefix("p_days_ahead must be between 0 and 31") == true, "\(String(describing: error))")
            }
            let created = try await pool.query("SELECT switchyard.ensure_result_partitions(5)").scalar(Int.self)
            #expect(created == 2)
        }
    }

    /// A figures audit: `status` named a job submitted with a run_at in the past (the claim's
    /// first) as the oldest waiting, with its wait of a second, beside one waiting 21 s.
    @Test("queue_depth's oldest waiting job is the one due longest, not the claim's first")
    func oldestWaiting() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let waiting = try await store.submit(Submission(request: Self.hello, priority: .background))
            try await pool.query("UPDATE switchyard.jobs SET created_at = now() - interval '21 seconds', run_at = now() - interval '21 seconds'")
            // Due an hour before it was created (set by hand: a submission's past run_at is its
            // statement's time, sql/0068).
            let backdated = try await store.submit(Submission(request: Self.hello, priority: .background))
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() - interval '1 hour' WHERE id = $1", [backdated])
            let oldest = try await pool.query(
                "SELECT oldest_job_id, oldest_wait_s FROM switchyard.queue_depth WHERE priority = 'background'")[0]
            #expect(try oldest[0].decode(Int64.self) == waiting, "not \(backdated)")
            #expect(try oldest[1].decode(Double.self) >= 21)
        }
    }

    /// A Python walkthrough reused a key for another prompt and got the first prompt's job (and
    /// answer) back as its own, without a word.
    @Test("a key reused for a different request is refused, naming the key's job; the same request in another spelling is a repeat")
    func idempotencyKeyOtherRequest() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let first = try await store.submit(Submission(request: Self.hello, idempotencyKey: "turn-1"))
            let other = Submission(request: Submission.prompt("Delete all my data"), idempotencyKey: "turn-1")
            let refused = try await #require(throws: QueueError.self) { try await store.submit(other) }
            #expect(refused.message == "idempotency_key 'turn-1' already names job \(first), which was submitted with a different request",
                    "\(refused)")
            #expect(refused.hint?.contains("give this request its own key") == true, "\(refused)")
            // A plain INSERT is refused alike; the same request spelt otherwise (key order, spaces) is a repeat.
            let insert = "INSERT INTO switchyard.jobs (request, idempotency_key) VALUES ($1::jsonb, 'turn-1')"
            await #expect(throws: PostgresError.self) { try await pool.query(insert, [#"{"messages": [{"role": "user", "content": "other"}]}"#]) }
            // One statement giving the key to two requests: the other row's job is rolled back with
            // it, so the error names no job to send again for.
            let twice = try await #require(throws: PostgresError.self) {
                try await pool.query(
                    "INSERT INTO switchyard.jobs (request, idempotency_key) VALUES ($1::jsonb, 'twice'), ($2::jsonb, 'twice')",
                    [#"{"messages": [{"role": "user", "content": "a"}]}"#, #"{"messages": [{"role": "user", "content": "b"}]}"#])
            }
            #expect(twice.message == "idempotency_key 'twice' is given twice in this transaction, for different requests",
                    "\(twice)")
            #expect(twice.hint?.contains("give each request its own key") == true, "\(twice)")
            // Inside a savepoint too (an ORM's nested transaction): the rows' writer is the savepoint's.
            let nested = try await pool.withConnection { connection in
                try await connection.query("BEGIN")
                try await connection.query("SAVEPOINT nested")
                let refused = await #expect(throws: PostgresError.self) {
                    try await connection.query(
                        "INSERT INTO switchyard.jobs (request, idempotency_key) VALUES ($1::jsonb, 'twice'), ($2::jsonb, 'twice')",
                        [#"{"messages": [{"role": "user", "content": "a"}]}"#, #"{"messages": [{"role": "user", "content": "b"}]}"#])
                }
                try await connection.query("ROLLBACK")
                return refused
            }
            #expect(nested?.message.contains("is given twice in this transaction") == true, "\(String(describing: nested))")
            let respelt = #"{ "messages" : [ { "content" : "hello", "role" : "user" } ] }"#
            #expect(try await pool.query(insert, [respelt]).affectedRows == 0)
            #expect(try await pool.query("SELECT switchyard.submit($1::jsonb, idempotency_key => 'turn-1')", [respelt])
                .scalar(Int64.self) == first)
            // Finished, the key still belongs to its request.
            let jobs = try await store.claim(worker: "w", freeSlots: 10, backgroundSlots: 10, lease: .seconds(30))
            _ = try await store.complete(
                worker: "w", jobs.map { Completion(jobID: $0.id, attempt: $0.attempt, kind: .result, status: "succeeded") })
            await #expect(throws: QueueError.self) { try await store.submit(other) }
            #expect(try await store.submit(Submission(request: Self.hello, idempotencyKey: "turn-1")) == first)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 1)
        }
    }

    /// `switchyard.prune()` as SQL callers run it: every step in one transaction (`dispatcher prune`
    /// goes step by step, `pruneInSteps`).
    static func prune(_ pool: PostgresPool, olderThan: Duration) async throws -> [(item: String, removed: Int)] {
        try await pool.query(
            "SELECT item, removed FROM switchyard.prune(make_interval(secs => $1))", [olderThan.seconds]
        ).map { (try $0[0].decode(String.self), try $0[1].decode(Int.self)) }
    }

    @Test("prune keeps the idempotency key of a job still queued, however old the key")
    func pruneKeepsLiveKeys() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let waiting = try await store.submit(
                Submission(request: Self.hello, runAt: Date().addingTimeInterval(40 * 86_400), idempotencyKey: "report-1"))
            let finished = try await store.submit(Submission(request: Self.hello, idempotencyKey: "report-2"))
            let jobs = try await store.claim(worker: "w", freeSlots: 10, backgroundSlots: 10, lease: .seconds(30))
            #expect(jobs.map(\.id) == [finished])
            _ = try await store.complete(
                worker: "w", jobs.map { Completion(jobID: $0.id, attempt: $0.attempt, kind: .result, status: "succeeded") })
            try await pool.query("UPDATE switchyard.idempotency_keys SET created_at = now() - interval '60 days'")
            let removed = try await Self.prune(pool, olderThan: .seconds(30 * 86_400))
            #expect(removed.contains { $0.item == "idempotency keys" && $0.removed == 1 })
            // The queued job's key still answers with it: no second job.
            #expect(try await store.submit(Submission(request: Self.hello, idempotencyKey: "report-1")) == waiting)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 1)
        }
    }

    @Test("prune keeps a retry's key while the retried job's result is kept: retry() still makes one retry")
    func pruneKeepsRetryKeys() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, runAt: Date().addingTimeInterval(3600)))
            #expect(try await store.cancel(id) == "cancelled")
            let retry = try await store.retry(id)
            // The retry ran, and its key is old; the cancelled job's result is in today's partition.
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            _ = try await store.complete(
                worker: "w", [Completion(jobID: retry, attempt: job.attempt, kind: .result, status: "succeeded")])
            try await pool.query("UPDATE switchyard.idempotency_keys SET created_at = now() - interval '2 days'")
            _ = try await Self.prune(pool, olderThan: .seconds(86_400))
            #expect(try await store.retry(id) == retry)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
        }
    }

    @Test("a worker whose lease was taken over cannot write its result; the new holder can, once")
    func fencing() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello))
            let first = try #require(try await store.claim(worker: "slow", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            // Time passes without a heartbeat: make the lease run out, then let housekeeping rescue it.
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", [id])
            #expect(try await store.rescueExpired().map(\.outcome) == ["requeued"])
            let second = try #require(try await store.claim(worker: "fast", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            #expect(second.attempt == first.attempt + 1)

            // The slow worker's heartbeat no longer holds the job…
            let held = try await store.heartbeat(
                worker: WorkerIdentity(id: "slow", concurrency: 1, hostname: "h", pid: 1, version: "t"),
                held: [(id, first.attempt)], lease: .seconds(30)
            )
            #expect(held[id] == nil)
            // …its late answer is refused…
            let late = Completion(jobID: id, attempt: first.attempt, kind: .result, status: "succeeded", model: "late")
            #expect(try await store.complete(worker: "slow", [late]).isEmpty)
            // …and so is a forged one for the right attempt from the wrong worker.
            let forged = Completion(jobID: id, attempt: second.attempt, kind: .result, status: "succeeded", model: "forged")
            #expect(try await store.complete(worker: "slow", [forged]).isEmpty)
            // The holder writes once; a repeat of the same write changes nothing.
            let good = Completion(jobID: id, attempt: second.attempt, kind: .result, status: "succeeded", model: "good")
            #expect(try await store.complete(worker: "fast", [good]) == [id: "result"])
            #expect(try await store.complete(worker: "fast", [good]).isEmpty)
            let results = try await pool.query("SELECT model, attempt_count, attempts FROM switchyard.results WHERE job_id = $1", [id])
            #expect(results.count == 1)
            #expect(try results[0].decode("model", as: String.self) == "good")
            #expect(try results[0].decode("attempt_count", as: Int.self) == 2)
            #expect(try results[0].decode("attempts", as: String.self).contains("lease_expired"))
            // The lost lease's entry gives its time as a worker's entries do (it was jsonb's
            // rendering, "…+00:00", beside the workers' "…Z": two formats in one trail).
            let times = try await pool.query(
                "SELECT e ->> 'outcome' AS outcome, e ->> 'at' AS at FROM switchyard.results r, jsonb_array_elements(r.attempts) e WHERE r.job_id = $1",
                [id])
            let lost = try #require(times.first { try $0.decode("outcome", as: String.self) == "lease_expired" })
            let at = try lost.decode("at", as: String.self)
            #expect(at.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z/) != nil, "\(at)")
            #expect(at.count == Date().postgresText.count)
        }
    }

    @Test("a job whose row another session keeps locked past its lease stays with its live worker")
    func heartbeatVouchesForLockedJob() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let worker = WorkerIdentity(id: "live", concurrency: 1, hostname: "h", pid: 1, version: "t")
            let id = try await store.submit(Submission(request: Self.hello, maxAttempts: 1))
            let job = try #require(try await store.claim(worker: "live", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)

            // An operator's transaction holds the row: the heartbeat cannot renew the lease, and
            // the lease runs out while the lock is held.
            let operatorSession = try await PostgresConnection.connect(pool.configuration)
            defer { Task { await operatorSession.close() } }
            try await operatorSession.query("BEGIN")
            try await operatorSession.query("SELECT id FROM switchyard.jobs WHERE id = $1 FOR UPDATE", [id])
            #expect(try await store.heartbeat(worker: worker, held: [(id, job.attempt)], lease: .seconds(30))[id] == false)
            try await pool.query("UPDATE switchyard.workers SET heartbeat_at = now() - interval '10 seconds'")
            try await operatorSession.query("COMMIT")
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", [id])

            // The worker's latest heartbeat listed it and is younger than a lease: not rescued…
            #expect(try await store.rescueExpired().isEmpty)
            // …its next heartbeat renews it, and its answer is written.
            #expect(try await store.heartbeat(worker: worker, held: [(id, job.attempt)], lease: .seconds(30))[id] == false)
            let done = Completion(jobID: id, attempt: job.attempt, kind: .result, status: "succeeded", model: "m")
            #expect(try await store.complete(worker: "live", [done]) == [id: "result"])
        }
    }

    @Test("a heartbeat vouches for what it listed for one lease: then, or for what it did not list, the job is rescued")
    func heartbeatVouchesOnlyForWhatItListed() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let worker = WorkerIdentity(id: "w", concurrency: 2, hostname: "h", pid: 1, version: "t")
            let first = try await store.submit(Submission(request: Self.hello))
            let second = try await store.submit(Submission(request: Self.hello))
            let claimed = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 0, lease: .seconds(30))
            #expect(claimed.count == 2)
            // A registered worker's jobs are not rescued in the first of its leases after the
            // server started, and this test's server may be younger than that.
            try await Self.waitForServerOlderThan(.seconds(31), pool)
            // A worker restarted under the same id: its heartbeat lists only what it claimed itself.
            _ = try await store.heartbeat(worker: worker, held: [(first, 1)], lease: .seconds(30))
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second'")
            #expect(try await store.rescueExpired().map(\.job) == [second])
            // A worker that stopped heartbeating a lease ago vouches for nothing.
            try await pool.query("UPDATE switchyard.workers SET heartbeat_at = now() - interval '31 seconds'")
            #expect(try await store.rescueExpired().map(\.job) == [first])
        }
    }

    @Test("a process that takes over a worker id owns its row: host, pid and start follow it, and it deregisters")
    func heartbeatFollowsNewProcess() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let first = WorkerIdentity(id: "w", concurrency: 1, hostname: "host-a", pid: 100, version: "v1")
            let second = WorkerIdentity(id: "w", concurrency: 1, hostname: "host-b", pid: 200, version: "v2")
            _ = try await store.heartbeat(worker: first, held: [], lease: .seconds(30))
            try await pool.query("UPDATE switchyard.workers SET started_at = now() - interval '1 hour'")
            _ = try await store.heartbeat(worker: second, held: [], lease: .seconds(30))
            let row = try #require(try await pool.query(
                "SELECT hostname, pid, version, started_at > now() - interval '1 minute' AS restarted FROM switchyard.workers"
            ).first)
            #expect(try row.decode("hostname", as: String.self) == "host-b")
            #expect(try row.decode("pid", as: Int.self) == 200)
            #expect(try row.decode("version", as: String.self) == "v2")
            #expect(try row.decode("restarted", as: Bool.self))
            // The first one, back from a freeze, may not take it back: its heartbeat says so, and the
            // worker stops. Its stop leaves the row alone; the second one's deletes it.
            let refused = await #expect(throws: PostgresError.self) {
                try await store.heartbeat(worker: first, held: [], lease: .seconds(30), takeOver: false)
            }
            #expect(refused?.sqlState == QueueStore.idTakenOver)
            #expect(refused?.message.contains("taken over by another process (host host-b, pid 200)") == true)
            _ = try await store.heartbeat(worker: second, held: [], lease: .seconds(30), takeOver: false)
            try await store.deregister(first)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.workers").scalar(Int.self) == 1)
            try await store.deregister(second)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.workers").scalar(Int.self) == 0)
            // A container restarted as the same host and pid 1 is a new process all the same.
            let container = WorkerIdentity(id: "c", concurrency: 1, hostname: "box", pid: 1, version: "v1")
            _ = try await store.heartbeat(worker: container, held: [], lease: .seconds(30))
            try await pool.query("UPDATE switchyard.workers SET started_at = now() - interval '1 hour'")
            var restarted = container
            restarted.instance = UUID().uuidString
            _ = try await store.heartbeat(worker: restarted, held: [], lease: .seconds(30))
            #expect(try await pool.query(
                "SELECT started_at > now() - interval '1 minute' FROM switchyard.workers WHERE id = 'c'").scalar(Bool.self))
        }
    }

    @Test("a take-over in flight while the old process heartbeats is not written over; the next heartbeat stops it")
    func takeOverDuringHeartbeat() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let first = WorkerIdentity(id: "w", concurrency: 1, hostname: "host-a", pid: 100, version: "v1")
            let second = WorkerIdentity(id: "w", concurrency: 1, hostname: "host-b", pid: 200, version: "v1")
            _ = try await store.heartbeat(worker: first, held: [], lease: .seconds(30))
            try await pool.withConnection { taker in
                // The second process takes the id over, in a transaction still open …
                try await taker.query("BEGIN")
                try await taker.query(
                    "SELECT * FROM switchyard.heartbeat('w', '{}', '{}', 30, 1, 'host-b', 200, 'v1', $1, true)",
                    [second.instance])
                // … while the first one's next heartbeat runs: it leaves the row alone …
                _ = try await store.heartbeat(worker: first, held: [], lease: .seconds(30), takeOver: false)
                try await taker.query("COMMIT")
            }
            // … and the next one finds it taken.
            let refused = await #expect(throws: PostgresError.self) {
                try await store.heartbeat(worker: first, held: [], lease: .seconds(30), takeOver: false)
            }
            #expect(refused?.sqlState == QueueStore.idTakenOver)
            #expect(try await pool.query("SELECT hostname FROM switchyard.workers WHERE id = 'w'").scalar(String.self) == "host-b")
        }
    }

    @Test("a worker whose row another session holds still renews its jobs' leases, without waiting for the row")
    func heartbeatPastAHeldRow() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let worker = WorkerIdentity(id: "held", concurrency: 1, hostname: "h", pid: 1, version: "t")
            let id = try await store.submit(Submission(request: Self.hello))
            _ = try await store.claim(worker: "held", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
            _ = try await store.heartbeat(worker: worker, held: [(id, 1)], lease: .seconds(30))
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() + interval '1 second'")
            try await pool.withConnection { operator_ in
                try await operator_.query("BEGIN")
                try await operator_.query("SELECT * FROM switchyard.workers WHERE id = 'held' FOR UPDATE")
                // A heartbeat that waited for the row would wait for good (the row is let go only
                // after it): given 30 s, then the row is let go. (A test time limit counted the
                // database's creation too, and a loaded machine ran past it.)
                let answered = Mutex(false)
                let heartbeat = Task {
                    defer { answered.withLock { $0 = true } }
                    return try await store.heartbeat(
                        worker: worker, held: [(id, 1)], lease: .seconds(30), takeOver: false)
                }
                do {
                    try await waitUntil("the heartbeat answers without waiting for the held row") {
                        answered.withLock { $0 }
                    }
                } catch {
                    try await operator_.query("ROLLBACK")
                    _ = try? await heartbeat.value
                    throw error
                }
                try await operator_.query("ROLLBACK")
                #expect(try await heartbeat.value[id] == false)
            }
            let renewed = try await pool.query(
                "SELECT lease_expires_at > now() + interval '20 seconds' FROM switchyard.jobs WHERE id = $1", [id]
            ).scalar(Bool.self)
            #expect(renewed)
        }
    }

    /// Waits until the test's server has run for `age` (rescue leaves a worker's jobs alone for
    /// one of its leases after the server starts).
    static func waitForServerOlderThan(_ age: Duration, _ pool: PostgresPool) async throws {
        try await waitUntil("the server has run for \(age)", limit: age + .seconds(30)) {
            try await pool.query("SELECT now() - pg_postmaster_start_time() > $1::interval", ["\(age.seconds) seconds"])
                .scalar(Bool.self)
        }
    }

    @Test("after the server restarts, a worker's expired leases wait one of its leases for its heartbeat before they are rescued")
    func noRescueRightAfterRestart() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello))
            let worker = WorkerIdentity(id: "back", concurrency: 1, hostname: "h", pid: 1, version: "t")
            _ = try await store.claim(worker: "back", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
            _ = try await store.heartbeat(worker: worker, held: [], lease: .seconds(30))
            // The lease ran out while the server was down; the server is younger than one lease
            // (as if it had just restarted: its lease is set to run for an hour from the start).
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second'")
            try await pool.query(
                "UPDATE switchyard.workers SET lease_seconds = extract(epoch FROM now() - pg_postmaster_start_time()) + 3600, heartbeat_at = now() - interval '2 hours'")
            #expect(try await store.rescueExpired().isEmpty)
            // Its heartbeat comes back and renews it.
            #expect(try await store.heartbeat(worker: worker, held: [(id, 1)], lease: .seconds(30))[id] == false)
            // A worker that does not come back loses its jobs one lease after the start.
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second'")
            try await pool.query("UPDATE switchyard.workers SET lease_seconds = 0.001, heartbeat_at = now() - interval '2 hours'")
            #expect(try await store.rescueExpired().map(\.job) == [id])
        }
    }

    @Test("a lease that expires on the last attempt ends the job as failed, with the reason")
    func rescueOnLastAttempt() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, maxAttempts: 1))
            _ = try await store.claim(worker: "gone", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second'")
            #expect(try await store.rescueExpired().map(\.outcome) == ["failed"])
            let result = try #require(try await store.result(of: id))
            #expect(result["status"] == "failed")
            #expect(result["error"]?["code"] == "lease_expired")
            #expect(result["error"]?["message"]?.stringValue?.contains("worker gone stopped renewing its lease") == true)
        }
    }

    @Test("cancelling a queued job ends it at once; a running one is flagged for its worker")
    func cancel() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let queued = try await store.submit(Submission(request: Self.hello))
            #expect(try await store.cancel(queued) == "cancelled")
            #expect(try await store.status(of: queued) == "cancelled")
            #expect(try await store.cancel(queued) == "cancelled")
            #expect(try await store.cancel(999_999) == "not_found")

            let running = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            #expect(try await store.cancel(running) == "cancelling")
            #expect(try await store.status(of: running) == "cancelling")
            let held = try await store.heartbeat(
                worker: WorkerIdentity(id: "w", concurrency: 1, hostname: "h", pid: 1, version: "t"),
                held: [(running, job.attempt)], lease: .seconds(30)
            )
            #expect(held[running] == true)
        }
    }

    /// A review's job, cancelled while it waited for its second attempt (the first had failed),
    /// read "cancelled before it started".
    @Test("a job cancelled between attempts says which attempt it did not start; one never started, that it never did")
    func cancelBetweenAttempts() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            func message(_ id: Int64) async throws -> String {
                try await pool.query("SELECT error ->> 'message' FROM switchyard.results WHERE job_id = $1", [id])
                    .scalar(String.self)
            }
            func failedOnce(_ id: Int64) async throws {
                try await pool.query(
                    "UPDATE switchyard.jobs SET attempt = 1, run_at = now() + interval '1 minute' WHERE id = $1", [id])
            }
            let fresh = try await store.submit(Submission(request: Self.hello))
            let retrying = try await store.submit(Submission(request: Self.hello))
            try await failedOnce(retrying)
            #expect(try await store.cancel(fresh) == "cancelled")
            #expect(try await store.cancel(retrying) == "cancelled")
            #expect(try await message(fresh) == "cancelled before it started")
            #expect(try await message(retrying) == "cancelled before attempt 2 could start")

            // A tenant's jobs, all at once, alike.
            let first = try await store.submit(Submission(request: Self.hello, tenant: "acme"))
            let second = try await store.submit(Submission(request: Self.hello, tenant: "acme"))
            try await failedOnce(second)
            #expect(try await TenantLimits.cancelJobs(of: "acme", in: pool) == (cancelled: 2, cancelling: 0))
            #expect(try await message(first) == "cancelled before it started, with every job of tenant acme")
            #expect(try await message(second) == "cancelled before attempt 2 could start, with every job of tenant acme")
        }
    }

    /// A review's application cancelled its running job in a transaction it held open: the row
    /// stayed locked, and the worker's write-back batch with it (other tenants' jobs among them)
    /// waited 25 s, the worker claiming nothing meanwhile.
    @Test("a cancel in a transaction left open holds up no write-back: a running job is asked without writing its row")
    func cancelInOpenTransaction() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let mine = try await store.submit(Submission(request: Self.hello))
            let other = try await store.submit(Submission(request: Self.hello))
            let jobs = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 0, lease: .seconds(30))
            #expect(jobs.count == 2)
            let application = try await PostgresConnection.connect(pool.configuration)
            defer { Task { await application.close() } }
            try await application.query("BEGIN")
            #expect(try await application.query("SELECT switchyard.cancel($1)", [mine]).scalar(String.self) == "cancelling")
            let writing = Task {
                try await store.complete(worker: "w", jobs.map {
                    Completion(jobID: $0.id, attempt: $0.attempt, kind: .result, status: "succeeded", model: "m")
                })
            }
            var blocked: (any Error)?
            do {
                try await waitUntil("the write-back is written", limit: .seconds(10)) {
                    try await store.status(of: other) == "succeeded"
                }
            } catch {
                blocked = error
            }
            try await application.query("COMMIT")
            #expect(try await writing.value.count == 2)
            if let blocked { throw blocked }
            // A request that commits while a write-back or a rescue puts its job back is not lost
            // (a review's job ran again and succeeded): the write-back's last statement ends a job
            // it finds unleased with a request, and so does the housekeeper's next round.
            let requeued = try await store.submit(Submission(request: Self.hello))
            let swept = try await store.submit(Submission(request: Self.hello))
            let both = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 0, lease: .seconds(30))
            #expect(Set(both.map(\.id)) == [requeued, swept])
            try await pool.query(
                "UPDATE switchyard.jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ANY($1)", [[requeued, swept]])
            try await pool.query("INSERT INTO switchyard.cancel_requests (job_id) VALUES ($1), ($2)", [requeued, swept])
            #expect(try await store.status(of: swept) == "cancelling")
            let job = try #require(both.first { $0.id == requeued })
            let written = try await store.complete(worker: "w", [
                Completion(jobID: requeued, attempt: job.attempt, kind: .retry, retryAt: Date().addingTimeInterval(60))
            ])
            #expect(written == [requeued: "cancelled"])
            #expect(try await store.status(of: requeued) == "cancelled")
            _ = try await store.expireOverdue()
            #expect(try await store.status(of: swept) == "cancelled")

            // The request outlives nothing: the housekeeper's expiry removes it, its job ended.
            try await pool.query("UPDATE switchyard.cancel_requests SET requested_at = now() - interval '2 hours'")
            _ = try await store.expireOverdue()
            #expect(try await pool.query("SELECT count(*) FROM switchyard.cancel_requests").scalar(Int.self) == 0)
        }
    }

    @Test(
        "a cancel asked for while an attempt runs ends the job when the attempt comes back instead",
        arguments: [Completion.Kind.retry, .postpone, .wait, .release]
    )
    func cancelMeetsRequeue(kind: Completion.Kind) async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, maxAttempts: 3))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            #expect(try await store.cancel(id) == "cancelling")
            // The attempt ends before the worker's next heartbeat brings it the cancel.
            let trail = [AttemptRecord(attempt: job.attempt, outcome: "error", error: "503", worker: "w", at: Date())]
            let back = Completion(
                jobID: id, attempt: job.attempt, kind: kind, error: ["code": "all_candidates_failed"], trail: trail,
                retryAt: Date().addingTimeInterval(60)
            )
            #expect(try await store.complete(worker: "w", [back]) == [id: "cancelled"])
            #expect(try await store.status(of: id) == "cancelled")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
            let result = try #require(try await store.result(of: id))
            #expect(result["error"]?["message"] == "cancelled while running")
            #expect(result["attempts"]?.arrayValue?.last?["error"] == "503")
            #expect(result["worker"] == "w")

            // Without a cancel, the same outcome puts the job back.
            let other = try await store.submit(Submission(request: Self.hello, maxAttempts: 3))
            let next = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            var again = back
            again.jobID = other
            again.attempt = next.attempt
            #expect(try await store.complete(worker: "w", [again]) == [other: kind.rawValue])
            #expect(try await store.status(of: other) != "cancelled")
        }
    }

    @Test("a job not started by its deadline ends as expired, and is never claimed")
    func deadlines() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, deadline: Date().addingTimeInterval(3600)))
            // The clock moves past the deadline.
            try await pool.query("UPDATE switchyard.jobs SET deadline = now() - interval '1 second' WHERE id = $1", [id])
            #expect(try await store.claim(worker: "w", freeSlots: 5, backgroundSlots: 5, lease: .seconds(30)).isEmpty)
            #expect(try await store.expireOverdue() == 1)
            let result = try #require(try await store.result(of: id))
            #expect(result["status"] == "expired")
            #expect(result["error"]?["code"] == "deadline_passed")
        }
    }

    @Test("retry resubmits a failed job as a new one linked to it, and refuses a succeeded one")
    func retry() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, affinityKey: "conv-1"))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            _ = try await store.complete(worker: "w", [Completion(jobID: id, attempt: job.attempt, kind: .result, status: "failed")])
            let again = try await store.retry(id)
            #expect(again != id)
            let row = try #require(try await pool.query("SELECT retry_of, affinity_key FROM switchyard.jobs WHERE id = $1", [again]).first)
            #expect(try row.decode("retry_of", as: Int64.self) == id)
            #expect(try row.decode("affinity_key", as: String.self) == "conv-1")

            let done = try await store.submit(Submission(request: Self.hello))
            let claimed = try await store.claim(worker: "w", freeSlots: 5, backgroundSlots: 0, lease: .seconds(30))
            let doneAttempt = try #require(claimed.first { $0.id == done }).attempt
            _ = try await store.complete(worker: "w", [Completion(jobID: done, attempt: doneAttempt, kind: .result, status: "succeeded")])
            let refused = try await #require(throws: QueueError.self) { try await store.retry(done) }
            #expect(refused.message.contains("succeeded"))
            let missing = try await #require(throws: QueueError.self) { try await store.retry(424_242) }
            #expect(missing.code == .notFound)
        }
    }

    @Test("retry_of is retry()'s: an INSERT of its own under the retry key, or linking another job, is refused")
    func retryOfIsRetrys() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, runAt: Date().addingTimeInterval(3600)))
            #expect(try await store.cancel(id) == "cancelled")
            for sql in [
                // Taken for the retry of `id`, with another request.
                """
                INSERT INTO switchyard.jobs (request, retry_of, idempotency_key)
                VALUES ('{"messages":[{"role":"user","content":"not the original"}]}', $1::bigint, 'switchyard:retry-of:' || $1::bigint)
                """,
                // Linked to a job, without the key.
                "INSERT INTO switchyard.jobs (request, retry_of) VALUES ('\(Self.hello.jsonText)', $1)",
                // The job's copy under its key, but to start in ten years (retry() answered with it).
                """
                INSERT INTO switchyard.jobs (request, retry_of, idempotency_key, run_at)
                VALUES ('\(Self.hello.jsonText)', $1::bigint, 'switchyard:retry-of:' || $1::bigint, now() + interval '10 years')
                """,
            ] {
                let error = await #expect(throws: PostgresError.self) { try await pool.query(sql, [id]) }
                #expect(error?.message == "retry_of is set by switchyard.retry(), not by a submission")
                #expect(error?.hint?.contains("switchyard.retry(ID)") == true)
            }
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
            // retry() itself still makes its copy, once.
            let again = try await store.retry(id)
            #expect(try await store.retry(id) == again)
        }
    }

    /// A review's gateway, with SET switchyard.tenant = 'acme ', submitted for a tenant beside
    /// 'acme' that ran through acme's pause and made a second job of an idempotency key acme had
    /// used: the session's tenant was not checked as the row's was.
    @Test("a tenant the session chooses is checked as one the row names; tenant_roles refuses such names")
    func sessionTenantChecked() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let request = #"{"messages":[{"role":"user","content":"hi"}]}"#
            try await SecurityFixtures.withRoles(pool, ["gw": "switchyard_submitter"]) { roles in
                let gateway = roles["gw"]!
                try await SecurityFixtures.map(pool, [(gateway, "*")])
                try await pool.withConnection { connection in
                    /// What submit and a plain INSERT say with the session's tenant set to `tenant`
                    /// (a literal), as the admin and as the gateway: each refusal's message.
                    func refusals(_ tenant: String) async throws -> Set<String> {
                        var said: Set<String> = []
                        for role in ["", gateway] {
                            for sql in ["SELECT switchyard.submit($1::jsonb)", "INSERT INTO switchyard.jobs (request) VALUES ($1::jsonb)"] {
                                try await connection.query(role.isEmpty ? "RESET ROLE" : "SET ROLE \(role)")
                                try await connection.query("SELECT set_config('switchyard.tenant', \(tenant), false)")
                                do {
                                    try await connection.query(sql, [request])
                                    said.insert("accepted")
                                } catch let error as PostgresError {
                                    said.insert(error.message)
                                }
                                try await connection.query("RESET ROLE")
                                try await connection.query("RESET switchyard.tenant")
                            }
                        }
                        return said
                    }
                    for (tenant, said) in [
                        ("'acme '", "tenant 'acme ' begins or ends with white space"),
                        ("E'\\u200bacme'", "tenant '<U+200B>acme' begins or ends with white space"),
                        ("repeat('x', 300)", "tenant is 300 characters, over the limit of 200"),
                        // Invisible, and not refused at an edge before: a soft hyphen, a bidirectional mark.
                        ("E'acme\\u00ad'", "tenant 'acme<U+00AD>' begins or ends with white space"),
                        ("E'\\u200facme'", "tenant '<U+200F>acme' begins or ends with white space"),
                    ] {
                        let refused = try await refusals(tenant)
                        #expect(refused == [said], "\(tenant)")
                    }
                    let none = try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self)
                    #expect(none == 0)
                    // Told what to change where the name came from: the session's setting.
                    for (tenant, hint) in [
                        ("'acme '", "SET switchyard.tenant to the name without them: 'acme'."),
                        ("repeat('x', 201)", "SET switchyard.tenant to a shorter name."),
                    ] {
                        try await connection.query("SELECT set_config('switchyard.tenant', \(tenant), false)")
                        do {
                            try await connection.query("SELECT switchyard.submit($1::jsonb)", [request])
                            Issue.record("\(tenant) from the session was accepted")
                        } catch let error as PostgresError {
                            #expect(error.hint == hint, "\(tenant)")
                        }
                        try await connection.query("RESET switchyard.tenant")
                    }
                    let filler = try await refusals("E'acme\\u3164'")
                    #expect(filler == ["tenant 'acme<U+3164>' begins or ends with white space"])
                    let accepted = try await refusals("'acme'")
                    #expect(accepted == ["accepted"])
                    let acme = try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE tenant = 'acme'")
                    #expect(try acme.scalar(Int.self) == 4)
                }
                // Mapped to such a name, a role could submit for it only through the session (and was
                // told to name itself without the space, which it did not act for).
                for (tenant, message) in [
                    ("gamma ", "tenant 'gamma ' begins or ends with white space"),
                    ("   ", "tenant must not be empty (or only spaces)"),
                ] {
                    do {
                        try await SecurityFixtures.map(pool, [(gateway, tenant)])
                        Issue.record("tenant_roles took \(tenant)")
                    } catch let error as PostgresError {
                        #expect(error.message == message)
                    }
                }
                try await SecurityFixtures.map(pool, [(gateway, "gamma")])
                await #expect(throws: PostgresError.self) {
                    try await pool.query(
                        "UPDATE switchyard.tenant_roles SET tenant = 'gamma ' WHERE role = $1 AND tenant = 'gamma'", [gateway])
                }
                try await pool.query("DELETE FROM switchyard.tenant_roles WHERE role = $1", [gateway])
            }
            // A role whose one tenant was mapped so before schema 99 (the check bypassed here) is told
            // to have the mapping changed, not to name a tenant it does not act for.
            try await SecurityFixtures.withRoles(pool, ["one": "switchyard_submitter"]) { roles in
                let role = roles["one"]!
                try await pool.withConnection { connection in
                    try await connection.query("SET session_replication_role = replica")
                    try await connection.query(
                        "INSERT INTO switchyard.tenant_roles (role, tenant) VALUES ($1, 'gamma ')", [role])
                    try await connection.query("RESET session_replication_role")
                    try await connection.query("SET ROLE \(role)")
                    do {
                        try await connection.query("SELECT switchyard.submit($1::jsonb)", [request])
                        Issue.record("the mapped 'gamma ' was accepted")
                    } catch let error as PostgresError {
                        #expect(error.message == "tenant 'gamma ' begins or ends with white space")
                        #expect(error.hint?.hasPrefix("This role's one tenant in switchyard.tenant_roles is named so") == true,
                                "\(String(describing: error.hint))")
                    }
                    try await connection.query("RESET ROLE")
                    try await connection.query("DELETE FROM switchyard.tenant_roles WHERE role = $1", [role])
                }
            }
        }
    }

    @Test("a retry keeps its job's tenant (none), whatever the admin session's switchyard.tenant says")
    func retryKeepsNoTenant() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let id = try await store.submit(Submission(request: Self.hello, runAt: Date().addingTimeInterval(3600)))
            #expect(try await store.cancel(id) == "cancelled")
            try await pool.withConnection { connection in
                _ = try await connection.query("SET switchyard.tenant = 'acme'")
                let retry = try await connection.query("SELECT switchyard.retry($1)", [id]).scalar(Int64.self)
                _ = try await connection.query("RESET switchyard.tenant")
                #expect(try await connection.query("SELECT switchyard.retry($1)", [id]).scalar(Int64.self) == retry)
                #expect(try await connection.query("SELECT tenant FROM switchyard.jobs WHERE id = $1", [retry])
                    .scalar(String?.self) == nil)
            }
        }
    }

    @Test("a job is retried once: retrying it again, even at once from two sessions, returns that retry")
    func retryOnce() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            func finish(_ id: Int64, as status: String) async throws {
                let job = try #require(
                    try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
                #expect(job.id == id)
                _ = try await store.complete(
                    worker: "w", [Completion(jobID: id, attempt: job.attempt, kind: .result, status: status)])
            }
            let original = try await store.submit(Submission(request: Self.hello))
            try await finish(original, as: "failed")
            async let first = store.retry(original)
            async let second = store.retry(original)
            let retries = try await [first, second]
            #expect(retries[0] == retries[1] && retries[0] != original)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 1)
            // Once the retry has run, the same call still names it: no second answer to pay for.
            try await finish(retries[0], as: "failed")
            #expect(try await store.retry(original) == retries[0])
            // To try again, retry the retry.
            let next = try await store.retry(retries[0])
            #expect(next != retries[0] && next != original)
            let refused = await #expect(throws: PostgresError.self) {
                try await pool.query("SELECT switchyard.retry(NULL)")
            }
            #expect(refused?.message == "retry needs a job id, got NULL")
        }
    }

    @Test("results land in daily partitions, and prune drops whole old ones")
    func retention() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let partitions = try await pool.query(
                """
                SELECT count(*) FROM pg_inherits
                WHERE inhparent = 'switchyard.results'::regclass
                  AND inhrelid::regclass::text ~ '^switchyard\\.results_[0-9]{8}$'
                """
            ).scalar(Int.self)
            #expect(partitions >= 4)
            // An old partition, as if created 40 days ago and filled then.
            try await pool.query(
                """
                CREATE TABLE switchyard.results_20000101 PARTITION OF switchyard.results
                FOR VALUES FROM ('2000-01-01 00:00:00+00') TO ('2000-01-02 00:00:00+00')
                """
            )
            try await pool.query(
                """
                INSERT INTO switchyard.results (job_id, status, priority, request, created_at, finished_at)
                VALUES (1, 'succeeded', 'interactive', '{}', '2000-01-01', '2000-01-01 12:00:00+00')
                """
            )
            let removed = try await Self.prune(pool, olderThan: .seconds(30 * 86_400))
            #expect(removed.contains { $0.item == "partition results_20000101" && $0.removed == 1 })
            #expect(try await pool.query("SELECT to_regclass('switchyard.results_20000101') IS NULL").scalar(Bool.self))
        }
    }
    /// A review's `dispatcher prune` held an exclusive lock on switchyard.results for 8.5 s (15
    /// partitions, 430,000 keys, one transaction): no result written, no job submitted meanwhile.
    @Test("prune goes a step at a time, each its own transaction, and a step stuck behind a reader gives up")
    func pruneInSteps() async throws {
        try await TestDatabase.withMigratedPool { pool in
            for day in ["20000101", "20000102"] {
                try await pool.query(
                    """
                    CREATE TABLE switchyard.results_\(day) PARTITION OF switchyard.results
                    FOR VALUES FROM ('\(day) 00:00:00+00') TO ('\(day) 00:00:00+00'::timestamptz + interval '1 day')
                    """)
                try await pool.query(
                    """
                    INSERT INTO switchyard.results (job_id, status, priority, request, created_at, finished_at)
                    VALUES (\(day), 'succeeded', 'interactive', '{}', '\(day)', '\(day) 12:00:00+00')
                    """)
            }
            try await pool.query(
                """
                INSERT INTO switchyard.idempotency_keys (key, job_id, created_at)
                SELECT 'old-' || n, -n, now() - interval '60 days' FROM generate_series(1, 5) n
                """)
            let store = QueueStore(pool: pool)
            var steps: [String] = []
            while let step = try await store.pruneStep(olderThan: .seconds(30 * 86_400), batch: 2, lockTimeout: .seconds(5)) {
                steps.append("\(step.item) \(step.removed)")
            }
            #expect(steps == [
                "partition results_20000101 1", "partition results_20000102 1",
                "idempotency keys 2", "idempotency keys 2", "idempotency keys 1",
            ])

            // A long reader of results: the drop waits at most its lock timeout, instead of holding
            // every writer behind it for as long as the reader reads.
            try await pool.query(
                """
                CREATE TABLE switchyard.results_20000103 PARTITION OF switchyard.results
                FOR VALUES FROM ('2000-01-03 00:00:00+00') TO ('2000-01-04 00:00:00+00')
                """)
            let reader = try await PostgresConnection.connect(pool.configuration)
            try await reader.query("BEGIN")
            _ = try await reader.query("SELECT count(*) FROM switchyard.results")
            let error = await #expect(throws: PostgresError.self) {
                try await store.pruneStep(olderThan: .seconds(30 * 86_400), lockTimeout: .milliseconds(300))
            }
            #expect(error?.sqlState == .lockNotAvailable, "\(String(describing: error))")
            try await reader.query("COMMIT")
            await reader.close()
            #expect(try await store.pruneStep(olderThan: .seconds(30 * 86_400), lockTimeout: .seconds(5))?.item
                    == "partition results_20000103")
        }
    }
}
