import Foundation
import Postgres
import QueueModel
import Testing

/// Generated hostile submissions through SQL — `switchyard.submit` and a plain INSERT, as a real
/// submitter role — each refused with a clear error, nothing stored, nothing for a worker; and
/// generated valid ones accepted and stored exactly as sent.
@Suite("Security: hostile input through SQL")
struct HostileSQLTests {
    static let hostileCount = 1_200
    static let validCount = 300

    /// Submits each input in its own subtransaction and reports what the server said. Requests
    /// and metadata arrive hex-encoded and are decoded as UTF-8 by the server, so bytes that are
    /// not UTF-8 meet the same check a client's text parameter meets.
    static let tryEach = """
        CREATE FUNCTION pg_temp.try_each(p_insert boolean, p_requests text[], p_priorities text[], p_metadata text[],
                                         p_attempts integer[])
        RETURNS TABLE (item integer, job_id bigint, state text, message text, hint text) LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1 .. cardinality(p_requests) LOOP
                item := i; job_id := NULL; state := '00000'; message := NULL; hint := NULL;
                BEGIN
                    IF p_insert THEN
                        INSERT INTO switchyard.jobs (request, priority, metadata, max_attempts)
                        VALUES (convert_from(decode(p_requests[i], 'hex'), 'UTF8')::jsonb, p_priorities[i],
                                convert_from(decode(p_metadata[i], 'hex'), 'UTF8')::jsonb, p_attempts[i])
                        RETURNING id INTO job_id;
                    ELSE
                        job_id := switchyard.submit(convert_from(decode(p_requests[i], 'hex'), 'UTF8')::jsonb,
                                                    priority => p_priorities[i],
                                                    metadata => convert_from(decode(p_metadata[i], 'hex'), 'UTF8')::jsonb,
                                                    max_attempts => p_attempts[i]);
                    END IF;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
                END;
                RETURN NEXT;
            END LOOP;
        END $$
        """

    /// Lower-case hex, fast enough for megabytes.
    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// What the server said about one input.
    struct Outcome {
        var input: GeneratedInput
        var jobID: Int64?
        var state: String
        var message: String?
        var hint: String?
    }

    /// Runs inputs through `try_each` as `role`, in batches of 200.
    static func submit(
        _ inputs: [GeneratedInput], insert: Bool, as role: String, session: RoleSession
    ) async throws -> [Outcome] {
        var outcomes: [Outcome] = []
        for start in stride(from: 0, to: inputs.count, by: 200) {
            let batch = Array(inputs[start..<min(start + 200, inputs.count)])
            let rows = try await session.run(
                as: role, "SELECT item, job_id, state, message, hint FROM pg_temp.try_each($1, $2, $3, $4, $5)",
                [
                    insert, batch.map { hex($0.request) }, batch.map(\.priority), batch.map { hex($0.metadata) },
                    batch.map(\.maxAttempts),
                ])
            for row in rows {
                outcomes.append(
                    Outcome(
                        input: batch[try row.decode("item", as: Int.self) - 1],
                        jobID: try row.decode("job_id", as: Int64?.self),
                        state: try row.decode("state"), message: try row.decode("message", as: String?.self),
                        hint: try row.decode("hint", as: String?.self)))
            }
        }
        return outcomes
    }

