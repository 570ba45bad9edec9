import Foundation
import Postgres
import QueueModel
import Testing

/// Postgres and workers on separate "hosts" (network namespaces on one bridge), talking over TCP
/// as they would across machines; then one worker host drops off the network mid-run.
///
/// Needs root and iproute2. Elsewhere the test is skipped, and the reason is printed
/// (`NetworkLab: the multi-host tests cannot run here: …`); CI runs as root.
@Suite("Multi-host: workers on separate hosts, one cut off")
struct MultiHostTests {
    static let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
    static let workerArguments = [
        "--concurrency", "16", "--lease", "2s", "--heartbeat", "500ms", "--shutdown-grace", "5s",
    ]

    @Test(
        "a worker host cut off mid-run (link down): its jobs are rescued by the others, none lost or doubled",
        .enabled("needs root, iproute2 and network namespaces; CI runs it as root") {
            await NetworkLab.unavailableReason() == nil
        },
        .timeLimit(.minutes(5))
    )
    func cutOffWorkerHost() async throws {
        try await NetworkLab.with(hosts: ["db", "w1", "w2", "w3"]) { lab in
            try await lab.startPostgres(on: "db")
            let administration = try await PostgresConnection.connect(try lab.socketConfiguration(database: "postgres"))
            try await administration.query("CREATE DATABASE switchyard")
            await administration.close()

            // Migrate from a worker host, over the lab network, as an operator would.
            let url = lab.networkURL("db", database: "switchyard")
            let migrate = try await lab.run(
                in: "w2", WorkerProcess.binary("dispatcher"), ["migrate", "--database-url", url]
            )
            try #require(migrate.status == 0, "dispatcher migrate over the lab network failed: \(migrate.output)")

            // The test watches over the unix socket, which the lab's network cannot take away.
            let pool = PostgresPool(
                try lab.socketConfiguration(database: "switchyard"), options: .init(maxConnections: 2))
            defer { Task { await pool.close() } }
            let submitted = try await QueueStore(pool: pool).submit(
                batch: (0..<3000).map { _ in Submission(request: Self.hello) }
            )

            // w1 starts alone, so it is the elected housekeeper when it is cut off: the others
            // take over once its tenure (its lease) runs out.
            // Its calls take ten seconds: its 16 jobs end together, and between writing them
            // back and its next claim it holds none. With 100 ms calls a cut landed in that gap
            // now and then, and there was nothing to rescue; with 1 s and then 3 s calls it still
            // did on a loaded machine, where cutting the link (an `ip` process) took up to 4.5 s:
            // the victim finished the jobs it held while the cut was being made.
            let victim = try startWorker(lab, on: "w1", id: "victim", url: url, latency: "10s")
            try await waitUntil("the victim is elected housekeeper and has finished 32 jobs", limit: .seconds(90)) {
                let finished = try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self)
                return victim.log.contains("elected housekeeper") && finished >= 32
            }
            // Cut it while it holds jobs it claimed a moment ago: their calls take ten seconds,
            // so it still holds them at the cut. (Cut when it merely held some, it had now and then
            // written them all back, its next claim lost in the cut, on a loaded machine.) Within
            // a second: with 400 ms, a loaded machine's slow claims and polls missed the window at
            // each of the victim's claims until the survivors had drained the queue. The survivors
            // start after that claim, not before: started first, they drained the queue (about
            // ten seconds at 100 ms a call) before the victim's next claim, now and then, and it
            // never held a fresh job.
            try await waitUntil("the victim holds jobs it has just claimed", every: .milliseconds(1)) {
                try await pool.query(
                    "SELECT count(*) FROM switchyard.jobs WHERE lease_owner = 'victim' AND claimed_at > now() - interval '1 second'"
                ).scalar(Int.self) > 0
            }
            let survivors = try [("w2", "survivor-2"), ("w3", "survivor-3")].map { host, id in
                try startWorker(lab, on: host, id: id, url: url)
            }
            let cutting = Date()
            try await lab.setLink("w1", up: false)
            let cutAt = Date()
            // A claim the victim sent just before the cut may still be committing: let it land,
            // then read what the victim holds. Its leases (2 s, renewed every 500 ms until the cut)
            // have not expired yet, so nobody has rescued them.
            try await Task.sleep(for: .milliseconds(500))
            // On a loaded machine a statement can take longer than that: wait until none of the
            // victim's sessions is still running one (they stay open: the server has not noticed
            // the cut yet).
            try await waitUntil("the victim's last statements have finished", every: .milliseconds(10)) {
                try await pool.query(
                    """
                    SELECT count(*) FROM pg_stat_activity
                    WHERE application_name = 'switchyard-worker victim' AND state = 'active'
                    """
                ).scalar(Int.self) == 0
            }
            // What the victim held at the cut: what it still holds, and what the others already
            // rescued from it since (on a loaded machine the wait above can outlast its leases).
            let readAt = Date()
            let heldByVictim = Set(
                try await pool.query(
                    """
                    SELECT id FROM switchyard.jobs WHERE lease_owner = 'victim'
                    UNION
                    SELECT j.id FROM switchyard.jobs j, jsonb_array_elements(j.attempts) AS entry
                    WHERE entry->>'outcome' = 'lease_expired' AND entry->>'worker' = 'victim'
                      AND (entry->>'at')::timestamptz > $1
                    UNION
                    SELECT r.job_id FROM switchyard.results r, jsonb_array_elements(r.attempts) AS entry
                    WHERE entry->>'outcome' = 'lease_expired' AND entry->>'worker' = 'victim'
                      AND (entry->>'at')::timestamptz > $1
                    """,
                    [cutAt]
                ).map { try $0.decode("id", as: Int64.self) }
            )
            #expect(
                !heldByVictim.isEmpty,
                "the victim held no jobs when it was cut off; nothing to rescue (the cut took \(cutAt.timeIntervalSince(cutting)) s; read \(readAt.timeIntervalSince(cutAt)) s after it)")

