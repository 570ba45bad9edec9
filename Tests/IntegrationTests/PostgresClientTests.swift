import Foundation
import Testing

@testable import Postgres

@Suite("Postgres client against a real server")
struct PostgresClientTests {
    /// A network walkthrough: connections a middlebox forgot (packets silently dropped) held a
    /// worker's write-back in TCP retransmission for 15 minutes, and a heartbeat sent into a 15 s
    /// cut arrived 26 s later, after its jobs had been rescued. Keepalives do not probe a
    /// connection with data on its way; the TCP user timeout bounds it.
    @Test("connections keep alive, and drop data unacknowledged as long as they are told (tcp_user_timeout); a URL may say otherwise")
    func tcpTimeouts() async throws {
        try await TestDatabase.withEmpty { configuration in
            let plain = try await PostgresConnection.connect(configuration)
            #expect(await plain.option("keepalives") == "1")
            #expect(["", nil].contains(await plain.option("tcp_user_timeout")))
            await plain.close()
            var bounded = configuration
            bounded.tcpUserTimeoutMilliseconds = 10_000
            let connection = try await PostgresConnection.connect(bounded)
            #expect(await connection.option("tcp_user_timeout") == "10000")
            await connection.close()
            let base = configuration.effectiveConnectionString
            var custom = try PostgresConfiguration(
                base + (base.contains("://") ? (base.contains("?") ? "&" : "?") + "tcp_user_timeout=2500" : " tcp_user_timeout=2500"))
            custom.tcpUserTimeoutMilliseconds = 10_000
            let overridden = try await PostgresConnection.connect(custom)
            #expect(await overridden.option("tcp_user_timeout") == "2500")
            await overridden.close()
        }
    }

