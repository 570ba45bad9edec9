import Foundation
import Postgres
import QueueModel
import Testing

/// Claims that start after a cursor: they skip what the worker already stepped over, even while
/// another session's snapshot keeps those index entries alive, and find jobs that came back
/// behind the cursor once it is reset.
@Suite("Claim cursor: resisting a held snapshot")
struct ClaimCursorTests {
    static let lease = Duration.seconds(30)

    /// Jobs submitted a minute ago, so the cursor is not held back for submissions in flight.
    static func enqueueMinuteOld(_ pool: PostgresPool, count: Int) async throws {
        try await pool.query(
            """
            INSERT INTO switchyard.jobs (request)
            SELECT jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'x' || g)))
            FROM generate_series(1, $1::integer) g
            """, [count])
        // Due a minute ago (a submission's past run_at is now: sql/0068).
        try await pool.query("UPDATE switchyard.jobs SET run_at = now() - interval '1 minute' WHERE lease_owner IS NULL")
    }

    /// A connection whose every statement's plan, nested ones included, arrives as a notice.
    static func explaining(
        _ configuration: PostgresConfiguration, into plans: Received<PostgresNotice>
    ) async throws -> PostgresConnection {
        var configured = configuration
        configured.noticeHandler = { plans.append($0) }
        let connection = try await PostgresConnection.connect(configured)
        for setting in [
            "LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_nested_statements = on", "SET client_min_messages = log",
        ] { try await connection.query(setting) }
        return connection
    }

