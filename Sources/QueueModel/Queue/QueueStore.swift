import Foundation
import Postgres

/// The queue's SQL operations. Each is one statement (one round trip), whatever the batch size.
public struct QueueStore: Sendable {
    public let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    // MARK: Submission

    private static let submitSQL = """
        SELECT switchyard.submit($1::jsonb, $2, $3, $4, coalesce($5::timestamptz, now()), $6::timestamptz,
                                 coalesce($7::integer, 3), $8, $9, $10::jsonb)
        """

    /// Submits one job and returns its id (an earlier job's id for a repeated idempotency key).
    /// - Throws: `QueueError.invalidInput` with the server's message when validation refuses it.
    public func submit(_ submission: Submission) async throws -> Int64 {
        do {
            return try await pool.query(Self.submitSQL, Self.binds(submission)).scalar(Int64.self)
        } catch let error as PostgresError {
            throw QueueError(submissionError: error)
        }
    }

    /// The database's clock now.
    public func databaseNow() async throws -> Date {
        try await pool.query("SELECT now()").scalar(Date.self)
    }

    /// Of `ids`, those of jobs created before `instant` (by the database's clock): a submission
    /// whose idempotency key named a job from before, not a new one. Finished or not. `seen`: the
    /// ids this role could read at all (a gateway role's row security may hide its own jobs, and
    /// then which are new cannot be told). `tenant`: read as that tenant (`switchyard.tenant`, for
    /// this transaction alone): a `*` gateway's jobs of a tenant it named are hidden from it else.
    public func createdBefore(
        _ instant: Date, among ids: [Int64], tenant: String? = nil
    ) async throws -> (earlier: Set<Int64>, seen: Set<Int64>) {
        guard !ids.isEmpty else { return ([], []) }
        let sql = """
            SELECT id, created_at < $2 AS earlier FROM switchyard.jobs WHERE id = ANY ($1)
            UNION ALL
            SELECT job_id, created_at < $2 FROM switchyard.results WHERE job_id = ANY ($1)
            """
        let rows =
            if let tenant {
                try await pool.withTransaction { connection in
                    try await connection.query("SELECT set_config('switchyard.tenant', $1, true)", [tenant])
                    return try await connection.query(sql, [ids, instant])
                }
            } else {
                try await pool.query(sql, [ids, instant])
            }
        var earlier: Set<Int64> = []
        var seen: Set<Int64> = []
        for row in rows {
            let id = try row.decode("id", as: Int64.self)
            seen.insert(id)
            if try row.decode("earlier", as: Bool.self) { earlier.insert(id) }
        }
        return (earlier, seen)
    }

    /// Submits many jobs in one statement. When the server refuses any of them, none of the batch
    /// is stored, and this says which one (so the caller can resubmit the others).
    /// - Returns: the ids, in order.
    public func submit(batch: [Submission]) async throws -> [Int64] {
        if batch.isEmpty { return [] }
        let items: [JSONValue] = batch.map { submission in
            var object: [String: JSONValue] = [
                "request": submission.request, "priority": .string(submission.priority.rawValue),
                "metadata": submission.metadata,
            ]
            if let value = submission.taskClass { object["task_class"] = .string(value) }
            if let value = submission.affinityKey { object["affinity_key"] = .string(value) }
            if let value = submission.runAt { object["run_at"] = .string(value.postgresText) }
            if let value = submission.deadline { object["deadline"] = .string(value.postgresText) }
            if let value = submission.maxAttempts { object["max_attempts"] = .number(Double(value)) }
            if let value = submission.idempotencyKey { object["idempotency_key"] = .string(value) }
            if let value = submission.tenant { object["tenant"] = .string(value) }
            return .object(object)
        }
        do {
            let rows = try await pool.query(
                """
                SELECT switchyard.submit(x.request, x.priority, x.task_class, x.affinity_key,
                                         coalesce(x.run_at, now()), x.deadline, coalesce(x.max_attempts, 3),
                                         x.idempotency_key, x.tenant, coalesce(x.metadata, '{}'))
                FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(item, position),
                     jsonb_to_record(e.item) AS x(request jsonb, priority text, task_class text, affinity_key text,
                                                  run_at timestamptz, deadline timestamptz, max_attempts integer,
                                                  idempotency_key text, tenant text, metadata jsonb)
                ORDER BY e.position
                """,
                [JSONValue.array(items).jsonText]
            )
            return try rows.map { try $0[0].decode(Int64.self) }
        } catch let error as PostgresError where !error.sentNothing {
            throw QueueError(submissionError: error)
        }
    }