    @Test("every supported type decodes, including NULL and non-ASCII text")
    func decodesEveryType() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            let rows = try await connection.query(
                """
                SELECT 'Grüße, 世界 🚀'::text AS text, 'x'::varchar(4) AS varchar,
                       (-32768)::int2 AS small, 2147483647::int4 AS int, (-9223372036854775808)::int8 AS big,
                       true AS yes, false AS no, 1.5::float8 AS double, 'Infinity'::float8 AS infinite,
                       12345678901234567890.123456789::numeric AS exact,
                       '2026-11-26 21:08:05.123456+00'::timestamptz AS moment,
                       '2024-02-29 23:59:59.5+05:30'::timestamptz AS offset_moment,
                       '1969-12-31 23:59:59.999999+00'::timestamptz AS before_epoch,
                       '{"a": [1, 2, {"b": null}], "ü": "✓"}'::jsonb AS document,
                       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id,
                       NULL::text AS missing, NULL::int8 AS missing_number
                """
            )
            let row = try #require(rows.first)
            #expect(try row.decode("text", as: String.self) == "Grüße, 世界 🚀")
            #expect(try row.decode("varchar", as: String.self) == "x")
            #expect(try row.decode("small", as: Int16.self) == -32768)
            #expect(try row.decode("int", as: Int32.self) == 2_147_483_647)
            #expect(try row.decode("big", as: Int64.self) == Int64.min)
            #expect(try row.decode("big", as: Int.self) == Int.min)
            #expect(try row.decode("yes", as: Bool.self) == true)
            #expect(try row.decode("no", as: Bool.self) == false)
            #expect(try row.decode("double", as: Double.self) == 1.5)
            #expect(try row.decode("infinite", as: Double.self) == .infinity)
            #expect(try row.decode("exact", as: Decimal.self) == Decimal(string: "12345678901234567890.123456789"))
            // numeric never silently becomes a Double.
            #expect(throws: PostgresError.self) { try row.decode("exact", as: Double.self) }
            let moment = try row.decode("moment", as: Date.self)
            #expect(abs(moment.timeIntervalSince1970 - 1_795_727_285.123456) < 0.000001)
            let offsetMoment = try row.decode("offset_moment", as: Date.self)
            #expect(abs(offsetMoment.timeIntervalSince1970 - 1_709_231_399.5) < 0.000001)
            let beforeEpoch = try row.decode("before_epoch", as: Date.self)
            #expect(abs(beforeEpoch.timeIntervalSince1970 - -0.000001) < 0.0000001)
            let document = try row.decode("document", as: PostgresJSON.self)
            let object = try #require(try document.object() as? [String: Any])
            #expect(object["ü"] as? String == "✓")
            #expect(try row.decode("id", as: UUID.self) == UUID(uuidString: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
            #expect(try row.decode("missing", as: String?.self) == nil)
            #expect(try row.decode("missing_number", as: Int?.self) == nil)
            #expect(row["missing"].isNull)
            // A NULL asked for as non-optional is an error that says how to allow it.
            let error = try #require(throws: PostgresError.self) { try row.decode("missing", as: String.self) }
            #expect(error.message.contains("is NULL"))
            await connection.close()
        }
    }

    @Test("bind parameters round-trip every encodable type, and values are never spliced into SQL")
    func encodesParameters() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            let date = Date(timeIntervalSince1970: 1_795_727_285.123456)
            let uuid = UUID()
            let hostile = "Robert'); DROP TABLE students;--"
            let row = try #require(
                try await connection.query(
                    """
                    SELECT $1::text AS text, $2::int8 AS big, $3::bool AS flag, $4::float8 AS double,
                           $5::numeric AS exact, $6::timestamptz AS moment, $7::uuid AS id, $8::jsonb AS document,
                           $9::text AS missing, $10::text[] AS list
                    """,
                    [
                        hostile, Int64.max, true, 0.1, Decimal(string: "0.30000000000000000001")!, date, uuid,
                        PostgresJSON(text: #"{"k": "v"}"#), nil, ["a\"b", "c\\d", "e,f"],
                    ]
                ).first
            )
            #expect(try row.decode("text", as: String.self) == hostile)
            #expect(try row.decode("big", as: Int64.self) == .max)
            #expect(try row.decode("flag", as: Bool.self))
            #expect(try row.decode("double", as: Double.self) == 0.1)
            #expect(try row.decode("exact", as: Decimal.self) == Decimal(string: "0.30000000000000000001"))
            #expect(abs(try row.decode("moment", as: Date.self).timeIntervalSince(date)) < 0.000001)
            #expect(try row.decode("id", as: UUID.self) == uuid)
            #expect(try row.decode("document", as: PostgresJSON.self).text == #"{"k": "v"}"#)
            #expect(try row.decode("missing", as: String?.self) == nil)
            #expect(try row.decode("list", as: String.self) == #"{"a\"b","c\\d","e,f"}"#)
            await connection.close()
        }
    }

    @Test("binary array parameters: every element type, NULLs, empty, mixed with text parameters")
    func binaryArrays() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            let date = Date(timeIntervalSince1970: 1_795_727_285.123456)
            var big = PostgresBinaryArray(of: .int8)
            [Int64.min, -1, 0, Int64.max].forEach { big.append($0) }
            big.append(nil as Int64?)
            var small = PostgresBinaryArray(of: .int4)
            [Int32.min, 7].forEach { small.append($0) }
            var doubles = PostgresBinaryArray(of: .float8)
            [0.1, -2.5e300].forEach { doubles.append($0) }
            var texts = PostgresBinaryArray(of: .text)
            ["", "a\"b", "c\\d", "e,f", "NULL", "Grüße 😀"].forEach { texts.append($0) }
            texts.append(nil as String?)
            var documents = PostgresBinaryArray(of: .jsonb)
            documents.appendJSON { $0.append(contentsOf: Array(#"{"b": [1, "x\"y"], "a": null}"#.utf8)) }
            documents.appendNull()
            var moments = PostgresBinaryArray(of: .timestamptz)
            moments.append(date)
            moments.append(Date(timeIntervalSince1970: 3e11))  // beyond what the text form writes: infinity
            let empty = PostgresBinaryArray(of: .text)
            let arrays = [big, small, doubles, texts, documents, moments, empty]
            let row = try #require(
                try await connection.query(
                    """
                    SELECT $1::text AS plain, $2::text AS big, $3::text AS small, $4::text AS doubles,
                           $5::text AS texts, $6::text AS documents, $7::text AS moments,
                           cardinality($8::text[]) AS empty
                    """,
                    ["plain text"] + arrays
                ).first
            )
            #expect(try row.decode("plain", as: String.self) == "plain text")
            #expect(try row.decode("big", as: String.self) == "{-9223372036854775808,-1,0,9223372036854775807,NULL}")
            #expect(try row.decode("small", as: String.self) == "{-2147483648,7}")
            #expect(try row.decode("doubles", as: String.self) == "{0.1,-2.5e+300}")
            #expect(try row.decode("texts", as: String.self) == #"{"","a\"b","c\\d","e,f","NULL","Grüße 😀",NULL}"#)
            #expect(try row.decode("documents", as: String.self) == #"{"{\"a\": null, \"b\": [1, \"x\\\"y\"]}",NULL}"#)
            #expect(try row.decode("moments", as: String.self) == #"{"2026-11-26 21:08:05.123456+00",infinity}"#)
            #expect(try row.decode("empty", as: Int.self) == 0)
            // The text form (for callers that need one) reads back as the same array.
            for array in arrays {
                let type = ["int8[]", "int4[]", "float8[]", "text[]", "jsonb[]", "timestamptz[]", "text[]"][
                    arrays.firstIndex { $0.postgresText == array.postgresText }!]
                let same = try await connection.query(
                    "SELECT $1::\(type) IS NOT DISTINCT FROM $2::\(type)", [array.postgresText, array]
                ).scalar(Bool.self)
                #expect(same, "\(type): \(array.postgresText)")
            }
            await connection.close()
        }
    }

    /// A review of sql/0088: workers running through the migration that added a column to
    /// switchyard.jobs failed every claim (42804) until restarted, claim's RETURN QUERY SELECT *
    /// FROM fair_claim(…) keeping the columns of before in the session's saved plan.
    @Test("a function whose saved plan kept a row type's columns of before is planned afresh, and the call answers")
    func staleFunctionResult() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            defer { Task { await connection.close() } }
            try await connection.execute(script: """
                CREATE TABLE t (a integer); INSERT INTO t VALUES (1);
                CREATE FUNCTION inner_rows() RETURNS SETOF t LANGUAGE sql AS 'SELECT * FROM t';
                CREATE FUNCTION outer_rows() RETURNS SETOF t LANGUAGE plpgsql AS
                    'BEGIN RETURN QUERY SELECT * FROM inner_rows(); END';
                """)
            let call = "SELECT * FROM outer_rows()"
            #expect(try await connection.query(call, [], prepared: true).count == 1)
            let other = try await PostgresConnection.connect(configuration)
            try await other.query("ALTER TABLE t ADD COLUMN b text DEFAULT 'x'")
            await other.close()
            for _ in 0..<2 {
                let row = try #require(try await connection.query(call, [], prepared: true).first)
                #expect(try row.decode("b", as: String.self) == "x")
            }
        }
    }

    @Test("prepared statements: prepared once per connection, and run unprepared when the server lost or outdated them")
    func preparedStatements() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            try await connection.execute(script: "CREATE TABLE t (a integer); INSERT INTO t VALUES (1), (2)")
            let select = "SELECT * FROM t WHERE a >= $1 ORDER BY a"
            @Sendable func preparedHere() async throws -> Int {
                try await connection.query("SELECT count(*) AS n FROM pg_prepared_statements").first!.decode("n", as: Int.self)
            }
            for _ in 0..<3 {
                let rows = try await connection.query(select, [2], prepared: true)
                #expect(try rows.map { try $0.decode("a", as: Int.self) } == [2])
            }
            #expect(try await preparedHere() == 1)

            // Another client of a pooler's server connection prepared the same statement: the
            // same name, so it is used as it is.
            let name = try await connection.query("SELECT name FROM pg_prepared_statements").first!
                .decode("name", as: String.self)
            let other = try await PostgresConnection.connect(configuration)
            try await other.query("PREPARE \(name) (integer) AS \(select)")
            #expect(try await other.query(select, [1], prepared: true).count == 2)
            #expect(try await other.query("SELECT count(*) AS n FROM pg_prepared_statements").first!
                .decode("n", as: Int.self) == 1)
            let third = try await PostgresConnection.connect(configuration)
            try await third.query("PREPARE \(name) (integer) AS \(select)")  // used only after the change below

            // A new column changes `*`: Postgres refuses the old statement. The call still
            // answers, and the text runs unprepared on that connection from then on (a pooler
            // that keeps clients' statements would hand the stale one back under its name).
            try await connection.query("ALTER TABLE t ADD COLUMN b text DEFAULT 'x'")
            for _ in 0..<2 {
                let widened = try #require(try await connection.query(select, [2], prepared: true).first)
                #expect(try widened.decode("b", as: String.self) == "x")
            }
            #expect(try await preparedHere() == 1)  // the stale one, never run again
            // On the connections that found it under its name (prepared there before the change,
            // used before it or not): the same.
            for client in [other, third] {
                #expect(try await client.query(select, [2], prepared: true).first?.decode("b", as: String.self) == "x")
                #expect(try await client.query(select, [2], prepared: true).first?.decode("b", as: String.self) == "x")
                await client.close()
            }
            // Inside a transaction the error aborts it, so it is thrown; the next call is unprepared.
            let fresh = "SELECT * FROM t WHERE a <= $1"
            #expect(try await connection.query(fresh, [5], prepared: true).count == 2)
            try await connection.query("ALTER TABLE t ADD COLUMN c integer")
            await #expect(throws: PostgresError.self) {
                try await connection.withTransaction { try await $0.query(fresh, [5], prepared: true) }
            }
            let inTransaction = try await connection.withTransaction { try await $0.query(fresh, [5], prepared: true) }
            #expect(inTransaction.count == 2)

            // Binary parameters of another type than the prepared one run unprepared.
            let count = "SELECT cardinality($1::bigint[]) AS n"
            var big = PostgresBinaryArray(of: .int8)
            big.append(Int64(7))
            var small = PostgresBinaryArray(of: .int4)
            [Int32(1), 2].forEach { small.append($0) }
            #expect(try await connection.query(count, [big], prepared: true).first!.decode("n", as: Int.self) == 1)
            #expect(try await connection.query(count, [small], prepared: true).first!.decode("n", as: Int.self) == 2)
            #expect(try await preparedHere() == 3)

            // A statement the server refuses to prepare throws, and leaves nothing behind.
            let error = try await #require(throws: PostgresError.self) {
                try await connection.query("SELECT FROM nowhere WHERE $1", [true], prepared: true)
            }
            #expect(error.sqlState == .undefinedTable)
            #expect(try await preparedHere() == 3)
            #expect(try await connection.query(select, [3], prepared: true).isEmpty)

            // A statement gone from under the connection (a transaction-mode pooler sent it to
            // another server connection, or DISCARD ALL): this call and every later one unprepared.
            try await connection.query("DEALLOCATE ALL")
            for _ in 0..<2 {
                #expect(try await connection.query(select, [1], prepared: true).count == 2)
                #expect(try await connection.query(count, [big], prepared: true).first!.decode("n", as: Int.self) == 1)
            }
            #expect(try await preparedHere() == 0)
            await connection.close()
        }
    }

    /// A review started a worker beside a fleet that filled the server: each checkout past its one
    /// connection knocked for 15 s on the full server, and it did 36 jobs in 90 s.
    @Test("a pool the server has no more slots for works on with those it has, and says why it has no more")
    func serverFull() async throws {
        try await TestDatabase.withEmpty { configuration in
            let admin = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await admin.close() } }
            try await SecurityFixtures.withRoles(admin, ["capped": "pg_read_all_data"], login: true) { roles in
                try await admin.query("ALTER ROLE \(roles["capped"]!) CONNECTION LIMIT 2")
                let pool = PostgresPool(
                    try PostgresConfiguration(SecurityFixtures.connectionString(configuration, as: roles["capped"]!)),
                    options: .init(maxConnections: 4))
                defer { Task { await pool.close() } }
                let answers = try await withThrowingTaskGroup(of: Int.self) { group in
                    for index in 0..<8 {
                        group.addTask { try await pool.query("SELECT $1::int, pg_sleep(0.1)", [index]).scalar(Int.self) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(answers.sorted() == Array(0..<8))
                #expect(pool.openConnections <= 2)

                // With no connection at all to wait for, the error says what is full.
                let third = PostgresPool(
                    try PostgresConfiguration(SecurityFixtures.connectionString(configuration, as: roles["capped"]!)),
                    options: .init(maxConnections: 1, connectRetryTimeout: .milliseconds(200)))
                // Both slots held by the first pool while the third asks: its two statements wait
                // for a lock until it has asked (a sleep of a second and a wait of 300 ms for
                // them to start failed on a loaded machine).
                let holder = try await PostgresConnection.connect(configuration)
                try await holder.query("SELECT pg_advisory_lock(42)")
                let held = try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<2 { group.addTask { try await pool.query("SELECT pg_advisory_xact_lock_shared(42)") } }
                    var error: PostgresError?
                    do {
                        try await waitUntil("both of the pool's connections wait for the lock") {
                            try await admin.query(
                                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'",
                                [roles["capped"]!]
                            ).scalar(Int.self) == 2
                        }
                        error = await #expect(throws: PostgresError.self) { try await third.query("SELECT 1") }
                    } catch {
                        try await holder.query("SELECT pg_advisory_unlock(42)")
                        throw error
                    }
                    try await holder.query("SELECT pg_advisory_unlock(42)")
                    try await group.waitForAll()
                    return error
                }
                await holder.close()
                #expect(held?.hint?.contains("CONNECTION LIMIT") == true, "\(String(describing: held))")
                await third.close()
            }
        }
    }

    /// A review terminated a worker's backend mid-`complete()`: the error, logged, ran to 2,776
    /// characters (the server's CONTEXT: every PL/pgSQL frame and the statement's text).
    @Test("a connection cut mid-function says so in a line, without the server's CONTEXT")
    func cutMidFunction() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            let admin = try await PostgresConnection.connect(configuration)
            let pid = try await connection.query("SELECT pg_backend_pid()").scalar(Int.self)
            let running = Task {
                try await connection.query(
                    "DO $$ BEGIN PERFORM pg_sleep(10) FROM generate_series(1, 1) WHERE \(String(repeating: "true AND ", count: 200))true; END $$")
            }
            try await Task.sleep(for: .milliseconds(500))
            try await admin.query("SELECT pg_terminate_backend($1)", [pid])
            let error = await #expect(throws: PostgresError.self) { try await running.value }
            let text = "\(String(describing: error))"
            #expect(text.contains("terminating connection"), "\(text)")
            #expect(!text.contains("CONTEXT") && !text.contains("true AND true"), "\(text)")
            await admin.close()
        }
    }

    /// Any session may NOTIFY: a review's flood of distinct payloads on switchyard_catalog cost
    /// each worker a core, one event per notification, and slowed job pickup fourfold.
    @Test("a coalescing listener gets one notification per channel of those that arrive together")
    func coalescingListener() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await pool.close() } }
            let wakeUps = try await pool.listen(on: ["flood", "other", "end"], coalescing: true)
            let every = try await pool.listen(on: ["flood"])
            try await pool.query(
                "SELECT count(pg_notify('flood', 'x' || g)) FROM generate_series(1, 1000) g UNION ALL SELECT count(pg_notify('other', 'y'))")
            // Sent after: delivered after every notification of the transaction before.
            try await pool.query("SELECT pg_notify('end', '')")
            // Read in tasks a deadline cancels: a stream that never yields must fail the test, not hang it.
            let coalescing = Task {
                var channels: [String] = []
                for await event in wakeUps {
                    guard case .notification(let note) = event else { continue }
                    channels.append(note.channel)
                    if note.channel == "end" { break }
                }
                return channels
            }
            let counting = Task {
                var all = 0
                for await event in every {
                    guard case .notification = event else { continue }
                    all += 1
                    if all == 1000 { break }
                }
                return all
            }
            let deadline = Task {
                try await Task.sleep(for: .seconds(30))
                coalescing.cancel()
                counting.cancel()
            }
            let channels = await coalescing.value
            let all = await counting.value
            deadline.cancel()
            // One per channel per read: the 1,000 come in a few reads, not one event each.
            let floods = channels.count { $0 == "flood" }
            #expect(floods >= 1 && floods <= 100, "\(floods) events for 1,000 notifications")
            #expect(channels.contains("other") && channels.last == "end", "\(channels)")
            #expect(all == 1000)
        }
    }

    @Test("a NUL byte in a parameter is refused before it reaches the server")
    func refusesNulBytes() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            let error = try await #require(throws: PostgresError.self) {
                try await connection.query("SELECT $1::text", ["before\u{0}after"])
            }
            #expect(error.code == .invalidParameter)
            #expect(error.message.contains("NUL"))
            // The connection is still usable.
            #expect(try await connection.query("SELECT 1").scalar(Int.self) == 1)
            await connection.close()
        }
    }

    @Test("server errors carry SQLSTATE, detail and constraint")
    func reportsSQLState() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            try await connection.query("CREATE TABLE t (id int PRIMARY KEY)")
            try await connection.query("INSERT INTO t VALUES (1)")
            let duplicate = try await #require(throws: PostgresError.self) {
                try await connection.query("INSERT INTO t VALUES ($1)", [1])
            }
            #expect(duplicate.code == .server)
            #expect(duplicate.sqlState == .uniqueViolation)
            #expect(duplicate.constraint == "t_pkey")
            #expect(duplicate.detail?.contains("(id)=(1)") == true)
            #expect(!duplicate.isTransient)

            let syntax = try await #require(throws: PostgresError.self) {
                try await connection.query("SELEC 1")
            }
            #expect(syntax.sqlState == .syntaxError)
            #expect(syntax.message.contains("syntax error"))
            await connection.close()
        }
    }

    @Test("a transaction commits on return and rolls back on a thrown error")
    func transactions() async throws {
        struct Boom: Error {}
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            try await pool.query("CREATE TABLE t (id int)")
            _ = try await pool.withTransaction { try await $0.query("INSERT INTO t VALUES (1)") }
            await #expect(throws: Boom.self) {
                try await pool.withTransaction { connection in
                    try await connection.query("INSERT INTO t VALUES (2)")
                    throw Boom()
                }
            }
            // A server error inside the transaction rolls back too.
            await #expect(throws: PostgresError.self) {
                try await pool.withTransaction { connection in
                    try await connection.query("INSERT INTO t VALUES (3)")
                    try await connection.query("INSERT INTO t VALUES ('not a number')")
                }
            }
            #expect(try await pool.query("SELECT array_agg(id)::text FROM t").scalar(String.self) == "{1}")
            await pool.close()
        }
    }

    @Test("a pipelined batch of 1,000 inserts lands in one round trip, all or nothing")
    func pipelineBatch() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            try await connection.query("CREATE TABLE t (id int PRIMARY KEY, label text)")
            let statements = (1...1000).map { (id: Int) in
                PostgresStatement("INSERT INTO t VALUES ($1, $2) RETURNING id", [id, "row \(id)"])
            }
            let results = try await connection.pipeline(statements)
            #expect(results.count == 1000)
            #expect(try results.map { try $0.scalar(Int.self) } == Array(1...1000))
            #expect(try await connection.query("SELECT count(*) FROM t").scalar(Int.self) == 1000)

            // One failing statement undoes the whole batch and reports its own error.
            var failing = (1001...1010).map { PostgresStatement("INSERT INTO t VALUES ($1, 'x')", [$0]) }
            failing.insert(PostgresStatement("INSERT INTO t VALUES (5, 'duplicate')"), at: 5)
            let error = try await #require(throws: PostgresError.self) { try await connection.pipeline(failing) }
            #expect(error.sqlState == .uniqueViolation)
            #expect(try await connection.query("SELECT count(*) FROM t").scalar(Int.self) == 1000)
            // And the connection is back in normal mode.
            #expect(try await connection.query("SELECT 41 + 1").scalar(Int.self) == 42)
            await connection.close()
        }
    }

    @Test("a pipelined batch run separately: each statement commits on its own, a failure stays its own")
    func pipelineSeparately() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            try await connection.query("CREATE TABLE t (id int PRIMARY KEY)")
            var statements = (1...300).map { PostgresStatement("INSERT INTO t VALUES ($1) RETURNING id", [$0]) }
            statements.insert(PostgresStatement("INSERT INTO t VALUES (5) RETURNING id"), at: 150)
            let outcomes = try await connection.pipelineSeparately(statements)
            #expect(outcomes.count == 301)
            let failed = outcomes.enumerated().filter { if case .failure = $0.element { true } else { false } }
            #expect(failed.map(\.offset) == [150])
            if case .failure(let error) = outcomes[150] { #expect((error as? PostgresError)?.sqlState == .uniqueViolation) }
            #expect(try outcomes[151].get().scalar(Int.self) == 151)
            #expect(try await connection.query("SELECT count(*) FROM t").scalar(Int.self) == 300)
            #expect(try await connection.query("SELECT 41 + 1").scalar(Int.self) == 42)
            await connection.close()
        }
    }

    @Test("NOTICEs go to the configured handler, not to stderr")
    func routesNotices() async throws {
        try await TestDatabase.withEmpty { configuration in
            let received = Received<PostgresNotice>()
            var configured = configuration
            configured.noticeHandler = { received.append($0) }
            let connection = try await PostgresConnection.connect(configured)
            try await connection.query("DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$")
            let notices = received.values
            #expect(notices.count == 1)
            #expect(notices.first?.message == "hello from plpgsql")
            #expect(notices.first?.severity == "NOTICE")
            await connection.close()
        }
    }

    @Test("cancelling the task cancels the running statement on the server")
    func cancellation() async throws {
        try await TestDatabase.withEmpty { configuration in
            let connection = try await PostgresConnection.connect(configuration)
            let pid = try #require(await connection.backendPID)
            let task = Task { try await connection.query("SELECT pg_sleep(30)") }
            // Wait until the statement is running on the server before cancelling.
            let observer = try await PostgresConnection.connect(configuration)
            while try await observer.query(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                [Int(pid)]
            ).scalar(Int.self) == 0 {
                try await Task.sleep(for: .milliseconds(10))
            }
            task.cancel()
            let error = try await #require(throws: PostgresError.self) { try await task.value }
            #expect(error.sqlState == .queryCanceled)
            #expect(try await connection.query("SELECT 1").scalar(Int.self) == 1)
            await connection.close()
            await observer.close()
        }
    }

    @Test("16 connections run 16 blocking statements at once: none waits on the cooperative pool")
    func connectionsDoNotSerialize() async throws {
        try await TestDatabase.withEmpty { configuration in
            var connections: [PostgresConnection] = []
            for _ in 0..<16 { connections.append(try await PostgresConnection.connect(configuration)) }
            let intervals = try await withThrowingTaskGroup(of: (Date, Date).self) { group in
                for connection in connections {
                    group.addTask {
                        let row = try #require(
                            try await connection.query(
                                "SELECT clock_timestamp() AS started, pg_sleep(0.3), clock_timestamp() AS ended"
                            ).first
                        )
                        return (try row.decode("started", as: Date.self), try row.decode("ended", as: Date.self))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(intervals.count == 16)
            // Every statement started before any one of them ended: all 16 ran at the same time.
            // (Times come from the server's clock, so this holds however slow the machine is.)
            let latestStart = try #require(intervals.map(\.0).max())
            let earliestEnd = try #require(intervals.map(\.1).min())
            #expect(latestStart < earliestEnd)
            for connection in connections { await connection.close() }
        }
    }
}

/// Collects values from callbacks on other threads.
final class Received<Value: Sendable>: @unchecked Sendable {
    // Safe because `items` is only touched with `lock` held.
    private let lock = NSLock()
    private var items: [Value] = []
    func append(_ value: Value) { lock.withLock { items.append(value) } }
    var values: [Value] { lock.withLock { items } }
}