    /// The hostile inputs were each refused with a clear error; the valid ones stored exactly.
    static func check(_ outcomes: [Outcome], pool: PostgresPool) async throws {
        var perKind: [String: Int] = [:]
        for outcome in outcomes where !outcome.input.isValid {
            perKind[outcome.input.kind, default: 0] += 1
            let message = outcome.message ?? ""
            #expect(outcome.state != "00000", "a \(outcome.input.kind) input was accepted as job \(outcome.jobID ?? 0)")
            #expect(outcome.state.hasPrefix("22"), "\(outcome.input.kind): \(outcome.state) \(message)")
            #expect(
                outcome.input.matches(message),
                "\(outcome.input.kind): expected \(outcome.input.expected), got \(message)")
            if outcome.state == "22023" {
                #expect(outcome.hint?.isEmpty == false, "no hint for: \(message)")
            }
        }
        #expect(perKind.count == HostileInputs.kinds.count)
        let everyKindOften = perKind.values.allSatisfy { $0 >= 60 }
        #expect(everyKindOften, "\(perKind)")
        let valid = outcomes.filter(\.input.isValid)
        for outcome in valid {
            #expect(outcome.state == "00000", "a valid input was refused: \(outcome.message ?? "")")
        }
        let ids = valid.compactMap(\.jobID)
        let exact = try await pool.query(
            """
            SELECT count(*) FROM unnest($1::bigint[], $2::text[]) AS v(id, request)
            JOIN switchyard.jobs j ON j.id = v.id
            WHERE j.request = convert_from(decode(v.request, 'hex'), 'UTF8')::jsonb AND j.tenant = 'acme'
            """,
            [ids, valid.map { hex($0.input.request) }]
        ).scalar(Int.self)
        #expect(exact == valid.count)
    }

    /// Nothing of the hostile inputs reached a table, and a worker finds nothing to claim.
    static func expectNothingStored(_ pool: PostgresPool, session: RoleSession) async throws {
        for table in ["jobs", "results", "idempotency_keys"] {
            #expect(try await pool.query("SELECT count(*) FROM switchyard.\(table)").scalar(Int.self) == 0, "\(table)")
        }
        let claimed = try await session.attempt(
            as: "switchyard_worker", "SELECT count(*) FROM switchyard.claim('hostile-test', 100, 100, 30)"
        ).get()
        #expect(try claimed.scalar(Int.self) == 0)
    }

    @Test(
        "1,200 hostile inputs per SQL path (submit, then a plain INSERT): refused, clear, nothing stored; 300 valid stored as sent",
        arguments: [false, true])
    func throughSQL(insert: Bool) async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(HostileInputs.settingsSQL)
            try await SecurityFixtures.withRoles(pool, ["app": "switchyard_submitter"]) { roles in
                try await SecurityFixtures.map(pool, [(roles["app"]!, "acme")])
                try await pool.withConnection { connection in
                    try await connection.query(Self.tryEach)
                    let session = RoleSession(connection: connection)
                    var generator = HostileInputs(seed: insert ? 2 : 1, client: false)
                    let hostile = (0..<Self.hostileCount).map { generator.hostile($0) }
                    let refused = try await Self.submit(hostile, insert: insert, as: roles["app"]!, session: session)
                    #expect(refused.count == Self.hostileCount)
                    try await Self.expectNothingStored(pool, session: session)
                    let valid = (0..<Self.validCount).map { _ in generator.valid() }
                    let accepted = try await Self.submit(valid, insert: insert, as: roles["app"]!, session: session)
                    try await Self.check(refused + accepted, pool: pool)
                }
            }
        }
    }

    @Test("each limit lets a request at the limit through and refuses one past it; the floors hold")
    func boundaries() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.query(HostileInputs.settingsSQL)
            func nested(_ depth: Int) -> String {
                // The request is level 1, messages level 2, …: tools adds depth - 1 levels.
                let tools = String(repeating: "[", count: depth - 1) + String(repeating: "]", count: depth - 1)
                return #"{"messages":[{"role":"user","content":"hi"}],"tools":\#(tools)}"#
            }
            func messages(_ count: Int) -> String {
                #"{"messages":[\#(Array(repeating: #"{"role":"user","content":"x"}"#, count: count).joined(separator: ","))]}"#
            }
            func content(_ length: Int) -> String {
                #"{"messages":[{"role":"user","content":"\#(String(repeating: "y", count: length))"}]}"#
            }
            let cases: [(request: String, refusal: String?)] = [
                (nested(HostileInputs.maxDepth), nil),
                (
                    nested(HostileInputs.maxDepth + 1),
                    "request.tools nests objects and arrays deeper than the limit of 32 levels"
                ),
                (messages(HostileInputs.maxMessages), nil),
                (messages(HostileInputs.maxMessages + 1), "request.messages holds 101 messages, over the limit of 100"),
                (content(HostileInputs.maxContentChars), nil),
                (
                    content(HostileInputs.maxContentChars + 1),
                    "request.messages[0].content is 10001 characters, over the limit of 10000"
                ),
            ]
            for (request, refusal) in cases {
                do {
                    _ = try await pool.query("SELECT switchyard.submit($1::jsonb)", [request])
                    #expect(refusal == nil, "accepted, expected: \(refusal ?? "")")
                } catch let error as PostgresError {
                    #expect(error.message == refusal, "\(error)")
                }
            }
            // The floors below which the validation would skip a limit, and the ceiling of the depth.
            for (name, value) in [
                ("max_request_depth", "7"), ("max_messages", "99"), ("max_content_chars", "9999"),
                ("max_messages", "lots"),
                // Above it, a request deeper than a worker parses (512 levels) could be stored.
                ("max_request_depth", "257"),
            ] {
                let error = try await #require(throws: PostgresError.self) {
                    try await pool.query("UPDATE switchyard.settings SET value = $2 WHERE name = $1", [name, value])
                }
                #expect(error.sqlState == .checkViolation, "\(error)")
            }
        }
    }

    @Test("hostile inputs as a client's bind parameters (QueueStore and a plain INSERT, logged in as a submitter)")
    func throughClient() async throws {
        try await TestDatabase.withMigrated { configuration in
            let admin = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await admin.close() } }
            try await admin.query(HostileInputs.settingsSQL)
            try await SecurityFixtures.withRoles(admin, ["app": "switchyard_submitter"], login: true) { roles in
                try await SecurityFixtures.map(admin, [(roles["app"]!, "acme")])
                let pool = PostgresPool(
                    try SecurityFixtures.configuration(configuration, as: roles["app"]!),
                    options: .init(maxConnections: 2))
                defer { Task { await pool.close() } }
                let store = QueueStore(pool: pool)
                var generator = HostileInputs(seed: 3, client: false)
                var sent = 0
                var index = 0
                while sent < 300 {
                    let input = generator.hostile(index)
                    index += 1
                    // A Swift string parameter is always UTF-8 without NUL bytes: those kinds are
                    // covered above, through the server's own decoding.
                    guard let request = String(validating: input.request, as: UTF8.self), !input.request.contains(0),
                        let metadata = String(validating: input.metadata, as: UTF8.self)
                    else { continue }
                    sent += 1
                    let submission = Self.submission(request: request, input: input)
                    do {
                        if let submission, sent % 2 == 1 {
                            _ = try await store.submit(submission)
                            Issue.record("a \(input.kind) input was submitted")
                        } else {
                            try await pool.query(
                                "INSERT INTO switchyard.jobs (request, priority, metadata, max_attempts) VALUES ($1::jsonb, $2, $3::jsonb, $4)",
                                [request, input.priority, metadata, input.maxAttempts])
                            Issue.record("a \(input.kind) input was inserted")
                        }
                    } catch let error as PostgresError {
                        #expect(error.sqlState?.errorClass == "22", "\(input.kind): \(error)")
                        #expect(
                            input.matches(error.message),
                            "\(input.kind): expected \(input.expected), got \(error.message)")
                    } catch let error as QueueError {
                        #expect(error.code == .invalidInput, "\(input.kind): \(error)")
                        #expect(
                            input.matches(error.message),
                            "\(input.kind): expected \(input.expected), got \(error.message)")
                    }
                }
                // Nesting far past the limit is refused by the server's JSON parser itself.
                let abyss =
                    "{\"messages\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
                    + "}"
                await #expect(throws: PostgresError.self) {
                    try await pool.query("SELECT switchyard.submit($1::jsonb)", [abyss])
                }
                for table in ["jobs", "results", "idempotency_keys"] {
                    #expect(try await admin.query("SELECT count(*) FROM switchyard.\(table)").scalar(Int.self) == 0)
                }
            }
        }
    }

    /// The input as a `Submission` (what the CLI and libraries send), when it can be one: its
    /// request and metadata parse and its priority is a known one.
    static func submission(request: String, input: GeneratedInput) -> Submission? {
        guard let value = try? JSONValue(parsing: request),
            let metadata = try? JSONValue(parsing: Data(input.metadata)),
            let priority = Priority(rawValue: input.priority)
        else { return nil }
        return Submission(request: value, priority: priority, maxAttempts: input.maxAttempts, metadata: metadata)
    }
}