    @Test("a session's plans made while the queue was empty still probe by key once it holds thousands of jobs")
    func plansMadeOnAnEmptyQueue() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await pool.close() } }
            let plans = Received<PostgresNotice>()
            let connection = try await Self.explaining(configuration, into: plans)
            defer { Task { await connection.close() } }
            // A worker that starts before the backlog: its first claims find nothing.
            for _ in 0..<6 {
                #expect(try await connection.query("SELECT id FROM switchyard.claim('w', 10, 10, 30)").isEmpty)
            }
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request, priority, run_at)
                SELECT jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'x' || g))),
                       'background', now() - interval '1 minute'
                FROM generate_series(1, 5000) g
                """)
            let store = QueueStore(pool: pool)
            let jobs = try await store.claim(worker: "w2", freeSlots: 5, backgroundSlots: 5, lease: Self.lease)
            var claimed = 0
            for _ in 0..<4 {
                claimed += try await connection.query("SELECT id FROM switchyard.claim('w', 10, 10, 30)").count
            }
            #expect(claimed == 40)
            // The write-back of a claimed batch, planned the same way.
            for _ in 0..<6 {
                _ = try await connection.query(
                    "SELECT * FROM switchyard.complete('w2', $1::jsonb)",
                    [JSONValue.array(jobs.map { ["id": .number(Double($0.id)), "attempt": 9, "kind": "release"] }).jsonText])
            }
            let messages = plans.values.map(\.message)
            let claim = try #require(messages.last { $0.contains("SELECT j.id FROM switchyard.jobs_background") })
            #expect(claim.contains("jobs_background_pkey"), "\(claim)")
            #expect(!claim.contains("Seq Scan on jobs_background"), "\(claim)")
            let requeue = try #require(messages.last { $0.contains("Query Text: UPDATE switchyard.jobs j") })
            #expect(!requeue.contains("Seq Scan on jobs_background"), "\(requeue)")
        }
    }

    @Test("a bulk submit into a partition analyzed near empty: claims sort it all until the housekeeper analyzes it")
    func statisticsAfterABulkSubmit() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await pool.close() } }
            let store = QueueStore(pool: pool)
            try await pool.query("ANALYZE switchyard.jobs_background")  // near empty, as a fresh queue is
            // Autovacuum must not analyze it first.
            try await pool.query("ALTER TABLE switchyard.jobs_background SET (autovacuum_enabled = off)")
            #expect(try await store.analyzeStalePartitions().isEmpty)
            let plans = Received<PostgresNotice>()
            let connection = try await Self.explaining(configuration, into: plans)
            defer { Task { await connection.close() } }
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request, priority, run_at)
                SELECT jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'x' || g))),
                       'background', now() - interval '1 minute'
                FROM generate_series(1, 20000) g
                """)
            #expect(try await connection.query("SELECT id FROM switchyard.claim('w', 10, 10, 30)").count == 10)
            let stale = try #require(plans.values.map(\.message).last { $0.contains("SELECT j.id FROM switchyard.jobs_background") })
            #expect(stale.contains("Sort"), "planned for a near-empty partition: \(stale)")
            // The inserting session reports its rows to pg_stat within a second here (it keeps
            // running statements; an idle one may take up to 10 s).
            var analyzed: [String] = []
            for _ in 0..<100 where analyzed.isEmpty {
                analyzed = try await store.analyzeStalePartitions()
                if analyzed.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(analyzed == ["switchyard.jobs_background"])
            #expect(try await store.analyzeStalePartitions().isEmpty, "analyzed again with nothing changed")
            #expect(try await connection.query("SELECT id FROM switchyard.claim('w', 10, 10, 30)").count == 10)
            let messages = plans.values.map(\.message)
            let claim = try #require(messages.last { $0.contains("SELECT j.id FROM switchyard.jobs_background") })
            #expect(!claim.contains("Sort"), "\(claim)")
            #expect(claim.contains("Index Scan using jobs_background_run_at_id_idx"), "\(claim)")
        }
    }

    @Test("with a snapshot held, a claim from the cursor skips the jobs already claimed; heartbeat and write-back probe by key")
    func heldSnapshot() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            let store = QueueStore(pool: pool)
            try await Self.enqueueMinuteOld(pool, count: 1000)
            try await pool.query("VACUUM ANALYZE switchyard.jobs_interactive")

            let holder = try await PostgresConnection.connect(configuration)
            defer { Task { await holder.close() } }
            try await holder.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try await holder.query("SELECT count(*) FROM switchyard.jobs")

            // Drain 800 jobs in claims of 100, each from the cursor, as a worker does.
            var cursor = ClaimCursor()
            var order: [Int64] = []
            for _ in 0..<8 {
                let jobs = try await store.claim(worker: "w", freeSlots: 100, backgroundSlots: 0, lease: Self.lease, after: cursor)
                cursor.advance(past: jobs)
                // Each claim's jobs follow the last claim's (in a claim, the order of the update's rows).
                order += jobs.map(\.id).sorted()
                _ = try await store.complete(
                    worker: "w", jobs.map { Completion(jobID: $0.id, attempt: $0.attempt, kind: .result, status: "succeeded") })
            }
            #expect(order == order.sorted() && Set(order).count == 800)
            #expect(cursor.interactive?.id == order.last)

            // Both find the next ten; from the head, the claim steps over the 800 claimed jobs'
            // entries, which the held snapshot keeps; from the cursor, it reads only what it takes.
            let fromHead = try await cycle(configuration, after: ClaimCursor())
            let fromCursor = try await cycle(configuration, after: cursor)
            #expect(fromHead.jobs == Array(order.last! + 1...order.last! + 10))
            #expect(fromCursor.jobs == fromHead.jobs)
            #expect(fromHead.queued >= 810, "from the head: \(fromHead.queued) index entries")
            #expect(fromCursor.queued <= 20, "from the cursor: \(fromCursor.queued) index entries")
            // The heartbeat and the write-back find their jobs by primary key, not by reading the
            // leased jobs' index, where the 800 written back still have entries.
            #expect(fromCursor.leased == 0, "the leased jobs' index gave \(fromCursor.leased) entries")
            try await holder.query("ROLLBACK")
        }
    }

    /// In a transaction it rolls back, claims ten jobs, renews their leases and writes them back
    /// as a worker does; returns the jobs and the entries each index gave (live or not: the
    /// statistics count both).
    private func cycle(
        _ configuration: PostgresConfiguration, after cursor: ClaimCursor
    ) async throws -> (jobs: [Int64], queued: Int, leased: Int) {
        let connection = try await PostgresConnection.connect(configuration)
        defer { Task { await connection.close() } }
        try await connection.query("BEGIN")
        let rows = try await connection.query(
            "SELECT id, attempt FROM switchyard.claim('probe', 10, 0, 30, $1, $2)",
            [cursor.interactive?.runAt, cursor.interactive?.id])
        let jobs = try rows.map { try $0.decode("id", as: Int64.self) }
        let attempts = try rows.map { try $0.decode("attempt", as: Int.self) }
        let renewed = try await connection.query(
            "SELECT job_id FROM switchyard.heartbeat('probe', $1::bigint[], $2::integer[], 30, 10, 'h', 1, 't')",
            [jobs, attempts])
        #expect(renewed.count == jobs.count)
        let items = zip(jobs, attempts).map { id, attempt -> JSONValue in
            ["id": .number(Double(id)), "attempt": .number(Double(attempt)), "kind": "result", "status": "succeeded"]
        }
        let written = try await connection.query(
            "SELECT job_id FROM switchyard.complete('probe', $1::jsonb)", [JSONValue.array(items).jsonText])
        #expect(written.count == jobs.count)
        let entries = try await connection.query(
            """
            SELECT pg_stat_get_xact_tuples_returned('switchyard.jobs_interactive_run_at_id_idx'::regclass) AS queued,
                   pg_stat_get_xact_tuples_returned('switchyard.jobs_interactive_lease_expires_at_idx'::regclass) AS leased
            """
        ).first
        try await connection.query("ROLLBACK")
        return (jobs, try entries?.decode("queued", as: Int.self) ?? -1, try entries?.decode("leased", as: Int.self) ?? -1)
    }

    @Test("a job released behind the cursor is skipped until the cursor is reset, then claimed first")
    func releasedBehindCursor() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await Self.enqueueMinuteOld(pool, count: 5)
            var cursor = ClaimCursor()
            let first = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 0, lease: Self.lease, after: cursor)
            cursor.advance(past: first)
            // The first job comes back (as at a worker's shutdown), behind the cursor.
            let released = try await store.complete(
                worker: "w", [Completion(jobID: first[0].id, attempt: first[0].attempt, kind: .release)])
            #expect(released == [first[0].id: "release"])

            let next = try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: Self.lease, after: cursor)
            #expect(next.map(\.id) == [first[1].id + 1])
            cursor.reset()
            let again = try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: Self.lease, after: cursor)
            #expect(again.map(\.id) == [first[0].id])
        }
    }

    @Test("a submission that commits after a later one was claimed is not passed over: the cursor stays a second behind")
    func lateCommit() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hi"]]]
            _ = try await store.submit(Submission(request: hello))
            // Claimed in the instant it became runnable (one transaction: one now()), however
            // busy the machine is.
            let row = try #require(try await pool.withTransaction { connection in
                try await connection.query("UPDATE switchyard.jobs SET run_at = now()")
                return try await connection.query("SELECT id, run_at, claimed_at FROM switchyard.claim('w', 1, 0, 30)").first
            })
            let first = Job(
                id: try row.decode("id"), priority: .interactive, request: hello, runAt: try row.decode("run_at"),
                claimedAt: try row.decode("claimed_at", as: Date?.self))
            var cursor = ClaimCursor()
            cursor.advance(past: [first])
            // A submission whose transaction started half a second earlier and committed only now:
            // its run_at is behind the job just claimed.
            // (A submission's run_at is never before its statement, sql/0068: set as it would be.)
            let late = try await store.submit(Submission(request: hello))
            try await pool.query(
                "UPDATE switchyard.jobs SET run_at = $1 WHERE id = $2", [first.runAt.addingTimeInterval(-0.5), late])
            let next = try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: Self.lease, after: cursor)
            #expect(next.map(\.id) == [late])
        }
    }

    /// A walkthrough queued 3,000 background jobs without a deadline and, a second later, 50 with
    /// 30 s: with the gate open, claims took the queue's order and all 50 expired.
    @Test("with the gate open, a background job near its deadline is claimed before the backlog, and leaves the cursor behind it")
    func nearDeadlineFirstWithGateOpen() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request, priority, run_at)
                SELECT jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'x' || g))),
                       'background', now() - interval '1 minute'
                FROM generate_series(1, 200) g
                """)
            // Due a minute ago (a submission's past run_at is now: sql/0068).
            try await pool.query("UPDATE switchyard.jobs SET run_at = now() - interval '1 minute'")
            let hello: JSONValue = ["messages": [["role": "user", "content": "soon"]]]
            var urgent: [Int64] = []
            for _ in 0..<3 {
                urgent.append(try await store.submit(
                    Submission(request: hello, priority: .background, deadline: Date().addingTimeInterval(30))))
            }
            // Far from its deadline: it keeps its place in the queue.
            _ = try await store.submit(
                Submission(request: hello, priority: .background, deadline: Date().addingTimeInterval(86_400)))
            #expect(try await pool.query("SELECT is_open FROM switchyard.background_gate(now())").scalar(Bool.self))
            var cursor = ClaimCursor()
            let first = try await store.claim(worker: "w", freeSlots: 5, backgroundSlots: 5, lease: Self.lease, after: cursor)
            #expect(Set(first.prefix(3).map(\.id)) == Set(urgent), "\(first.map(\.id))")
            #expect(first.count == 5)
            let backlog = try await pool.query(
                "SELECT id FROM switchyard.jobs WHERE deadline IS NULL ORDER BY run_at, id LIMIT 4"
            ).map { try $0.decode("id", as: Int64.self) }
            #expect(Array(first.suffix(2).map(\.id)) == Array(backlog.prefix(2)))
            // The urgent jobs stand past the backlog in the queue's order: the cursor stays at the
            // backlog's last claimed, so the next claim goes on with it.
            cursor.advance(past: first)
            let next = try await store.claim(worker: "w", freeSlots: 2, backgroundSlots: 2, lease: Self.lease, after: cursor)
            #expect(next.map(\.id) == Array(backlog.suffix(2)))
            // From SQL, no background limit (NULL) is the free slots, as before (a review: the queue's
            // order was skipped).
            #expect(try await pool.query("SELECT count(*) FROM switchyard.claim('sql', 30, NULL, 30)").scalar(Int.self) == 30)
        }
    }
}
