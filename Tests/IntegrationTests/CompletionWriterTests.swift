import Foundation
import Postgres
import QueueModel
import Synchronization
import Testing

@testable import Worker

/// The batched write-back when the database refuses part of a batch: the rest is written, the
/// refused outcome ends as a failed result saying why, and the writer goes on.
///
/// The time limits catch a writer that hangs. They are five minutes: in a full run on a loaded
/// machine these tests took 52–66 s (2.6 s alone), one on CI went past a limit of one, and with
/// the machine's CPU contended (58% of a minute stalled) full runs went past three.
@Suite("Completion writer: outcomes the database refuses")
struct CompletionWriterTests {
    static let hello: JSONValue = ["messages": [["role": "user", "content": "hi"]]]

    /// Makes every write-back that stores a result matching `condition` fail with `sqlState`: a
    /// failure the database keeps giving while it is up. Dropping the trigger `name` ends it.
    static func failWriteBacks(
        _ pool: PostgresPool, named name: String, with sqlState: String, _ message: String,
        when condition: String = "true"
    ) async throws {
        try await pool.query(
            """
            CREATE FUNCTION public.\(name)() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '\(message)' USING ERRCODE = '\(sqlState)';
            END $$
            """)
        try await pool.query(
            """
            CREATE TRIGGER \(name) BEFORE INSERT ON switchyard.results FOR EACH ROW
            WHEN (\(condition)) EXECUTE FUNCTION public.\(name)()
            """)
    }

    /// Hands the writer a succeeded result for each job; `told` hears whether each was written.
    static func submitSucceeded(_ jobs: [Job], to writer: CompletionWriter, _ told: @escaping @Sendable (Bool) -> Void) {
        for job in jobs {
            writer.submit(Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded")) {
                told($0 != nil)
            }
        }
    }

    /// `count` jobs submitted and claimed by worker "w" for 30 s.
    static func claimed(_ count: Int, in store: QueueStore) async throws -> [Job] {
        for _ in 0..<count { _ = try await store.submit(Submission(request: hello)) }
        return try await store.claim(worker: "w", freeSlots: count, backgroundSlots: 0, lease: .seconds(30))
    }

