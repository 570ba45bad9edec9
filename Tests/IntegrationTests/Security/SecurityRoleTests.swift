import Foundation
import Postgres
import QueueModel
import Testing

/// Each Switchyard role can do exactly what its list says and is refused the rest, checked with
/// the real roles (`SET ROLE` in a transaction, rolled back after every statement).
@Suite("Security: roles do exactly their list")
struct SecurityRoleTests {
    static let submitter = "switchyard_submitter"
    static let worker = "switchyard_worker"
    static let admin = "switchyard_admin"
    static let hello = #"{"messages":[{"role":"user","content":"hi"}]}"#

    /// One thing a role might try, and the roles that may.
    struct Operation: Sendable {
        var name: String
        var sql: String
        var binds: [Int64] = []
        var allowed: Set<String>
    }

    /// The jobs the operations act on, all of tenant acme: queued, failed, succeeded.
    struct Jobs {
        var queued: Int64
        var failed: Int64
        var succeeded: Int64
    }

    static func operations(_ jobs: Jobs) -> [Operation] {
        let all: Set<String> = [submitter, worker, admin]
        let submitters: Set<String> = [submitter, admin]
        let workers: Set<String> = [worker, admin]
        let admins: Set<String> = [admin]
        let claimAndComplete = """
            SELECT count(*) FROM switchyard.complete('role-test', (
                SELECT coalesce(jsonb_agg(jsonb_build_object('id', c.id, 'attempt', c.attempt, 'kind', 'result',
                                                             'status', 'succeeded', 'model', 'm')), '[]')
                FROM switchyard.claim('role-test', 1, 0, 30) c))
            """
        return [
            // What submitters do (admins too).
            Operation(name: "submit", sql: "SELECT switchyard.submit('\(hello)'::jsonb)", allowed: submitters),
            Operation(
                name: "insert a job", sql: "INSERT INTO switchyard.jobs (request) VALUES ('\(hello)') RETURNING id",
                allowed: submitters),
            Operation(name: "read results", sql: "SELECT count(*) FROM switchyard.results", allowed: submitters),
            Operation(
                name: "read idempotency keys", sql: "SELECT count(*) FROM switchyard.idempotency_keys",
                allowed: submitters),
            Operation(
                name: "job_status", sql: "SELECT switchyard.job_status($1)", binds: [jobs.queued], allowed: submitters),
            Operation(
                name: "result", sql: "SELECT * FROM switchyard.result($1)", binds: [jobs.succeeded], allowed: submitters
            ),
            Operation(name: "cancel", sql: "SELECT switchyard.cancel($1)", binds: [jobs.queued], allowed: submitters),
            Operation(name: "retry", sql: "SELECT switchyard.retry($1)", binds: [jobs.failed], allowed: submitters),
            Operation(
                name: "feedback", sql: "SELECT switchyard.feedback($1, 80)", binds: [jobs.succeeded],
                allowed: submitters),
            // Everyone.
            Operation(name: "read live jobs", sql: "SELECT count(*) FROM switchyard.jobs", allowed: all),
            Operation(
                name: "schema version", sql: "SELECT max(version) FROM switchyard.schema_migrations", allowed: all),
            Operation(name: "LISTEN", sql: "LISTEN switchyard_results", allowed: all),
            // What workers do (admins too).
            Operation(
                name: "claim", sql: "SELECT count(*) FROM switchyard.claim('role-test', 2, 2, 30)", allowed: workers),
            Operation(
                name: "heartbeat",
                sql: "SELECT count(*) FROM switchyard.heartbeat('role-test', '{}', '{}', 30, 1, 'host', 1, 'v')",
                allowed: workers),
            Operation(name: "complete", sql: claimAndComplete, allowed: workers),
            Operation(
                name: "rescue_expired", sql: "SELECT count(*) FROM switchyard.rescue_expired(10)", allowed: workers),
            Operation(name: "expire_overdue", sql: "SELECT switchyard.expire_overdue(10)", allowed: workers),
            Operation(
                name: "analyze_stale_partitions", sql: "SELECT count(*) FROM switchyard.analyze_stale_partitions()",
                allowed: workers),
            Operation(
                name: "ensure_result_partitions", sql: "SELECT switchyard.ensure_result_partitions(3)", allowed: workers
            ),
            Operation(
                name: "report_health",
                sql:
                    #"SELECT count(*) FROM switchyard.report_health('[{"model":"m","requests":1,"failures":0,"had_success":true}]')"#,
                allowed: workers),
            Operation(
                name: "evaluate_alerts", sql: "SELECT count(*) FROM switchyard.evaluate_alerts()", allowed: workers),
            Operation(name: "read models", sql: "SELECT count(*) FROM switchyard.models", allowed: workers),
            Operation(name: "read rules", sql: "SELECT count(*) FROM switchyard.routes", allowed: workers),
            Operation(name: "read settings", sql: "SELECT count(*) FROM switchyard.settings", allowed: workers),
            Operation(name: "read fleet health", sql: "SELECT count(*) FROM switchyard.fleet_health", allowed: workers),
            Operation(name: "read model health", sql: "SELECT count(*) FROM switchyard.model_health", allowed: workers),
            Operation(
                name: "read feedback scores", sql: "SELECT count(*) FROM switchyard.feedback_scores", allowed: workers),
            Operation(name: "read worker rows", sql: "SELECT count(*) FROM switchyard.workers", allowed: workers),
            Operation(
                name: "remove its worker row", sql: "DELETE FROM switchyard.workers WHERE id = 'role-test'",
                allowed: workers),
            Operation(name: "background gate", sql: "SELECT * FROM switchyard.background_gate()", allowed: workers),
            // Admins only.
            Operation(
                name: "change a setting",
                sql: "UPDATE switchyard.settings SET value = value WHERE name = 'max_messages'", allowed: admins),
            Operation(
                name: "import a model",
                sql: "INSERT INTO switchyard.models (name, provider) VALUES ('new', 'simulated')",
                allowed: admins),
            Operation(
                name: "change a rule",
                sql: "INSERT INTO switchyard.routes (task_class, primary_model) VALUES ('x', 'm')",
                allowed: admins),
            Operation(
                name: "map a tenant", sql: "INSERT INTO switchyard.tenant_roles (role, tenant) VALUES ('pg_monitor', 'x')",
                allowed: admins),
            Operation(
                name: "read the tenant map", sql: "SELECT count(*) FROM switchyard.tenant_roles", allowed: admins),
            Operation(name: "prune", sql: "SELECT count(*) FROM switchyard.prune('30 days')", allowed: admins),
            Operation(
                name: "write a result directly",
                sql: """
                    INSERT INTO switchyard.results (job_id, status, priority, request, created_at)
                    VALUES (-1, 'succeeded', 'interactive', '{}', now())
                    """,
                allowed: admins),
            Operation(name: "update a live job", sql: "UPDATE switchyard.jobs SET max_attempts = 5", allowed: admins),
            Operation(name: "delete live jobs", sql: "DELETE FROM switchyard.jobs", allowed: admins),
            Operation(
                name: "read a partition directly", sql: "SELECT count(*) FROM switchyard.jobs_interactive",
                allowed: admins),
            Operation(name: "read ratings", sql: "SELECT count(*) FROM switchyard.feedback", allowed: admins),
            Operation(name: "read alerts", sql: "SELECT count(*) FROM switchyard.alerts", allowed: admins),
            Operation(name: "job_stats", sql: "SELECT count(*) FROM switchyard.job_stats()", allowed: admins),
            Operation(name: "queue_depth", sql: "SELECT count(*) FROM switchyard.queue_depth", allowed: admins),
            Operation(name: "calls view", sql: "SELECT count(*) FROM switchyard.calls", allowed: admins),
            Operation(
                name: "archive directly",
                sql: "SELECT switchyard.archive(j, 'cancelled', '{}', '[]') FROM switchyard.jobs j WHERE j.id = $1",
                binds: [jobs.queued], allowed: admins),
            Operation(
                name: "check_request directly", sql: "SELECT switchyard.check_request('\(hello)')", allowed: admins),
            Operation(
                name: "migrate: create a table", sql: "CREATE TABLE switchyard.role_test (id integer)", allowed: admins),
            Operation(
                name: "migrate: replace a function",
                sql: "CREATE OR REPLACE FUNCTION switchyard.window_text(p_window interval) RETURNS text "
                    + "LANGUAGE sql IMMUTABLE AS $$ SELECT 'x' $$",
                allowed: admins),
        ]
    }