    static func binds(_ submission: Submission) -> [(any PostgresEncodable)?] {
        [
            submission.request.jsonText, submission.priority.rawValue, submission.taskClass, submission.affinityKey,
            submission.runAt, submission.deadline, submission.maxAttempts, submission.idempotencyKey,
            submission.tenant, submission.metadata.jsonText,
        ]
    }

    // MARK: Claims, leases, write-back

    /// Claims up to `freeSlots` jobs, interactive first, background only into `backgroundSlots`,
    /// each partition read from after its position in `cursor`, passing over `passedOn` (jobs this
    /// worker put back for another to run, sql/0098).
    public func claim(
        worker: String, freeSlots: Int, backgroundSlots: Int, lease: Duration,
        after cursor: ClaimCursor = ClaimCursor(), passedOn: [Int64] = []
    ) async throws -> [Job] {
        // Whether each job's tenant is capped (sql/0096): asked of jobs with a tenant only. The
        // models that failed this attempt on another worker (one that passed the job on): read of
        // jobs with a trail only.
        let rows = try await pool.query(
            """
            SELECT \(Job.columns), CASE WHEN tenant IS NULL THEN false ELSE switchyard.tenant_is_capped(tenant) END AS tenant_capped,
                   CASE WHEN attempts = '[]' THEN NULL
                        ELSE (SELECT string_agg(DISTINCT e->>'model', ' ') FROM jsonb_array_elements(attempts) e
                              WHERE (e->>'attempt')::numeric = attempt AND e->>'worker' IS DISTINCT FROM $1
                                AND e->>'outcome' IN ('error', 'timeout', 'quota_exhausted', 'unsupported',
                                                      'context_length'))
                   END AS failed_elsewhere
            FROM switchyard.claim($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            [
                worker, freeSlots, backgroundSlots, lease.seconds, cursor.interactive?.runAt, cursor.interactive?.id,
                cursor.background?.runAt, cursor.background?.id, passedOn.isEmpty ? nil : passedOn,
            ],
            prepared: true
        )
        return try rows.map { row in
            var job = try Job(row: row)
            job.tenantCapped = try row.decode("tenant_capped", as: Bool.self)
            if let failed = try row.decode("failed_elsewhere", as: String?.self) {
                job.failedElsewhere = Set(failed.split(separator: " ").map(String.init))
            }
            return job
        }
    }

    /// Jobs this worker process leased and does not hold: a claim that committed while its
    /// answer was lost (the connection dropped as the server restarted) leased them, and nobody
    /// runs them; left alone, they waited out the lease and were rescued with an attempt spent.
    /// Only those claimed since this process registered: an earlier process under the same id
    /// (one that died on a job) leaves its jobs to the rescue, which spends their attempt.
    public func unheldLeases(worker: WorkerIdentity, holding: [Int64]) async throws -> [Job] {
        try await pool.query(
            """
            SELECT \(Job.columns) FROM switchyard.jobs
            WHERE lease_owner = $1 AND NOT (id = ANY ($2::bigint[]))
              AND claimed_at >= (SELECT w.started_at FROM switchyard.workers w
                                 WHERE w.id = $1 AND w.instance IS NOT DISTINCT FROM $3)
            """,
            [worker.id, holding, worker.instance]
        ).map(Job.init(row:))
    }

    /// The process registered under `id` whose heartbeat is younger than its lease (or `lease`,
    /// the longer): a worker that may be running under this id now.
    public func liveRegistration(
        id: String, lease: Duration
    ) async throws -> (hostname: String?, pid: Int32?, age: Double, lease: Double)? {
        let rows = try await pool.query(
            """
            SELECT hostname, pid, extract(epoch FROM now() - heartbeat_at)::double precision AS age,
                   greatest($2, coalesce(lease_seconds, 0)) AS lease
            FROM switchyard.workers
            WHERE id = $1 AND heartbeat_at > now() - make_interval(secs => greatest($2, coalesce(lease_seconds, 0)))
            """,
            [id, lease.seconds]
        )
        guard let row = rows.first else { return nil }
        return (
            try row.decode("hostname", as: String?.self), try row.decode("pid", as: Int32?.self), try row.decode("age"),
            try row.decode("lease")
        )
    }

    /// Deletes a stopping worker's row, if it is still this process's (not a successor's).
    public func deregister(_ worker: WorkerIdentity) async throws {
        try await pool.query(
            "DELETE FROM switchyard.workers WHERE id = $1 AND instance IS NOT DISTINCT FROM $2",
            [worker.id, worker.instance])
    }

    /// Renews the leases a worker holds and records its heartbeat.
    /// - Parameter held: the jobs the worker runs, with their attempt numbers.
    /// - Returns: the jobs it still holds, and whether each was asked to cancel. A job left out
    ///   was taken away from the worker (its lease expired and it was rescued).
    /// What the heartbeat answers a process whose worker id another live process has taken.
    public static let idTakenOver = SQLState("SWI01")

    /// - Parameter takeOver: true at start, after the twin check: the row becomes this process's
    ///   whoever's it was. Afterwards a row another live process has taken makes the heartbeat
    ///   throw a `PostgresError` with SQLSTATE `QueueStore.idTakenOver`.
    public func heartbeat(
        worker: WorkerIdentity, held: [(id: Int64, attempt: Int)], lease: Duration, takeOver: Bool = true
    ) async throws -> [Int64: Bool] {
        let rows = try await pool.query(
            """
            SELECT job_id, cancel_requested
            FROM switchyard.heartbeat($1, $2::bigint[], $3::integer[], $4, $5, $6, $7, $8, $9, $10)
            """,
            [
                worker.id, held.map(\.id), held.map(\.attempt), lease.seconds, worker.concurrency, worker.hostname,
                Int(worker.pid), worker.version, worker.instance, takeOver,
            ]
        )
        var result: [Int64: Bool] = [:]
        for row in rows { result[try row.decode("job_id")] = try row.decode("cancel_requested", as: Bool.self) }
        return result
    }

    /// Notes the models this worker process skips, with why (`skipped_models` in
    /// `switchyard.worker_status`, for status), in place of what it noted before.
    /// - Returns: false when it could not, without waiting: another session holds the worker's
    ///   row, or the worker has none.
    @discardableResult
    public func noteSkippedModels(worker: WorkerIdentity, _ skipped: [String: String]) async throws -> Bool {
        try await pool.query(
            "SELECT switchyard.note_skipped_models($1, $2, $3::jsonb)",
            [worker.id, worker.instance, JSONValue.object(skipped.mapValues(JSONValue.string)).jsonText]
        ).scalar(Bool.self)
    }

    /// Writes a batch of outcomes, fenced on (job, worker, attempt).
    /// - Returns: what was written for each job written: the outcome's kind (`result`, `retry`,
    ///   `release`, `postpone`), or `cancelled` where a retry, postponement or release met a
    ///   cancel asked for while the attempt ran, and ended the job instead. The jobs left out had
    ///   lost their lease, and nothing was written for them.
    public func complete(worker: String, _ completions: [Completion]) async throws -> [Int64: String] {
        if completions.isEmpty { return [:] }
        let rows = try await pool.query(
            """
            SELECT job_id, kind FROM switchyard.complete(
                $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::integer[], $14::integer[], $15::numeric[],
                $16::numeric[], $17::numeric[], $18, $19, $20, $21)
            """,
            [worker] + Completion.columns(completions),
            prepared: true
        )
        var written: [Int64: String] = [:]
        for row in rows { written[try row[0].decode(Int64.self)] = try row[1].decode(String.self) }
        return written
    }

    /// Which of `worker`'s results are already written as such (the same job, attempt, status and
    /// error code): after a write-back whose connection was lost, the first try may have committed.
    public func resultsWritten(worker: String, _ completions: [Completion]) async throws -> Set<Int64> {
        let results = completions.filter { $0.kind == .result }
        guard !results.isEmpty else { return [] }
        let rows = try await pool.query(
            "SELECT switchyard.results_written($1, $2::bigint[], $3::integer[], $4::text[], $5::text[]) AS job_id",
            [
                worker, results.map(\.jobID), results.map(\.attempt), results.map { $0.status ?? "" },
                results.map { $0.error?["code"]?.stringValue ?? "" },
            ])
        return Set(try rows.map { try $0.decode("job_id", as: Int64.self) })
    }

    // MARK: Housekeeping

    /// Takes or renews the housekeeper's tenure: true when `worker` keeps house for `tenure` from
    /// now (nobody held it, its holder's ran out, or it was already this worker's).
    public func keepHouse(worker: String, tenure: Duration) async throws -> Bool {
        try await pool.query("SELECT switchyard.keep_house($1, $2)", [worker, tenure.seconds]).scalar(Bool.self)
    }

    /// Whether the fleet went silent together: of the other workers seen in the last ten minutes
    /// and started before `newcomer` ago (workers starting now, as this one, prove nothing), at
    /// least one, and at least half, let their heartbeat lapse. As in an outage the database lived
    /// through (their first heartbeats after it land over several seconds), or most of the fleet
    /// died; one dead worker among live ones is not.
    public func fleetWentSilent(except worker: String, newcomer: Duration) async throws -> Bool {
        try await pool.query(
            """
            SELECT count(*) FILTER (WHERE o.lapsed) > 0 AND count(*) FILTER (WHERE o.lapsed) * 2 >= count(*)
            FROM (SELECT w.heartbeat_at + make_interval(secs => coalesce(w.lease_seconds, 30)) <= now() AS lapsed
                  FROM switchyard.workers w
                  WHERE w.id <> $1 AND w.heartbeat_at > now() - interval '10 minutes'
                    AND w.started_at <= now() - make_interval(secs => $2)) o
            """, [worker, newcomer.seconds]
        ).scalar(Bool.self)
    }

    /// Ends `worker`'s tenure as housekeeper, if it holds it, so another worker takes over at once.
    public func standDown(worker: String) async throws {
        try await pool.query("SELECT switchyard.stand_down($1)", [worker])
    }

    /// How many workers sent a heartbeat in the last 30 s; nil for a role that may not read the
    /// workers table (a submitter: asked anyway, the server logged a permission error each time).
    public func liveWorkers() async throws -> Int? {
        guard try await pool.query("SELECT has_table_privilege('switchyard.workers', 'SELECT')").scalar(Bool.self)
        else { return nil }
        return try await pool.query(
            "SELECT count(*) FROM switchyard.workers WHERE heartbeat_at > now() - interval '30 seconds'"
        ).scalar(Int.self)
    }

    /// Requeues (or ends) jobs whose lease expired, and says what each was.
    /// - Parameters:
    ///   - worker: the calling housekeeper's worker id and instance: what that process claimed
    ///     since it registered is left to it (frozen past its lease, a worker woke and rescued its
    ///     own running jobs before its heartbeat renewed them; `sql/0060`). Nil: no caller.
    public func rescueExpired(limit: Int = 1000, worker: (id: String, instance: String)? = nil) async throws -> [Rescue] {
        // Joined to the jobs as they were when the statement began (its snapshot predates the
        // function's changes), so each rescue can name the lost attempt and its worker. Each
        // rescued job is looked up by key (the LIMIT keeps the planner from turning the lookup
        // into a join). The plain join was estimated from the never-analyzed partitioned parent
        // at 500,000 rows: past the JIT thresholds, so with 100,000 queued every housekeeping
        // round compiled it, 265 ms of its 290–530 ms, with nothing to rescue. This one plans
        // at a cost of about 10,000, a tenth of `jit_above_cost`: 2 ms.
        let rows = try await pool.query(
            """
            SELECT r.job_id, r.outcome, j.attempt, j.lease_owner, j.model
            FROM switchyard.rescue_expired($1, $2, $3) r
            LEFT JOIN LATERAL (
                SELECT j.attempt, j.lease_owner,
                       (SELECT e ->> 'model' FROM jsonb_array_elements(j.attempts) WITH ORDINALITY AS t(e, n)
                        WHERE e ? 'model' ORDER BY n DESC LIMIT 1) AS model
                FROM switchyard.jobs j WHERE j.id = r.job_id LIMIT 1
            ) j ON true
            """,
            [limit, worker?.id, worker?.instance]
        )
        return try rows.map { row in
            Rescue(
                job: try row.decode("job_id"), outcome: try row.decode("outcome"),
                attempt: try row.decode("attempt", as: Int?.self),
                owner: try row.decode("lease_owner", as: String?.self),
                model: try row.decode("model", as: String?.self)
            )
        }
    }

    /// A job whose lease expired, put back in the queue (`requeued`) or ended (`failed`), with the
    /// attempt that was lost, the worker that held it and the model it last called.
    public struct Rescue: Sendable, Hashable {
        public var job: Int64
        public var outcome: String
        public var attempt: Int?
        public var owner: String?
        public var model: String?
    }

    /// Ends queued jobs whose deadline passed. Returns how many.
    public func expireOverdue(limit: Int = 1000) async throws -> Int {
        try await pool.query("SELECT switchyard.expire_overdue($1)", [limit]).scalar(Int.self)
    }

    /// Analyzes the job partitions whose statistics are far from what they hold (a bulk submit
    /// into an empty queue); returns their names. See `sql/0017_queue_statistics.sql`.
    public func analyzeStalePartitions() async throws -> [String] {
        try await pool.query("SELECT switchyard.analyze_stale_partitions()").map { try $0[0].decode(String.self) }
    }

    /// Creates the daily results partitions for today and the next days.
    public func ensureResultPartitions(daysAhead: Int = 3) async throws -> Int {
        try await pool.query("SELECT switchyard.ensure_result_partitions($1)", [daysAhead]).scalar(Int.self)
    }

    /// One step of pruning, committed on its own: one partition dropped, or up to `batch` rows of
    /// results_default or keys removed; nil once there is nothing left. A step waits at most
    /// `lockTimeout` for its locks (a DROP waiting behind a long reader holds every writer of
    /// results behind it), then fails with `lockNotAvailable`.
    public func pruneStep(olderThan: Duration, batch: Int = 10_000, lockTimeout: Duration) async throws
        -> (item: String, removed: Int)?
    {
        try await pool.query(
            "SELECT item, removed FROM switchyard.prune_step(make_interval(secs => $1), $2, make_interval(secs => $3))",
            [olderThan.seconds, batch, lockTimeout.seconds]
        ).first.map { (try $0[0].decode(String.self), try $0[1].decode(Int.self)) }
    }

    // MARK: Reading and controlling jobs

    /// queued, scheduled, running, cancelling, succeeded, failed, cancelled, expired; nil if unknown.
    public func status(of job: Int64) async throws -> String? {
        try await pool.query("SELECT switchyard.job_status($1)", [job]).scalar(String?.self)
    }

    /// Statuses of many jobs at once (unknown ids are left out).
    public func statuses(of jobs: [Int64]) async throws -> [Int64: String] {
        let rows = try await pool.query(
            "SELECT id, switchyard.job_status(id) FROM unnest($1::bigint[]) AS id", [jobs]
        )
        var result: [Int64: String] = [:]
        for row in rows {
            if let status = try row[1].decode(String?.self) { result[try row[0].decode(Int64.self)] = status }
        }
        return result
    }

    /// Why a job in the queue is waiting: when it may run next, and the reason a worker put it
    /// back (a postponement, a wait for a model, the failure a retry follows), if one did.
    public struct Waiting: Sendable, Hashable {
        public var runAt: Date
        public var reason: String?
        /// A background job while background work is paused (`dispatcher background pause`): no
        /// worker claims it, whatever its run_at, until it is resumed.
        public var paused = false
        /// A background job while the claim gate is closed (no model within the price ceiling
        /// now): why, and when it opens next, as `switchyard.background_gate` says.
        public var held: String?
        /// A job held for its tenant's limits (`sql/0088`: paused, or its budget spent): why.
        /// `runAt` is then its own, from when it runs once released.
        public var tenantHold: String?
        /// A queued job whose tenant is at its caps (`sql/0096`): it runs as many jobs as its cap
        /// allows (it starts as they end), or has started as many as its rate allows now.
        public var tenantAtCap: TenantCap?

        public struct TenantCap: Sendable, Hashable {
            public var running: Int
            /// The cap on running jobs, when the tenant runs as many.
            public var maxRunning: Int?
            /// The rate, when the tenant may start none now.
            public var maxPerMinute: Int?

            public init(running: Int, maxRunning: Int?, maxPerMinute: Int?) {
                self.running = running
                self.maxRunning = maxRunning
                self.maxPerMinute = maxPerMinute
            }
        }
    }

    /// What `Waiting` says of each of `jobs` still in the queue (finished and unknown ids are left out).
    public func waiting(of jobs: [Int64]) async throws -> [Int64: Waiting] {
        let rows = try await pool.query(
            """
            SELECT j.id, j.priority, coalesce(j.held_run_at, j.run_at) AS run_at, j.waiting_reason,
                   CASE WHEN j.held_run_at IS NOT NULL
                        THEN coalesce(l.held_reason, 'its tenant is held (the housekeeper releases it within seconds)')
                   END AS tenant_hold,
                   l.max_running, l.max_per_minute,
                   switchyard.rate_tokens_now(l.max_per_minute, l.rate_tokens, l.rate_at) < 1 AS rate_spent,
                   CASE WHEN (l.max_running IS NOT NULL OR l.max_per_minute IS NOT NULL)
                             AND j.held_run_at IS NULL AND j.lease_owner IS NULL THEN
                       (SELECT count(*) FROM switchyard.jobs r WHERE r.tenant = j.tenant AND r.lease_owner IS NOT NULL)
                   END AS tenant_running
            FROM switchyard.jobs j LEFT JOIN switchyard.tenant_limits l ON l.tenant = j.tenant
            WHERE j.id = ANY ($1::bigint[])
            """, [jobs])
        var result: [Int64: Waiting] = [:]
        var background: [Int64] = []
        for row in rows {
            let id = try row.decode("id", as: Int64.self)
            var waiting = Waiting(
                runAt: try row.decode("run_at", as: Date.self),
                reason: try row.decode("waiting_reason", as: String?.self),
                tenantHold: try row.decode("tenant_hold", as: String?.self))
            if let running = try row.decode("tenant_running", as: Int?.self) {
                let cap = try row.decode("max_running", as: Int?.self).flatMap { running >= $0 ? $0 : nil }
                let rate = try row.decode("rate_spent", as: Bool?.self) == true ? try row.decode("max_per_minute", as: Int?.self) : nil
                if cap != nil || rate != nil {
                    waiting.tenantAtCap = Waiting.TenantCap(running: running, maxRunning: cap, maxPerMinute: rate)
                }
            }
            result[id] = waiting
            if try row.decode("priority", as: String.self) == Priority.background.rawValue { background.append(id) }
        }
        // The settings and the gate are an operator's and a worker's to read: a submitter's role
        // is not told (nor asked, which logged a permission error on the server each time).
        guard !background.isEmpty else { return result }
        let may = try? await pool.query(
            """
            SELECT has_table_privilege('switchyard.settings', 'SELECT') AS settings,
                   has_function_privilege('switchyard.background_gate(timestamptz)', 'EXECUTE') AS gate
            """)
        guard let may = may?.first, try may.decode("settings", as: Bool.self) else { return result }
        let policy = try? await BackgroundPolicy.load(pool)
        if policy?.paused == true {
            for id in background { result[id]?.paused = true }
        } else if try may.decode("gate", as: Bool.self), let gate = try? await BackgroundGate.check(pool), !gate.isOpen {
            // A job held back by the ceiling read "queued" alone until a worker had put it back.
            // A job a worker put back already says why (the same ceiling, with its next window).
            let held = background.filter { result[$0]?.reason == nil }
            var own: [Int64: String] = [:]
            if let policy { own = (try? await heldReasons(of: held, policy: policy)) ?? [:] }
            // The gate is the fleet's: it opens when some rule's model fits, which may not be this
            // job's (a docs walkthrough's job was promised 16:30 by another rule's window): a job's
            // own wait, as a worker would decide it now, where the catalog can be read.
            let fleet = gate.reason
                + (gate.nextOpenAt.map { "; the gate opens at \($0.readableUTC) for the first rule a model fits then" } ?? "")
            for id in held { result[id]?.held = own[id] ?? fleet }
        }
        return result
    }

    /// Why each of `jobs` (background, queued, held back by the closed gate) waits, as a worker
    /// would decide it now (`OffPeakPlanner`): its own rule's next cheap window, or that its
    /// deadline lets it run past the ceiling. A background walkthrough's jobs were told of another
    /// rule's window, seven hours before theirs.
    private func heldReasons(of jobs: [Int64], policy: BackgroundPolicy) async throws -> [Int64: String] {
        guard !jobs.isEmpty else { return [:] }
        let catalogStore = CatalogStore(pool: pool)
        let catalog = try await catalogStore.load()
        let planner = OffPeakPlanner(router: Router(catalog: catalog), policy: policy)
        let now = Date()
        var state = try await catalogStore.routingState()
        for (model, price) in PriceSchedule.offPeakPrices(catalog.models.map(PriceSchedule.init), at: now) {
            state[model].averagePricePer1K = price
        }
        let rows = try await pool.query(
            "SELECT \(Job.columns) FROM switchyard.jobs WHERE id = ANY ($1::bigint[]) AND lease_owner IS NULL", [jobs])
        var reasons: [Int64: String] = [:]
        for job in try rows.map(Job.init(row:)) {
            switch planner.decide(
                RoutingRequest(job: job), deadline: job.deadline, maxAttempts: job.maxAttempts, state: state, now: now)
            {
            case .postpone(_, let reason): reasons[job.id] = reason
            case .run(_, let escalation?): reasons[job.id] = escalation + "; it runs past the ceiling at the next claim"
            case .run(_, nil): break
            }
        }
        return reasons
    }

    /// The result row of a finished job as JSON, or nil while it is not finished (or unknown).
    public func result(of job: Int64) async throws -> JSONValue? {
        let text = try await pool.query("SELECT to_jsonb(r)::text FROM switchyard.result($1) r", [job])
            .scalar(String?.self)
        guard let text else { return nil }
        if let result = try? JSONValue(parsing: text) { return result }
        // A request no worker could read either (a number past ±1.8e308, which jsonb keeps), or
        // metadata nested deeper than the parser goes (stored before sql/0084): the result without
        // it, which says why the job failed, and still has its answer.
        var failure: (any Error)?
        for left in [["request"], ["metadata"], ["request", "metadata"]] {
            let rest = try await pool.query(
                "SELECT (to_jsonb(r) - $2::text[])::text FROM switchyard.result($1) r", [job, left]
            ).scalar(String?.self)
            guard let rest else { return nil }
            do {
                // Said, not dropped in silence (a review): which fields could not be read.
                guard case .object(var fields) = try JSONValue(parsing: rest) else { continue }
                fields["unreadable_fields"] = .array(left.map(JSONValue.string))
                return .object(fields)
            } catch {
                failure = error
            }
        }
        throw failure ?? QueueError(.database, "job \(job)'s result could not be read")
    }

    /// Cancels a job: `cancelled` (now, or before), `cancelling`, a final status it already had,
    /// or `not_found`.
    public func cancel(_ job: Int64) async throws -> String {
        try await pool.query("SELECT switchyard.cancel($1)", [job]).scalar(String.self)
    }

    /// Cancels jobs, each in its own transaction as if one by one, in one round trip: per job,
    /// in order, `cancelled`, `cancelling`, `already cancelled` (by an earlier cancel), another
    /// final status it already had, `not_found`, or the error that stopped that one.
    /// (`switchyard.cancel` answers `cancelled` for a job cancelled before too: its status is
    /// read first, in the same statement.)
    public func cancel(_ jobs: [Int64]) async throws -> [Result<String, any Error>] {
        let statements = jobs.map { job in
            PostgresStatement(
                """
                SELECT CASE WHEN s.before = 'cancelled' THEN 'already cancelled' ELSE switchyard.cancel(s.id) END
                FROM (SELECT $1::bigint AS id, switchyard.job_status($1) AS before) s
                """, [job])
        }
        return try await pool.pipelineSeparately(statements).map { outcome in
            outcome.flatMap { rows in Result { try rows.scalar(String.self) } }
        }
    }

    /// Resubmits a failed, cancelled or expired job; returns the new job's id.
    public func retry(_ job: Int64) async throws -> Int64 {
        do {
            return try await pool.query("SELECT switchyard.retry($1)", [job]).scalar(Int64.self)
        } catch let error as PostgresError {
            throw QueueError(submissionError: error)
        }
    }

    /// Resubmits jobs, each in its own transaction as if one by one, in one round trip: per job,
    /// in order, the new job's id (the earlier retry's, for a job retried before) or the error
    /// that stopped that one (`QueueError`, `.notFound` for an unknown job).
    public func retry(_ jobs: [Int64]) async throws -> [Result<Int64, any Error>] {
        let statements = jobs.map { PostgresStatement("SELECT switchyard.retry($1)", [$0]) }
        return try await pool.pipelineSeparately(statements).map { outcome in
            outcome.flatMap { rows in Result { try rows.scalar(Int64.self) } }.mapError { error in
                (error as? PostgresError).map { QueueError(submissionError: $0) } ?? error
            }
        }
    }

    /// The retry made of a job (by `retry`), and its status; nil when it was not retried (or the
    /// record of it was pruned).
    public func retryMade(of job: Int64, tenant: String?) async throws -> (id: Int64, status: String?)? {
        let row = try await pool.query(
            "SELECT r.id, switchyard.job_status(r.id) AS status FROM switchyard.retry_made($1, $2) AS r(id) WHERE r.id IS NOT NULL",
            [job, tenant]
        ).first
        return try row.map { (try $0.decode("id", as: Int64.self), try $0.decode("status", as: String?.self)) }
    }
}

/// Who a worker is, as its heartbeat records it.
public struct WorkerIdentity: Sendable {
    public var id: String
    public var concurrency: Int
    public var hostname: String
    public var pid: Int32
    public var version: String
    /// Drawn at each start: which process holds the id (a restarted container is the same host
    /// and pid 1 again).
    public var instance: String

    public init(
        id: String, concurrency: Int, hostname: String, pid: Int32, version: String,
        instance: String = UUID().uuidString
    ) {
        self.id = id
        self.concurrency = concurrency
        self.hostname = hostname
        self.pid = pid
        self.version = version
        self.instance = instance
    }
}

extension QueueError {
    /// Maps a server refusal to the caller's error: validation failures (22xxx, P0002) are
    /// invalid input with the server's own message and hint; the rest are database errors.
    init(submissionError error: PostgresError) {
        if error.sqlState == SQLState("P0002") {
            self.init(.notFound, error.message, hint: error.hint, sqlState: error.sqlState)
        } else if let state = error.sqlState, state.errorClass == "22" || state == .insufficientPrivilege {
            // 22xxx: the request broke a rule; 42501: this role may not submit for that tenant.
            self.init(.invalidInput, error.message, hint: error.hint, sqlState: state)
        } else {
            self.init(.database, error.message, hint: error.hint, sqlState: error.sqlState)
        }
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// The duration in seconds to the millisecond, for a log line (`1.735`, not
    /// `1.7349999999999999`).
    public var loggedSeconds: Double {
        (seconds * 1000).rounded() / 1000
    }
}
