import Foundation
import Postgres
import QueueModel
import Testing

/// Row-level security keeps tenants apart on every read and write path: a submitter of tenant
/// acme cannot see, wait on, cancel, retry or rate globex's jobs, nor submit as globex.
@Suite("Security: tenant isolation")
struct TenantIsolationTests {
    static let hello = #"{"messages":[{"role":"user","content":"hi"}]}"#

    /// One tenant's jobs in every state.
    struct TenantJobs {
        var queued: Int64
        var running: Int64
        var failed: Int64
        var succeeded: Int64
        var all: [Int64] { [queued, running, failed, succeeded] }
    }

    /// Jobs for acme and globex in every state, made as the superuser (claims take the oldest
    /// queued job, so finished jobs are made first, then running ones, then queued ones).
    static func makeJobs(_ pool: PostgresPool) async throws -> [String: TenantJobs] {
        try await pool.query("INSERT INTO switchyard.models (name, provider) VALUES ('m', 'simulated')")
        let store = QueueStore(pool: pool)
        func claimNext(_ tenant: String) async throws -> Int64 {
            let id = try await store.submit(Submission(request: Submission.prompt("hi \(tenant)"), tenant: tenant))
            let claimed = try await store.claim(worker: "setup", freeSlots: 1, backgroundSlots: 0, lease: .seconds(300))
            guard claimed.map(\.id) == [id] else { throw FixtureError("claimed \(claimed.map(\.id)), not \(id)") }
            return id
        }
        var finished: [String: (failed: Int64, succeeded: Int64)] = [:]
        for tenant in ["acme", "globex"] {
            var ids: [Int64] = []
            for status in ["failed", "succeeded"] {
                let id = try await claimNext(tenant)
                try await pool.query(
                    """
                    SELECT * FROM switchyard.complete('setup', jsonb_build_array(jsonb_build_object(
                        'id', $1::bigint, 'attempt', 1, 'kind', 'result', 'status', $2::text,
                        'model', CASE WHEN $2 = 'succeeded' THEN 'm' END)))
                    """,
                    [id, status])
                ids.append(id)
            }
            finished[tenant] = (ids[0], ids[1])
        }
        var running: [String: Int64] = [:]
        for tenant in ["acme", "globex"] { running[tenant] = try await claimNext(tenant) }
        var jobs: [String: TenantJobs] = [:]
        for tenant in ["acme", "globex"] {
            let queued = try await store.submit(Submission(request: Submission.prompt("queued"), tenant: tenant))
            jobs[tenant] = TenantJobs(
                queued: queued, running: running[tenant]!, failed: finished[tenant]!.failed,
                succeeded: finished[tenant]!.succeeded)
        }
        return jobs
    }

    /// Roles for the tests: one per tenant, one acting for both, a gateway ('*'), and one
    /// mapped to nothing.
    static func withTenantRoles<T>(
        _ pool: PostgresPool, login: Bool = false, _ body: ([String: String]) async throws -> T
    ) async throws -> T {
        let groups = [
            "acme": "switchyard_submitter", "globex": "switchyard_submitter", "both": "switchyard_submitter",
            "gateway": "switchyard_submitter", "nobody": "switchyard_submitter",
        ]
        return try await SecurityFixtures.withRoles(pool, groups, login: login) { roles in
            try await SecurityFixtures.map(
                pool,
                [
                    (roles["acme"]!, "acme"), (roles["globex"]!, "globex"), (roles["both"]!, "acme"),
                    (roles["both"]!, "globex"), (roles["gateway"]!, "*"),
                ])
            return try await body(roles)
        }
    }

    /// The tenants of the rows a role sees in a table.
    static func tenants(
        _ session: RoleSession, _ role: String, tenant: String? = nil, in table: String
    ) async throws -> [String] {
        let rows = try await session.attempt(
            as: role, tenant: tenant, "SELECT DISTINCT tenant FROM switchyard.\(table) ORDER BY 1"
        ).get()
        return try rows.map { try $0[0].decode(String?.self) ?? "(none)" }
    }