    /// Queued, failed and succeeded jobs of tenant acme, made as the superuser.
    static func makeJobs(_ pool: PostgresPool) async throws -> Jobs {
        try await pool.query("INSERT INTO switchyard.models (name, provider) VALUES ('m', 'simulated')")
        let store = QueueStore(pool: pool)
        let request = Submission.prompt("hi")
        let failed = try await store.submit(Submission(request: request, tenant: "acme"))
        let succeeded = try await store.submit(Submission(request: request, tenant: "acme"))
        for (id, status) in [(failed, "failed"), (succeeded, "succeeded")] {
            let claimed = try await store.claim(worker: "setup", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30))
            #expect(claimed.map(\.id) == [id])
            try await pool.query(
                """
                SELECT * FROM switchyard.complete('setup', jsonb_build_array(jsonb_build_object(
                    'id', $1::bigint, 'attempt', 1, 'kind', 'result', 'status', $2::text,
                    'model', CASE WHEN $2 = 'succeeded' THEN 'm' END)))
                """,
                [id, status])
        }
        let queued = try await store.submit(Submission(request: request, tenant: "acme"))
        return Jobs(queued: queued, failed: failed, succeeded: succeeded)
    }

    @Test("submitter, worker and admin: each operation allowed to exactly the roles whose list has it")
    func matrix() async throws {
        try await TestDatabase.withMigratedPool { pool in
            // The submitter group itself acts for acme here (tenant maps are per database).
            try await SecurityFixtures.map(pool, [(Self.submitter, "acme")])
            let jobs = try await Self.makeJobs(pool)
            let operations = Self.operations(jobs)
            try await pool.withConnection { connection in
                let session = RoleSession(connection: connection)
                for role in [Self.submitter, Self.worker, Self.admin] {
                    for operation in operations {
                        let outcome = try await session.attempt(
                            as: role, operation.sql, operation.binds.map { $0 as (any PostgresEncodable)? })
                        switch outcome {
                        case .success:
                            #expect(operation.allowed.contains(role), "\(role) was allowed to \(operation.name)")
                        case .failure(let error):
                            if operation.allowed.contains(role) {
                                Issue.record("\(role) was refused \(operation.name): \(error)")
                            } else {
                                #expect(
                                    error.sqlState == .insufficientPrivilege,
                                    "\(role) refused \(operation.name) for the wrong reason: \(error)")
                            }
                        }
                    }
                }
            }
            // Every attempt was rolled back: the fixtures are as they were.
            #expect(
                try await pool.query("SELECT switchyard.job_status($1)", [jobs.queued]).scalar(String.self) == "queued")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 2)
        }
    }

    @Test("the worker role reads the background gate while a surcharge window holds it (it opens at the window's end)")
    func gateDuringSurcharge() async throws {
        try await TestDatabase.withMigratedPool { pool in
            // A window open from an hour ago to two hours ahead, at five times the list price.
            let now = Date()
            let formatter = DateFormatter()
            formatter.timeZone = .gmt
            formatter.dateFormat = "HH:mm"
            let window: JSONValue = [
                "start": .string(formatter.string(from: now.addingTimeInterval(-3600))),
                "end": .string(formatter.string(from: now.addingTimeInterval(7200))), "multiplier": 5,
            ]
            try await pool.query(
                """
                INSERT INTO switchyard.models (name, provider, price_per_1k_input, price_per_1k_output, price_windows)
                VALUES ('m', 'simulated', 0.001, 0.001, jsonb_build_array($1::jsonb))
                """, [window.jsonText])
            try await pool.query("INSERT INTO switchyard.routes (task_class, primary_model) VALUES ('default', 'm')")
            try await BackgroundPolicy.set("background_max_cost_per_1k", to: "0.002", in: pool)
            try await pool.withConnection { connection in
                let outcome = try await RoleSession(connection: connection).attempt(
                    as: Self.worker, "SELECT is_open, next_open_at FROM switchyard.background_gate()")
                switch outcome {
                case .success(let rows):
                    let row = try #require(rows.first)
                    #expect(try row.decode("is_open", as: Bool.self) == false)
                    let opens = try #require(try row.decode("next_open_at", as: Date?.self))
                    #expect(abs(opens.timeIntervalSince(now) - 7200) < 120, "\(opens)")
                case .failure(let error):
                    Issue.record("the worker role could not read the gate: \(error)")
                }
            }
        }
    }

    @Test("the admin role is not a superuser: it administers Switchyard, not the server")
    func adminIsNotSuperuser() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await pool.withConnection { connection in
                let session = RoleSession(connection: connection)
                let serverWide = [
                    "CREATE ROLE role_test_nobody", "SELECT pg_read_file('PG_VERSION')",
                    "SET session_replication_role = replica", "CREATE SCHEMA role_test_elsewhere",
                ]
                for sql in serverWide {
                    let outcome = try await session.attempt(as: Self.admin, sql)
                    guard case .failure(let error) = outcome else {
                        Issue.record("switchyard_admin could run \(sql)")
                        continue
                    }
                    #expect(error.sqlState == .insufficientPrivilege, "\(sql): \(error)")
                }
            }
            let rows = try await pool.query(
                """
                SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolcanlogin AS privileged
                FROM pg_roles WHERE rolname IN ('switchyard_submitter', 'switchyard_worker', 'switchyard_admin')
                """
            )
            let privileged = try rows.map { try $0.decode("privileged", as: Bool.self) }
            #expect(privileged == [false, false, false], "NOLOGIN roles without attributes")
        }
    }

    /// A security review's application role held evaluate_alerts' advisory key for two minutes
    /// (housekeeping stopped with it), and the policy key to hold up other tenants' write-backs.
    @Test("an application role cannot hold up alert evaluation or a write-back: Switchyard's locks are rows it cannot lock")
    func locksNoApplicationCanTake() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(
                Submission(request: ["messages": [["role": "user", "content": "hi"]]], priority: .background))
            let job = try #require(
                try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 1, lease: .seconds(30)).first)
            try await SecurityFixtures.withRoles(pool, ["app": "switchyard_submitter"]) { roles in
                let application = try await PostgresConnection.connect(pool.configuration)
                defer { Task { await application.close() } }
                try await application.query("BEGIN")
                try await application.query("SET LOCAL ROLE \(try SecurityFixtures.quoted(roles["app"]!))")
                // The keys the functions took before sql/0083, held as the review held them.
                try await application.query("SELECT pg_advisory_xact_lock(6005366777810014804)")
                try await application.query("SELECT pg_advisory_xact_lock(6005366778061868105)")
                try await application.query("SAVEPOINT rows")
                do {
                    try await application.query("SELECT FROM switchyard.locks FOR UPDATE")
                    Issue.record("an application role locked switchyard.locks")
                } catch let error as PostgresError {
                    #expect(error.sqlState == .insufficientPrivilege, "\(error)")
                }
                try await application.query("ROLLBACK TO SAVEPOINT rows")
                // Blocked, these would wait for the application's transaction: give up after 10 s instead.
                try await pool.withConnection { connection in
                    try await connection.query("SET statement_timeout = '10s'")
                    _ = try await connection.query("SELECT count(*) FROM switchyard.evaluate_alerts()")
                    try await connection.query("RESET statement_timeout")
                }
                let writing = Task {
                    try await store.complete(worker: "w", [
                        Completion(jobID: job.id, attempt: job.attempt, kind: .postpone,
                                   retryAt: Date().addingTimeInterval(3600))
                    ])
                }
                var blocked: (any Error)?
                do {
                    try await waitUntil("the postponement is written", limit: .seconds(10)) {
                        try await pool.query("SELECT postponed_at IS NOT NULL FROM switchyard.jobs WHERE id = $1", [job.id])
                            .scalar(Bool.self)
                    }
                } catch {
                    blocked = error
                }
                try await application.query("ROLLBACK")
                #expect(try await writing.value.count == 1)
                if let blocked { throw blocked }
            }
        }
    }

    @Test("a tenant is mapped only to a role that exists: a mapping made before would go to whoever creates the role")
    func mapsExistingRolesOnly() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let error = await #expect(throws: PostgresError.self) {
                try await pool.query("INSERT INTO switchyard.tenant_roles (role, tenant) VALUES ('llm_gateway_later', '*')")
            }
            #expect(error?.sqlState == SQLState("42704"))
            #expect(error?.message == "role llm_gateway_later does not exist")
            #expect(error?.hint?.hasPrefix("Create it first (CREATE ROLE llm_gateway_later") == true)
            try await pool.query("INSERT INTO switchyard.tenant_roles (role, tenant) VALUES ('pg_monitor', 'ops')")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.tenant_roles").scalar(Int.self) == 1)
        }
    }
}