            let finished = try await WorkerProcessTests.waitForResults(
                pool, total: submitted.count, limit: .seconds(180))
            for survivor in survivors {
                let status = await lab.stop(survivor.child, signal: SIGTERM)
                #expect(status == 0, "\(survivor.logFile) exited \(status):\n\(survivor.log.suffix(2000))")
            }
            // The cut-off worker is still running, retrying a database it cannot reach.
            if let status = victim.child.poll() {
                lab.forget(victim.child)
                Issue.record("the cut-off worker exited by itself (\(status)):\n\(victim.log.suffix(2000))")
            } else {
                _ = await lab.stop(victim.child, signal: SIGKILL)
            }

            #expect(finished == submitted.count)
            try await WorkerProcessTests.expectExactlyOnce(pool, submitted: submitted)

            // The victim's jobs were rescued (its lease expired, the trail says so) and finished by
            // the survivors: only jobs it held, none finished by it. (Rescues before the cut are
            // left out: on a loaded machine the victim may have missed a heartbeat before the cut
            // and rescued its own job, which is not what this test is about.)
            let rescued = try await pool.query(
                """
                SELECT r.job_id, r.worker FROM switchyard.results r
                WHERE EXISTS (
                    SELECT 1 FROM jsonb_array_elements(r.attempts) AS entry
                    WHERE entry->>'outcome' = 'lease_expired' AND entry->>'worker' = 'victim'
                      AND (entry->>'at')::timestamptz > $1)
                """,
                [cutAt]
            ).map { (id: try $0.decode("job_id", as: Int64.self), worker: try $0.decode("worker", as: String.self)) }
            #expect(!rescued.isEmpty, "no job was rescued from the cut-off worker")
            let unexpected = Set(rescued.map(\.id)).subtracting(heldByVictim)
            #expect(
                unexpected.isEmpty, "rescued from the victim, but not held by it at the cut: \(unexpected.sorted())")
            #expect(rescued.allSatisfy { $0.worker != "victim" }, "the cut-off worker finished a job rescued from it")
            let lateResults = try await pool.query(
                "SELECT count(*) FROM switchyard.results WHERE worker = 'victim' AND finished_at > $1",
                [cutAt.addingTimeInterval(1)]
            ).scalar(Int.self)
            #expect(lateResults == 0, "the cut-off worker wrote results after it lost the network")

            // Housekeeping moved to a survivor once the victim's tenure ran out.
            #expect(survivors.contains { $0.log.contains("elected housekeeper") })
            let workers = try await pool.query("SELECT DISTINCT worker FROM switchyard.results ORDER BY 1")
                .map { try $0.decode("worker", as: String.self) }
            #expect(workers == ["survivor-2", "survivor-3", "victim"])
        }
    }

    private func startWorker(
        _ lab: NetworkLab, on host: String, id: String, url: String, latency: String = "100ms"
    ) throws -> WorkerProcess {
        let logFile = lab.root.appending(path: "\(id).log").path
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = url
        environment["SWITCHYARD_EXIT_WITH_PARENT"] = "1"
        environment["SWITCHYARD_LOG_LEVEL"] = "info"
        let child = try lab.spawn(
            in: host, WorkerProcess.binary("worker"),
            ["--id", id, "--simulated-latency", latency] + Self.workerArguments,
            environment: environment, logFile: logFile
        )
        return WorkerProcess(child: child, logFile: logFile)
    }
}