    @Test("reads: jobs, results, idempotency keys, job_status and result show a role only its tenants' jobs")
    func reads() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let jobs = try await Self.makeJobs(pool)
            for tenant in ["acme", "globex"] {
                try await QueueStore(pool: pool).submit(
                    Submission(request: Submission.prompt("keyed"), idempotencyKey: "turn-1", tenant: tenant))
            }
            try await Self.withTenantRoles(pool) { roles in
                try await pool.withConnection { connection in
                    let session = RoleSession(connection: connection)
                    let (acme, globex, both, gateway, nobody) =
                        (roles["acme"]!, roles["globex"]!, roles["both"]!, roles["gateway"]!, roles["nobody"]!)
                    for table in ["jobs", "results", "idempotency_keys"] {
                        #expect(try await Self.tenants(session, acme, in: table) == ["acme"])
                        #expect(try await Self.tenants(session, globex, in: table) == ["globex"])
                        #expect(try await Self.tenants(session, both, in: table) == ["acme", "globex"])
                        #expect(try await Self.tenants(session, both, tenant: "globex", in: table) == ["globex"])
                        #expect(try await Self.tenants(session, gateway, in: table) == [])
                        #expect(try await Self.tenants(session, gateway, tenant: "acme", in: table) == ["acme"])
                        #expect(try await Self.tenants(session, nobody, in: table) == [])
                        // Naming a tenant the role does not act for shows nothing, not the other's rows.
                        #expect(try await Self.tenants(session, acme, tenant: "globex", in: table) == [])
                        #expect(try await Self.tenants(session, "switchyard_admin", in: table) == ["acme", "globex"])
                    }
                    for (tenant, role) in [("acme", acme), ("globex", globex)] {
                        let mine = jobs[tenant]!
                        let theirs = jobs[tenant == "acme" ? "globex" : "acme"]!
                        for id in theirs.all {
                            let status = try await session.attempt(as: role, "SELECT switchyard.job_status($1)", [id])
                                .get()
                            #expect(try status.scalar(String?.self) == nil, "\(role) sees the status of job \(id)")
                            let result = try await session.attempt(
                                as: role, "SELECT * FROM switchyard.result($1)", [id]
                            ).get()
                            #expect(result.isEmpty, "\(role) reads the result of job \(id)")
                        }
                        let expected = ["queued", "running", "failed", "succeeded"]
                        for (id, want) in zip(mine.all, expected) {
                            let status = try await session.attempt(as: role, "SELECT switchyard.job_status($1)", [id])
                                .get()
                            #expect(try status.scalar(String?.self) == want)
                        }
                        let own = try await session.attempt(
                            as: role, "SELECT * FROM switchyard.result($1)", [mine.succeeded]
                        ).get()
                        #expect(own.count == 1)
                    }
                }
            }
        }
    }

    @Test("writes: submit, INSERT, cancel, retry and feedback never cross tenants")
    func writes() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let jobs = try await Self.makeJobs(pool)
            try await Self.withTenantRoles(pool) { roles in
                try await pool.withConnection { connection in
                    let session = RoleSession(connection: connection)
                    let (acme, both, gateway, nobody) = (
                        roles["acme"]!, roles["both"]!, roles["gateway"]!, roles["nobody"]!
                    )
                    let globexJobs = jobs["globex"]!

                    // Submitting: for its own tenant only, whatever the row or the session says.
                    let refusals: [(role: String, tenant: String?, sql: String, fragment: String)] = [
                        (
                            acme, nil, "SELECT switchyard.submit('\(Self.hello)', tenant => 'globex')",
                            "may not submit for tenant 'globex'"
                        ),
                        (
                            acme, nil,
                            "INSERT INTO switchyard.jobs (request, tenant) VALUES ('\(Self.hello)', 'globex')",
                            "may not submit for tenant 'globex'"
                        ),
                        (
                            acme, "globex", "SELECT switchyard.submit('\(Self.hello)')",
                            "may not submit for tenant 'globex'"
                        ),
                        (
                            both, nil, "SELECT switchyard.submit('\(Self.hello)')",
                            "acts for several tenants (acme, globex)"
                        ),
                        (
                            both, "acme", "SELECT switchyard.submit('\(Self.hello)', tenant => 'globex')",
                            "does not match this session's switchyard.tenant"
                        ),
                        (
                            gateway, nil, "SELECT switchyard.submit('\(Self.hello)')",
                            "acts for whichever tenant it names (it is mapped to *), and this job names none"
                        ),
                        (nobody, nil, "SELECT switchyard.submit('\(Self.hello)')", "acts for no tenant"),
                    ]
                    for refusal in refusals {
                        let outcome = try await session.attempt(as: refusal.role, tenant: refusal.tenant, refusal.sql)
                        guard case .failure(let error) = outcome else {
                            Issue.record("\(refusal.role) could run \(refusal.sql)")
                            continue
                        }
                        #expect(error.sqlState == .insufficientPrivilege, "\(error)")
                        #expect(error.message.contains(refusal.fragment), "\(error)")
                        #expect(error.hint?.isEmpty == false)
                    }
                    // A gateway names the tenant in the row, as in submit(…, tenant => …); it reads the
                    // job back only once it has chosen that tenant for the session.
                    _ = try await session.attempt(
                        as: gateway, tenant: nil,
                        "INSERT INTO switchyard.jobs (request, tenant) VALUES ('\(Self.hello)', 'globex')"
                    ).get()
                    let gatewayStar = try await session.attempt(
                        as: gateway, tenant: nil, "INSERT INTO switchyard.jobs (request, tenant) VALUES ('\(Self.hello)', '*')")
                    guard case .failure = gatewayStar else {
                        Issue.record("a gateway could submit for tenant '*'")
                        return
                    }
                    let accepted: [(role: String, tenant: String?, expected: String)] = [
                        (acme, nil, "acme"), (both, "globex", "globex"), (gateway, "globex", "globex"),
                    ]
                    for (role, tenant, expected) in accepted {
                        let rows = try await session.attempt(
                            as: role, tenant: tenant,
                            "INSERT INTO switchyard.jobs (request) VALUES ('\(Self.hello)') RETURNING tenant"
                        ).get()
                        #expect(try rows.scalar(String.self) == expected)
                    }

                    // Cancelling, retrying, rating another tenant's job: as if it did not exist.
                    for id in globexJobs.all {
                        let cancelled = try await session.run(as: acme, "SELECT switchyard.cancel($1)", [id])
                        #expect(try cancelled.scalar(String.self) == "not_found")
                    }
                    let untouched = try await pool.query(
                        """
                        SELECT count(*) FROM switchyard.jobs j WHERE id = ANY($1) AND NOT cancel_requested
                            AND NOT EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = j.id)
                        """,
                        [[globexJobs.queued, globexJobs.running]]
                    ).scalar(Int.self)
                    #expect(untouched == 2)
                    // Another tenant's requests to cancel are not to be read (a review read them all).
                    try await pool.query("INSERT INTO switchyard.cancel_requests (job_id) VALUES ($1)", [globexJobs.running])
                    let requests = try await session.run(as: acme, "SELECT count(*) FROM switchyard.cancel_requests")
                    #expect(try requests.scalar(Int.self) == 0)
                    try await pool.query("DELETE FROM switchyard.cancel_requests")
                    for (sql, id) in [
                        ("SELECT switchyard.retry($1)", globexJobs.failed),
                        ("SELECT switchyard.feedback($1, 10)", globexJobs.succeeded),
                    ] {
                        guard case .failure(let error) = try await session.attempt(as: acme, sql, [id]) else {
                            Issue.record("acme could run \(sql) on globex's job")
                            continue
                        }
                        #expect(error.sqlState == SQLState("P0002"))
                        #expect(error.message == "job \(id) not found")
                    }
                    // Its own: all work.
                    let acmeJobs = jobs["acme"]!
                    #expect(
                        try await session.run(as: acme, "SELECT switchyard.cancel($1)", [acmeJobs.queued]).scalar(
                            String.self) == "cancelled")
                    #expect(
                        try await session.run(as: acme, "SELECT switchyard.cancel($1)", [acmeJobs.running]).scalar(
                            String.self) == "cancelling")
                    let retried = try await session.run(as: acme, "SELECT switchyard.retry($1)", [acmeJobs.failed])
                        .scalar(Int64.self)
                    #expect(
                        try await pool.query("SELECT tenant FROM switchyard.jobs WHERE id = $1", [retried]).scalar(
                            String.self) == "acme")
                    _ = try await session.run(as: acme, "SELECT switchyard.feedback($1, 90)", [acmeJobs.succeeded])
                    #expect(try await pool.query("SELECT count(*) FROM switchyard.feedback").scalar(Int.self) == 1)

                    // Idempotency keys are per tenant: the same key in two tenants is two jobs.
                    let keyed = "SELECT switchyard.submit('\(Self.hello)', idempotency_key => 'order-7')"
                    let first = try await session.run(as: acme, keyed).scalar(Int64.self)
                    let other = try await session.run(as: roles["globex"]!, keyed).scalar(Int64.self)
                    let again = try await session.run(as: acme, keyed).scalar(Int64.self)
                    #expect(first != other)
                    #expect(again == first)
                }
            }
        }
    }

    @Test("a tenant's role retries its failed job once (again, the same retry); another tenant's is not found")
    func retryOnceAsTenant() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            let jobs = try await Self.makeJobs(pool)
            try await Self.withTenantRoles(pool, login: true) { roles in
                let acme = PostgresPool(try SecurityFixtures.configuration(configuration, as: roles["acme"]!))
                defer { Task { await acme.close() } }
                let store = QueueStore(pool: acme)
                let retry = try await store.retry(jobs["acme"]!.failed)
                #expect(try await store.retry(jobs["acme"]!.failed) == retry)
                let tenant = try await pool.query("SELECT tenant FROM switchyard.jobs WHERE id = $1", [retry])
                    .scalar(String.self)
                #expect(tenant == "acme")
                let theirs = await #expect(throws: QueueError.self) { try await store.retry(jobs["globex"]!.failed) }
                #expect(theirs?.code == .notFound)
            }
        }
    }

    @Test("the CLI as a tenant's login role: another tenant's job is not found, submitting as it is refused")
    func commandLine() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            let jobs = try await Self.makeJobs(pool)
            try await Self.withTenantRoles(pool, login: true) { roles in
                let url = SecurityFixtures.connectionString(configuration, as: roles["acme"]!)
                let binary = WorkerProcess.binary("dispatcher")
                func dispatcher(_ arguments: [String]) async throws -> (status: Int32, output: String) {
                    try await BlockingWork.run { try ChildProcess.run(binary, arguments + ["--database-url", url]) }
                }
                let theirs = try await dispatcher(["result", String(jobs["globex"]!.succeeded)])
                #expect(theirs.status == 6, "\(theirs.output)")
                let mine = try await dispatcher(["result", String(jobs["acme"]!.succeeded), "--json"])
                #expect(mine.status == 0, "\(mine.output)")
                // A failed job has no answer: --content says so (it printed an empty line).
                let failed = try await dispatcher(["result", String(jobs["acme"]!.failed), "--content"])
                #expect(failed.status == 3 && failed.output.contains("failed") && failed.output.contains("it has no answer"),
                        "\(failed.output)")
                let cancel = try await dispatcher(["cancel", String(jobs["globex"]!.queued)])
                #expect(cancel.status == 6 && cancel.output.contains("not found"), "\(cancel.output)")
                // A job cancelled before is not cancelled again: exit 3, as for any finished job.
                let first = try await dispatcher(["cancel", String(jobs["acme"]!.queued)])
                #expect(first.status == 0 && first.output.contains("  cancelled"), "\(first.output)")
                let again = try await dispatcher(["cancel", String(jobs["acme"]!.queued)])
                #expect(again.status == 3 && again.output.contains("already cancelled"), "\(again.output)")
                // A submitter may not read the fleet's state: status says so, and exits 1.
                let status = try await dispatcher(["status"])
                #expect(status.status == 1 && status.output.contains("unavailable"), "\(status.output)")
                // An operator's command says which role it needs.
                let prices = try await dispatcher(["models", "list"])
                #expect(prices.status == 1 && prices.output.contains("need a member of switchyard_admin"), "\(prices.output)")
                // The ratings of every tenant are an operator's to read; the hint says so.
                let ratings = try await dispatcher(["feedback", "--list"])
                #expect(ratings.status == 1 && ratings.output.contains("feedback --list) need a member of switchyard_admin"),
                        "\(ratings.output)")
                // `wait` says it as `cancel` does (its --json keeps the status `not_found`).
                let wait = try await dispatcher(["wait", String(jobs["globex"]!.queued)])
                #expect(wait.status == 6 && wait.output.contains("\(jobs["globex"]!.queued)  not found"), "\(wait.output)")
                let refused = try await dispatcher(["submit", "--prompt", "hi", "--tenant", "globex"])
                #expect(refused.status != 0)
                #expect(refused.output.contains("may not submit for tenant 'globex'"), "\(refused.output)")
                let submitted = try await dispatcher(["submit", "--prompt", "hi"])
                #expect(submitted.status == 0, "\(submitted.output)")
                let id = Int64(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines))
                let tenant = try await pool.query("SELECT tenant FROM switchyard.jobs WHERE id = $1", [id]).scalar(
                    String.self)
                #expect(tenant == "acme")
                #expect(
                    try await pool.query(
                        """
                        SELECT cancel_requested OR EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = j.id)
                        FROM switchyard.jobs j WHERE id = $1
                        """,
                        [jobs["globex"]!.queued]
                    ).scalar(Bool.self) == false)

                // A gateway ('*') cannot read back the jobs it submits without naming a tenant: a
                // keyed file run again said 2 new jobs where it made none (a review). It says it
                // cannot tell.
                let gateway = SecurityFixtures.connectionString(configuration, as: roles["gateway"]!)
                let file = try Scratch.makeDirectory("gateway-keys").appendingPathComponent("jobs.jsonl")
                try Data(
                    (1...2).map { #"{"request": {"messages": [{"role": "user", "content": "hi"}]}, "tenant": "acme", "idempotency_key": "g\#($0)"}"# }
                        .joined(separator: "\n").utf8
                ).write(to: file)
                for run in 1...2 {
                    let (status, output) = try await BlockingWork.run {
                        try ChildProcess.run(binary, ["submit", "--file", file.path, "--json", "--database-url", gateway])
                    }
                    #expect(status == 0, "\(output)")
                    let summary = try JSONValue(parsing: output)
                    #expect(summary["new_jobs"] == .null && summary["jobs"] == 2, "run \(run): \(output)")
                }

                // An operator's walkthrough: `submit --tenant acme --wait` as a gateway said "not
                // found" of the job it had just submitted (it would have been submitted again).
                // --tenant reads as that tenant; no worker runs here, so the wait times out on it.
                func asGateway(_ arguments: [String]) async throws -> (status: Int32, output: String) {
                    try await BlockingWork.run { try ChildProcess.run(binary, arguments + ["--database-url", gateway]) }
                }
                let waited = try await asGateway(["submit", "--prompt", "hi", "--tenant", "acme", "--wait", "--timeout", "1s"])
                #expect(waited.status == 4 && waited.output.contains("queued") && !waited.output.contains("not found"),
                        "\(waited.output)")
                let done = String(jobs["acme"]!.succeeded)
                let unnamed = try await asGateway(["result", done])
                #expect(unnamed.status == 6 && unnamed.output.contains("names the tenant with --tenant NAME"), "\(unnamed.output)")
                #expect(try await asGateway(["result", done, "--tenant", "acme"]).status == 0)
                #expect(try await asGateway(["wait", done, "--tenant", "acme"]).status == 0)
                // Naming a tenant only narrows: another's job stays out of sight.
                #expect(try await asGateway(["result", done, "--tenant", "globex"]).status == 6)
            }
        }
    }
}