    @Test("an outcome the fence refuses is a lost lease, and is counted as one")
    func refusedByTheFence() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Self.hello))
            // Claimed by another worker: this one's outcome for it is refused.
            let job = try #require(try await store.claim(worker: "other", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            let lost = Mutex(0)
            let writer = CompletionWriter(
                store: store, worker: "w", batchLimit: 10, logger: Logger(label: "t", level: .error) { _ in },
                leaseLost: { lost.withLock { $0 += 1 } })
            let running = Task { await writer.run() }
            let written = await writer.write(Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded"))
            writer.finish()
            await running.value
            #expect(!written)
            #expect(lost.withLock { $0 } == 1)
        }
    }

    @Test("a result the failed first try committed is not reported as a lost lease by the retry")
    func retryAfterACommittedTry() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            let outcome = Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded")
            // As if the writer's first try had committed and then lost its connection before the answer.
            #expect(try await store.complete(worker: "w", [outcome])[job.id] == "result")
            // Its first try fails (a lock held past the writer's statement timeout); the retry finds
            // the job gone, as it would after a committed first try.
            let locker = try await PostgresConnection.connect(configuration)
            defer { Task { await locker.close() } }
            try await locker.execute(script: "BEGIN; LOCK TABLE switchyard.jobs_interactive IN ACCESS EXCLUSIVE MODE")
            let database = try await pool.query("SELECT current_database()").scalar(String.self)
            // Long enough for the retry's write on a loaded machine (at 300 ms, a full run's retries
            // timed out too, and the writer gave the result up after 50 s).
            try await pool.query("ALTER DATABASE \"\(database)\" SET statement_timeout = '2s'")
            let writerPool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await writerPool.close() } }
            let lines = Mutex<[String]>([])
            let tries = Mutex<[Bool]>([])
            let writer = CompletionWriter(
                store: QueueStore(pool: writerPool), worker: "w", batchLimit: 10,
                logger: Logger(label: "t", level: .warning) { line in lines.withLock { $0.append(line) } },
                sleep: { _ in try await locker.execute(script: "COMMIT") },
                wrote: { failed in tries.withLock { $0.append(failed) } })
            let running = Task { await writer.run() }
            let written = await writer.write(outcome)
            writer.finish()
            await running.value
            #expect(written, "the result it wrote is reported written")
            // Each try is counted for the metrics, the failed one as failed (an outage's write-backs
            // were in no metric).
            #expect(tries.withLock { $0 } == [true, false])
            #expect(!lines.withLock { $0 }.contains { $0.contains("no longer holds the job's lease") }, "\(lines.withLock { $0 })")
            #expect(lines.withLock { $0 }.contains { $0.contains("could not write results; retrying") })

            // A result the housekeeper wrote in the worker's name (its lease ran out on the last
            // attempt) is not the worker's own outcome.
            let rescued = try await store.submit(Submission(request: Self.hello, maxAttempts: 1))
            let claimed = try #require(
                try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            #expect(claimed.id == rescued)
            try await pool.query("UPDATE switchyard.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", [rescued])
            _ = try await store.rescueExpired()
            let own = Completion(jobID: rescued, attempt: claimed.attempt, kind: .result, status: "succeeded")
            #expect(try await store.resultsWritten(worker: "w", [own]).isEmpty)
        }
    }

    @Test("one outcome the database cannot store does not hold up the batch: it ends failed, the others are written",
          .timeLimit(.minutes(5)))
    func refusedOutcome() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let jobs = try await Self.claimed(3, in: store)
            #expect(jobs.count == 3)
            let writer = CompletionWriter(store: store, worker: "w", batchLimit: 10, logger: Logger(label: "t", level: .error) { _ in })
            let running = Task { await writer.run() }
            // The second answer's token count is beyond the integer column: a value no retry can store.
            let written = await withTaskGroup(of: (Int64, Bool).self) { group in
                for (index, job) in jobs.enumerated() {
                    let completion = Completion(
                        jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded", model: "m",
                        response: ["choices": []], tokensIn: index == 1 ? 3_000_000_000 : 5)
                    group.addTask { (job.id, await writer.write(completion)) }
                }
                return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            writer.finish()
            await running.value
            #expect(written.values.allSatisfy { $0 }, "\(written)")
            let rows = try await pool.query("SELECT job_id, status, error->>'code' AS code FROM switchyard.results ORDER BY job_id")
            let statuses = try rows.map { try "\($0.decode("status", as: String.self)) \($0.decode("code", as: String?.self) ?? "-")" }
            #expect(statuses == ["succeeded -", "failed outcome_not_storable", "succeeded -"])
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs").scalar(Int.self) == 0)
        }
    }

    @Test("an answer the database cannot store: the job ends failed with its trail, tokens and cost (the call was billed)",
          .timeLimit(.minutes(5)))
    func refusedAnswerKeepsItsTrail() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            // The answer itself is what the database refuses (as a string too long for jsonb would be).
            try await Self.failWriteBacks(
                pool, named: "refuse_answer", with: "22021", "invalid byte sequence", when: "NEW.response IS NOT NULL")
            let writer = CompletionWriter(store: store, worker: "w", batchLimit: 10, logger: Logger(label: "t", level: .error) { _ in })
            let running = Task { await writer.run() }
            let trail = [AttemptRecord(attempt: job.attempt, model: "m", provider: "openai", tier: "primary", outcome: "succeeded", latencyMS: 12)]
            #expect(await writer.write(Completion(
                jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded", model: "m",
                response: ["choices": []], trail: trail, tokensIn: 5, tokensOut: 7, cost: Decimal(string: "0.01"))))
            writer.finish()
            await running.value
            let row = try #require(try await pool.query(
                "SELECT status, error->>'code' AS code, jsonb_array_length(attempts) AS calls, tokens_in, cost FROM switchyard.results"
            ).first)
            #expect(try row.decode("status", as: String.self) == "failed")
            #expect(try row.decode("code", as: String.self) == "outcome_not_storable")
            #expect(try row.decode("calls", as: Int.self) == 1)
            #expect(try row.decode("tokens_in", as: Int.self) == 5)
            #expect(try row.decode("cost", as: Decimal.self) == Decimal(string: "0.01"))
        }
    }

    /// A Python walkthrough read a result's latency_ms as 447.44812299999995 beside its trail's 447.448.
    @Test("a result's latency is kept to the microsecond, as its trail's")
    func latencyToTheMicrosecond() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            let latency = 447.44812299999995
            let trail = [AttemptRecord(attempt: job.attempt, model: "m", provider: "openai", tier: "primary", outcome: "succeeded", latencyMS: latency)]
            _ = try await store.complete(worker: "w", [Completion(
                jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded", model: "m",
                response: ["choices": []], trail: trail, latencyMS: latency)])
            let row = try #require(try await pool.query(
                "SELECT latency_ms::text AS result, attempts->0->>'latency_ms' AS trail FROM switchyard.results").first)
            #expect(try row.decode("result", as: String.self) == "447.448")
            #expect(try row.decode("trail", as: String.self) == "447.448")
        }
    }

    /// A review's model priced $9,999,999,999 per 1K, answering a billion tokens each way: the
    /// cost overflowed its column, and the job was recorded with nothing of its paid call.
    @Test("a cost past its column: the job ends failed with its trail and tokens, without the cost",
          .timeLimit(.minutes(5)))
    func refusedCostKeepsTrailAndTokens() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            let writer = CompletionWriter(store: store, worker: "w", batchLimit: 10, logger: Logger(label: "t", level: .error) { _ in })
            let running = Task { await writer.run() }
            let trail = [AttemptRecord(attempt: job.attempt, model: "m", provider: "openai", tier: "primary", outcome: "succeeded", latencyMS: 12)]
            let huge = Decimal(string: "19999999998000000000")!
            #expect(await writer.write(Completion(
                jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded", model: "m",
                response: ["choices": []], trail: trail, tokensIn: 999_999_999, tokensOut: 999_999_999, cost: huge,
                baseCost: huge, primaryCost: huge)))
            writer.finish()
            await running.value
            let row = try #require(try await pool.query(
                "SELECT status, error->>'code' AS code, jsonb_array_length(attempts) AS calls, tokens_in, cost FROM switchyard.results"
            ).first)
            #expect(try row.decode("status", as: String.self) == "failed")
            #expect(try row.decode("code", as: String.self) == "outcome_not_storable")
            #expect(try row.decode("calls", as: Int?.self) == 1)
            #expect(try row.decode("tokens_in", as: Int?.self) == 999_999_999)
            #expect(try row.decode("cost", as: Decimal?.self) == nil)
        }
    }

    @Test("past the grace period, a write the database is up for but refuses for now (a lock timeout) is still retried",
          .timeLimit(.minutes(5)))
    func transientFailureAfterGrace() async throws {
        try await TestDatabase.withMigratedPool { pool in
            // Submitted and claimed before the lock timeout is set: a NOTIFY's commit-time lock is
            // shared with the other tests' databases and could time out under load.
            let setup = QueueStore(pool: pool)
            _ = try await setup.submit(Submission(request: Self.hello))
            let job = try #require(try await setup.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            let database = try await pool.query("SELECT current_database() AS name").first!.decode("name", as: String.self)
            try await pool.query("ALTER DATABASE \(database) SET lock_timeout = '100ms'")  // for new connections
            let writerPool = PostgresPool(pool.configuration)
            let store = QueueStore(pool: writerPool)
            // Another session holds the job's row: the write-back waits 100 ms for it, then fails (55P03).
            let holder = try await PostgresConnection.connect(pool.configuration)
            try await holder.query("BEGIN")
            try await holder.query("SELECT id FROM switchyard.jobs WHERE id = $1 FOR UPDATE", [job.id])
            let failures = Mutex(0)
            let logger = Logger(label: "t", level: .error) { line in
                if line.contains("could not write results; retrying") { failures.withLock { $0 += 1 } }
            }
            let writer = CompletionWriter(store: store, worker: "w", batchLimit: 10, logger: logger)
            let running = Task { await writer.run() }
            writer.stopRetrying()
            let written = Task {
                await writer.write(Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded"))
            }
            try await waitUntil("the write has failed") { failures.withLock { $0 } > 0 }
            try await holder.query("COMMIT")
            #expect(await written.value, "the outcome was given up while the database was up")
            writer.finish()
            await running.value
            #expect(try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 1)
            await holder.close()
            await writerPool.close()
        }
    }

    @Test("a batch the database keeps failing while up (a statement timeout) is written in halves",
          .timeLimit(.minutes(5)))
    func batchTooBigForTheDatabase() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let jobs = try await Self.claimed(8, in: store)
            #expect(jobs.count == 8)
            // A write-back of more than two results runs out of time (57014), every time.
            try await pool.query(
                """
                CREATE FUNCTION public.at_most_two() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE n integer := coalesce(nullif(current_setting('test.rows', true), ''), '0')::integer + 1;
                BEGIN
                    PERFORM set_config('test.rows', n::text, true);
                    IF n > 2 THEN
                        RAISE EXCEPTION 'canceling statement due to statement timeout' USING ERRCODE = '57014';
                    END IF;
                    RETURN NEW;
                END $$
                """)
            try await pool.query(
                "CREATE TRIGGER at_most_two BEFORE INSERT ON switchyard.results FOR EACH ROW EXECUTE FUNCTION public.at_most_two()")
            let splits = Mutex(0)
            let logger = Logger(label: "t", level: .warning) { line in
                if line.contains("writing the batch in halves") { splits.withLock { $0 += 1 } }
            }
            // Delays of 100 + 200 ms before each split: the test's minute is plenty.
            let writer = CompletionWriter(store: store, worker: "w", batchLimit: 10, logger: logger)
            let written = Mutex(0)
            Self.submitSucceeded(jobs, to: writer) { if $0 { written.withLock { $0 += 1 } } }
            let running = Task { await writer.run() }
            try await waitUntil("all eight are written") { written.withLock { $0 } == 8 }
            writer.finish()
            await running.value
            #expect(try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 8)
            #expect(splits.withLock { $0 } == 3)  // 8 → 4 + 4 → each 4 → 2 + 2
        }
    }

    /// A review made the database read-only mid-drain: each write-back was halved down to single
    /// results set aside, and the worker wrote 2, 3, 4 … 15 results per 1.5 s for 23 s after.
    @Test("a batch a read-only server refuses waits whole, and is written whole once it takes writes",
          .timeLimit(.minutes(5)))
    func readOnlyServer() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let jobs = try await Self.claimed(8, in: store)
            try await Self.failWriteBacks(
                pool, named: "read_only", with: "25006", "cannot execute INSERT in a read-only transaction")
            let lines = Mutex<[String]>([])
            let logger = Logger(label: "t", level: .warning) { line in lines.withLock { $0.append(line) } }
            let writer = CompletionWriter(store: store, worker: "w", batchLimit: 10, logger: logger)
            let written = Mutex(0)
            Self.submitSucceeded(jobs, to: writer) { if $0 { written.withLock { $0 += 1 } } }
            let running = Task { await writer.run() }
            // Past the tries after which a failing batch is split (100 + 200 + 400 ms).
            try await waitUntil("four tries have failed") {
                lines.withLock { $0 }.count { $0.contains("could not write results; retrying") } >= 4
            }
            try await pool.query("DROP TRIGGER read_only ON switchyard.results")
            try await waitUntil("all eight are written") { written.withLock { $0 } == 8 }
            writer.finish()
            await running.value
            #expect(!lines.withLock { $0 }.contains { $0.contains("in halves") || $0.contains("the others first") },
                    "\(lines.withLock { $0 })")
        }
    }

    @Test("one outcome the database keeps failing while up is set aside: the others, and later ones, are written",
          .timeLimit(.minutes(5)))
    func oneStuckOutcome() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let jobs = try await Self.claimed(8, in: store)
            #expect(jobs.count == 8)
            // Every write-back that includes the first job fails, until the trigger goes. (Not a
            // lock timeout on its row: with lock_timeout set, every NOTIFY's commit-time lock,
            // which the whole cluster shares with the other tests, could time out too.)
            try await Self.failWriteBacks(
                pool, named: "refuse_first", with: "55P03", "canceling statement due to lock timeout",
                when: "NEW.job_id = \(jobs[0].id)")
            let lines = Mutex<[String]>([])
            let writer = CompletionWriter(
                store: store, worker: "w", batchLimit: 10,
                logger: Logger(label: "t", level: .warning) { line in lines.withLock { $0.append(line) } })
            let written = Mutex<Set<Int64>>([])
            func submit(_ batch: ArraySlice<Job>) {
                for job in batch {
                    writer.submit(Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded")) {
                        if $0 != nil { written.withLock { _ = $0.insert(job.id) } }
                    }
                }
            }
            submit(jobs[0..<4])
            let running = Task { await writer.run() }
            try await waitUntil("the three others are written") {
                written.withLock { $0 } == Set(jobs[1..<4].map(\.id))
            }
            // Set aside, it does not join the next batch: that one is written whole, not split.
            let splits = lines.withLock { $0 }.count { $0.contains("in halves") }
            submit(jobs[4...])
            try await waitUntil("the later four are written") {
                written.withLock { $0 } == Set(jobs[1...].map(\.id))
            }
            #expect(lines.withLock { $0 }.count { $0.contains("in halves") } == splits)
            #expect(lines.withLock { $0 }.count { $0.contains("writing the others first") } == 1)
            try await pool.query("DROP TRIGGER refuse_first ON switchyard.results")
            try await waitUntil("the first is written too") { written.withLock { $0.count } == 8 }
            writer.finish()
            await running.value
            #expect(try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 8)
        }
    }

    /// A review's put-back jobs waited for an idle worker's poll (about 0.75 s of a second): the
    /// write-back's notification comes before they are due.
    @Test("a job put back for under a second is announced on switchyard_jobs when it falls due")
    func announcedWhenDue() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let writer = CompletionWriter(store: store, worker: "w", batchLimit: 10, logger: Logger(label: "t", level: .error) { _ in })
            let running = Task { await writer.run() }
            defer {
                writer.finish()
                running.cancel()
            }
            let events = try await pool.listen(on: ["switchyard_jobs"])
            // A write-back slower than the job's time (a loaded machine) cannot tell: tried again.
            var due: Date?
            for _ in 0..<5 where due == nil {
                let job = try #require(try await Self.claimed(1, in: store).first)
                let at = Date().addingTimeInterval(0.9)
                #expect(
                    await writer.write(
                        Completion(
                            jobID: job.id, attempt: job.attempt, kind: .wait,
                            error: ["message": "no model available now"], retryAt: at)))
                if Date() < at { due = at }
            }
            let dueAt = try #require(due)
            Task {
                try await Task.sleep(for: .seconds(30))
                try await pool.query("SELECT pg_notify('switchyard_jobs', 'timeout')")
            }
            var announced = false
            for await event in events {
                guard case .notification(let notification) = event else { continue }
                if notification.payload == "timeout" { break }
                if Date() >= dueAt {
                    announced = true
                    break
                }
            }
            #expect(announced)
        }
    }

    @Test("as the worker stops, a batch the database keeps failing is given up after five tries, not split",
          .timeLimit(.minutes(5)))
    func noSplittingWhenStopping() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let jobs = try await Self.claimed(4, in: store)
            try await Self.failWriteBacks(
                pool, named: "never", with: "57014", "canceling statement due to statement timeout")
            let lines = Mutex<[String]>([])
            let writer = CompletionWriter(
                store: store, worker: "w", batchLimit: 10,
                logger: Logger(label: "t", level: .warning) { line in lines.withLock { $0.append(line) } })
            let told = Mutex<[Bool]>([])
            Self.submitSucceeded(jobs, to: writer) { written in told.withLock { $0.append(written) } }
            writer.stopRetrying()
            let running = Task { await writer.run() }
            writer.finish()
            await running.value
            #expect(told.withLock { $0 } == [false, false, false, false])
            #expect(!lines.withLock { $0 }.contains { $0.contains("in halves") || $0.contains("the others first") })
            #expect(lines.withLock { $0 }.contains { $0.contains("giving up as the worker stops") && $0.contains("jobs=4") })
            // Nothing written: the jobs stay, leased, for the rescue.
            #expect(try await pool.query("SELECT count(*) FROM switchyard.jobs WHERE lease_owner = 'w'").scalar(Int.self) == 4)
        }
    }

    /// A writer whose pauses between tries are endless unless `short(call)` (the calls counted
    /// from 0), holding one claimed job whose every write-back fails with `sqlState`; `pauses`
    /// counts the pauses begun.
    static func withFailingWriter(
        failing sqlState: String, _ message: String, short: @escaping @Sendable (Int) -> Bool = { _ in false },
        _ body: (CompletionWriter, _ pauses: borrowing Mutex<Int>, _ lines: borrowing Mutex<[String]>) async throws -> Void
    ) async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            try await Self.failWriteBacks(pool, named: "always", with: sqlState, message)
            let pauses = Mutex(0)
            let lines = Mutex<[String]>([])
            let writer = CompletionWriter(
                store: store, worker: "w", batchLimit: 10,
                logger: Logger(label: "t", level: .warning) { line in lines.withLock { $0.append(line) } },
                sleep: { duration in
                    let call = pauses.withLock { count in
                        defer { count += 1 }
                        return count
                    }
                    try await Task.sleep(for: short(call) ? duration : .seconds(3600))
                })
            let told = Mutex<[Bool]>([])
            writer.submit(Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded")) {
                let written = $0 != nil
                told.withLock { $0.append(written) }
            }
            let running = Task { await writer.run() }
            try await body(writer, pauses, lines)
            await running.value
            #expect(told.withLock { $0 } == [false])
            #expect(lines.withLock { $0 }.contains { $0.contains("giving up as the worker stops") })
        }
    }

    @Test("the end of the grace period cuts short a pause between tries (it grows to 5 s while the database is away)",
          .timeLimit(.minutes(5)))
    func graceEndsThePause() async throws {
        try await Self.withFailingWriter(
            failing: "57P01", "terminating connection due to administrator command"
        ) { writer, pauses, _ in
            try await waitUntil("the writer pauses after its first try") { pauses.withLock { $0 } == 1 }
            writer.finish()  // does not end this pause: the database may come back within the grace period
            writer.stopRetrying()
        }
    }

    @Test("as the worker stops, a set-aside outcome's pause ends, and the outcome gets its last tries",
          .timeLimit(.minutes(5)))
    func finishEndsTheSetAsidePause() async throws {
        // The first two pauses (between the batch's three tries) are short; the set-aside one is not.
        try await Self.withFailingWriter(
            failing: "55P03", "canceling statement due to lock timeout", short: { $0 != 2 }
        ) { writer, pauses, lines in
            try await waitUntil("the outcome is set aside and pausing") { pauses.withLock { $0 } == 3 }
            #expect(lines.withLock { $0 }.contains { $0.contains("writing the others first") })
            writer.finish()
        }
    }

    @Test("only a value the database refuses is narrowed down to one outcome; an outage is retried")
    func refusedOrUnavailable() {
        let refused = [
            ("22003", "integer out of range"), ("22021", "invalid byte sequence"), ("23502", "null value"),
            ("54000", "array too large"),
        ]
        for (state, message) in refused {
            #expect(PostgresError(.server, message, sqlState: SQLState(state)).isRefusedValue, "\(state)")
        }
        let unavailable = [
            PostgresError(.connectionFailed, "could not connect: no connection became free in 15 s"),
            PostgresError(.poolUnavailable, "the pool is closed"),
            PostgresError(.server, "terminating connection because of crash of another server process",
                          sqlState: SQLState("57P02")),
            PostgresError(.server, "cannot execute INSERT in a read-only transaction", sqlState: SQLState("25006")),
            PostgresError(.server, "too many connections", sqlState: SQLState("53300")),
            PostgresError(.server, "canceling statement due to statement timeout", sqlState: SQLState("57014")),
        ]
        for error in unavailable { #expect(!error.isRefusedValue, "\(error.message)") }
        // Past the grace period only these give a batch up at once (the database is not there).
        #expect(unavailable.map(\.isUnreachable) == [true, true, true, false, false, false])
        #expect(PostgresError(.server, "terminating connection due to administrator command", sqlState: .adminShutdown)
            .isUnreachable)
        #expect(!PostgresError(.server, "deadlock detected", sqlState: .deadlockDetected).isUnreachable)
    }

    @Test("a provider answer with a NUL character is stored, the NUL replaced by U+FFFD")
    func nulInAnswer() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            _ = try await store.submit(Submission(request: Self.hello))
            let job = try #require(try await store.claim(worker: "w", freeSlots: 1, backgroundSlots: 0, lease: .seconds(30)).first)
            let answer: JSONValue = ["choices": [["message": ["role": "assistant", "content": "a\u{0}b"]]]]
            let written = try await store.complete(
                worker: "w", [Completion(jobID: job.id, attempt: job.attempt, kind: .result, status: "succeeded", response: answer)])
            #expect(written == [job.id: "result"])
            let content = try await pool.query(
                "SELECT response->'choices'->0->'message'->>'content' FROM switchyard.results").scalar(String.self)
            #expect(content == "a\u{FFFD}b")
        }
    }
}
