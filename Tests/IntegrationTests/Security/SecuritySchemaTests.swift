import Foundation
import Postgres
import QueueModel
import Testing

/// What the security migration leaves in the schema — and what a later migration must keep:
/// definer functions with a fixed search_path, nothing for PUBLIC, one owner, RLS on tenant data,
/// an unchanged claim plan; and role creation that tolerates concurrent migrations.
@Suite("Security: schema, ownership, hot path, concurrent migration")
struct SecuritySchemaTests {
    /// The functions that must run as their owner (see the header of sql/0007_security.sql).
    static let definers = [
        "submit", "cancel", "feedback", "jobs_before_insert", "claim", "heartbeat", "complete", "rescue_expired",
        "expire_overdue", "ensure_result_partitions", "report_health", "evaluate_alerts", "visible_tenants",
        "analyze_stale_partitions", "retry_made", "keep_house", "stand_down",
        "results_written", "local_time", "submits_for_any_tenant",
    ]

    @Test("definer functions have a fixed search_path; nothing is PUBLIC's; switchyard_admin owns all; RLS is on")
    func schemaAudit() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let functions = try await pool.query(
                """
                SELECT p.proname, p.prosecdef, coalesce(array_to_string(p.proconfig, ';'), '') AS config,
                       pg_get_userbyid(p.proowner) AS owner,
                       p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0) AS public
                FROM pg_proc p WHERE p.pronamespace = 'switchyard'::regnamespace
                """
            )
            var secure: Set<String> = []
            for row in functions {
                let name: String = try row.decode("proname")
                let config: String = try row.decode("config")
                if try row.decode("prosecdef", as: Bool.self) {
                    secure.insert(name)
                    #expect(
                        config.hasPrefix("search_path=pg_catalog, switchyard, pg_temp"),
                        "SECURITY DEFINER function \(name) has no fixed search_path: \(config)")
                }
                #expect(try row.decode("owner", as: String.self) == "switchyard_admin", "\(name) has another owner")
                #expect(try row.decode("public", as: Bool.self) == false, "PUBLIC may execute \(name)")
            }
            for name in Self.definers {
                #expect(
                    secure.contains(name),
                    "switchyard.\(name) must be SECURITY DEFINER (a later migration replaced it?)")
            }

            let relations = try await pool.query(
                """
                SELECT c.relname, pg_get_userbyid(c.relowner) AS owner, c.relrowsecurity,
                       EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0) AS public
                FROM pg_class c WHERE c.relnamespace = 'switchyard'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
                """
            )
            var protected: Set<String> = []
            for row in relations {
                let name: String = try row.decode("relname")
                #expect(try row.decode("owner", as: String.self) == "switchyard_admin", "\(name) has another owner")
                #expect(try row.decode("public", as: Bool.self) == false, "PUBLIC has rights on \(name)")
                if try row.decode("relrowsecurity", as: Bool.self) { protected.insert(name) }
            }
            #expect(protected.isSuperset(of: ["jobs", "results", "idempotency_keys", "feedback"]))
            let schemaOwner = try await pool.query(
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'switchyard'"
            ).scalar(String.self)
            #expect(schemaOwner == "switchyard_admin")
        }
    }

    @Test("a worker's claim reads the queued-jobs index; RLS adds nothing to the plan (EXPLAIN via auto_explain)")
    func claimPlan() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            try await pool.query(
                """
                INSERT INTO switchyard.jobs (request, tenant)
                SELECT jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'x' || g))),
                       CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END
                FROM generate_series(1, 20000) g
                """)
            try await pool.query("ANALYZE switchyard.jobs_interactive")

            // auto_explain logs the plans of statements run inside functions; LOG messages reach
            // this client as notices.
            let plans = LogLines()
            var observed = configuration
            observed.noticeHandler = { notice in plans.append(notice.message) }
            let connection = try await PostgresConnection.connect(observed)
            defer { Task { await connection.close() } }
            try await connection.execute(
                script: """
                    LOAD 'auto_explain';
                    SET auto_explain.log_min_duration = 0;
                    SET auto_explain.log_nested_statements = on;
                    SET client_min_messages = log;
                    SET ROLE switchyard_worker;
                    """)
            // Two tenants: the tenants' shares (sql/0082), read from the tenants' index.
            let shared = try await connection.query("SELECT id FROM switchyard.claim('plan-test', 16, 0, 30)")
            #expect(shared.count == 16)
            let sharePlans = plans.all.filter { $0.contains("jobs_interactive_tenant_run_at_id_idx") }
            #expect(!sharePlans.isEmpty, "\(plans.all)")
            for plan in sharePlans {
                #expect(!plan.contains("visible_tenants"), "row-level security reached the claim: \(plan)")
                // (The held tenants, read as a hashed set once per claim, may be a scan of that small table.)
                #expect(!plan.contains("Seq Scan on jobs"), "\(plan)")
            }
            // The queue's order.
            try await pool.query("UPDATE switchyard.settings SET value = 'false' WHERE name = 'fair_tenants'")
            let claimed = try await connection.query("SELECT id FROM switchyard.claim('plan-test', 16, 0, 30)")
            #expect(claimed.count == 16)
            let logged = plans.all.first { $0.contains("UPDATE switchyard.jobs_interactive") }
            let claimPlan = try #require(logged)
            #expect(claimPlan.contains("Index Scan using jobs_interactive_run_at_id_idx"), "\(claimPlan)")
            #expect(!claimPlan.contains("visible_tenants"), "row-level security reached the claim: \(claimPlan)")
            #expect(!claimPlan.contains("Seq Scan on jobs"), "\(claimPlan)")
        }
    }

    @Test("four databases of one fresh server migrate at once: roles are created once, every migration succeeds")
    func concurrentRoleCreation() async throws {
        try await withPrivateCluster { cluster in
            let server = cluster.configuration()
            let names = (0..<4).map { "concurrent_\($0)" }
            let admin = try await PostgresConnection.connect(server)
            for name in names { try await admin.query("CREATE DATABASE \(name)") }
            await admin.close()
            try await withThrowingTaskGroup(of: Int.self) { group in
                for name in names {
                    group.addTask {
                        let pool = PostgresPool(server.withDatabase(name), options: .init(maxConnections: 1))
                        defer { Task { await pool.close() } }
                        return try await Migrator().migrate(pool).count
                    }
                }
                for try await applied in group { #expect(applied == Migration.all.count) }
            }
            let check = try await PostgresConnection.connect(server)
            defer { Task { await check.close() } }
            let roles = try await check.query(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'switchyard\\_%'"
            ).scalar(Int.self)
            #expect(roles == 3)
        }
    }

    @Test("a database's owner without CREATEROLE, on a server that has the roles, is told who must grant what")
    func ownerWithoutCreateRole() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            defer { Task { await pool.close() } }
            for role in ["switchyard_submitter", "switchyard_worker", "switchyard_admin"] {
                try await pool.query(
                    """
                    DO $$ BEGIN CREATE ROLE \(role) NOLOGIN;
                    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$
                    """)
            }
            let database = try await pool.query("SELECT current_database()").scalar(String.self)
            try await SecurityFixtures.withRoles(pool, ["owner": "switchyard_submitter"], login: true) { roles in
                let owner = roles["owner"]!
                try await pool.query("ALTER DATABASE \"\(database)\" OWNER TO \(owner)")
                let ownerPool = PostgresPool(try SecurityFixtures.configuration(configuration, as: owner))
                let error = await #expect(throws: QueueError.self) { try await Migrator().migrate(ownerPool) }
                await ownerPool.close()
                #expect(error?.message.contains("migration 7 (security) failed") == true, "\(String(describing: error))")
                // Who must grant what, without making a worker's or an application's login an admin
                // (an operator ran migrate with the workers' URL and was told to grant it to "this role").
                #expect(error?.hint?.contains("GRANT switchyard_admin TO it") == true, "\(String(describing: error))")
                #expect(error?.hint?.contains("not a worker's or an application's role") == true, "\(String(describing: error))")
                #expect(error?.hint?.hasSuffix("The migrations before this one are applied.") == true, "\(String(describing: error))")
                try await pool.query("ALTER DATABASE \"\(database)\" OWNER TO CURRENT_USER")
                try await pool.query("REASSIGN OWNED BY \(owner) TO CURRENT_USER")
            }
        }
    }

    @Test("a member of switchyard_admin applies later migrations without CREATE on the database")
    func adminMemberMigrates() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            defer { Task { await pool.close() } }
            try await Migrator(migrations: Array(Migration.all.prefix(18))).migrate(pool)
            try await SecurityFixtures.withRoles(pool, ["ops": "switchyard_admin"], login: true) { roles in
                let ops = PostgresPool(try SecurityFixtures.configuration(configuration, as: roles["ops"]!))
                defer { Task { await ops.close() } }
                let applied = try await Migrator().migrate(ops)
                #expect(applied.map(\.version) == Array(19...Migration.all.count))
                try await Migrator().requireCurrent(ops)
            }
        }
    }
}
