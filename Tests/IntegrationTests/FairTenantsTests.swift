import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// A claim shares its slots among the tenants with jobs queued (`sql/0082`): a multi-tenant
/// walkthrough's tenant A queued 5,000 background jobs, and tenants B and C, 20 each five seconds
/// later, waited for A's last (82 s).
@Suite("Claims: tenants share the slots")
struct FairTenantsTests {
    static let lease = Duration.seconds(30)

    /// `count` jobs of `tenant` in `priority`, due a minute ago, in id order after those before.
    static func enqueue(_ pool: PostgresPool, _ count: Int, tenant: String?, _ priority: Priority = .interactive) async throws {
        try await pool.query(
            """
            INSERT INTO switchyard.jobs (request, priority, tenant)
            SELECT jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'x' || g))),
                   $2, $3
            FROM generate_series(1, $1::integer) g
            """, [count, priority.rawValue, tenant])
        // Due a minute ago (a submission's past run_at is now: sql/0068), in id order.
        try await pool.query(
            "UPDATE switchyard.jobs SET run_at = now() - interval '1 minute' + id * interval '1 microsecond' WHERE lease_owner IS NULL")
    }

    static func countsByTenant(_ jobs: [Job]) -> [String: Int] {
        jobs.reduce(into: [:]) { $0[$1.tenant ?? "none", default: 0] += 1 }
    }

    @Test("each tenant with jobs queued gets its share of a claim, its own first jobs, in either partition")
    func shares() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            for priority in Priority.allCases {
                try await Self.enqueue(pool, 500, tenant: "acme", priority)
                try await Self.enqueue(pool, 5, tenant: "globex", priority)
                try await Self.enqueue(pool, 5, tenant: "initech", priority)
                try await Self.enqueue(pool, 5, tenant: nil, priority)
            }
            let heads = try await pool.query(
                """
                SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY priority, tenant ORDER BY run_at, id) AS n
                                FROM switchyard.jobs WHERE tenant IS NOT NULL) t WHERE n <= 6
                """
            ).map { try $0.decode("id", as: Int64.self) }

            // Three tenants and the queue's order share 12 slots, 3 each; the queue's head is acme's.
            let interactive = try await store.claim(worker: "w", freeSlots: 12, backgroundSlots: 0, lease: Self.lease)
            #expect(Self.countsByTenant(interactive) == ["acme": 6, "globex": 3, "initech": 3])
            #expect(Set(interactive.map(\.id)).isSubset(of: heads))
            // globex and initech have two jobs left each: theirs, acme's share, and the rest in the
            // queue's order (acme's backlog, ahead of the jobs without a tenant).
            let next = try await store.claim(worker: "w", freeSlots: 12, backgroundSlots: 0, lease: Self.lease)
            #expect(Self.countsByTenant(next) == ["acme": 8, "globex": 2, "initech": 2])

            // With the gate open (no ceiling), the background partition alike.
            try await pool.query("DELETE FROM switchyard.jobs WHERE priority = 'interactive'")
            let background = try await store.claim(worker: "w", freeSlots: 12, backgroundSlots: 12, lease: Self.lease)
            #expect(Self.countsByTenant(background) == ["acme": 6, "globex": 3, "initech": 3])
            #expect(Set(background.map(\.id)).isSubset(of: heads))

            // Off: the queue's order alone.
            try await pool.query("UPDATE switchyard.settings SET value = 'false' WHERE name = 'fair_tenants'")
            let ordered = try await store.claim(worker: "w", freeSlots: 12, backgroundSlots: 12, lease: Self.lease)
            #expect(Self.countsByTenant(ordered) == ["acme": 12])
            await #expect(throws: PostgresError.self) {
                try await pool.query("UPDATE switchyard.settings SET value = 'maybe' WHERE name = 'fair_tenants'")
            }
        }
    }

    @Test("more tenants than slots: each session's claims go round them, after the last tenant its claim before reached")
    func goesRound() async throws {
        try await TestDatabase.withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            defer { Task { await pool.close() } }
            for tenant in ["t1", "t2", "t3", "t4", "t5"] {
                try await Self.enqueue(pool, 10, tenant: tenant)
            }
            let connection = try await PostgresConnection.connect(configuration)
            defer { Task { await connection.close() } }
            // Claims of two slots reach two tenants each, and every other one keeps a slot for the
            // queue's order (its head is t1's): each tenant is served every few claims.
            var served: [String: Int] = [:]
            for _ in 0..<10 {
                for tenant in try await connection.query("SELECT tenant FROM switchyard.claim('w', 2, 0, 30)")
                    .map({ try $0.decode("tenant", as: String.self) }) { served[tenant, default: 0] += 1 }
            }
            #expect(served.values.reduce(0, +) == 20)
            #expect(Set(served.keys) == ["t1", "t2", "t3", "t4", "t5"] && served.values.allSatisfy { $0 >= 2 }, "\(served)")
            // Claims of one slot go round too.
            var single: [String: Int] = [:]
            for _ in 0..<15 {
                single[try await connection.query("SELECT tenant FROM switchyard.claim('w', 1, 0, 30)").scalar(String.self),
                       default: 0] += 1
            }
            #expect(Set(single.keys) == ["t1", "t2", "t3", "t4", "t5"] && single.values.allSatisfy { $0 >= 2 }, "\(single)")
        }
    }

    /// A review's 20 jobs without a tenant, at the head of the queue, expired behind two tenants'
    /// 3,000; and 200 tenants whose jobs were all scheduled later took turns from the two with
    /// jobs due.
    @Test("the queue's head, an operator's jobs without a tenant among it, keeps a share; tenants with nothing due take no turn")
    func headAndScheduled() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            try await Self.enqueue(pool, 5, tenant: nil)
            try await Self.enqueue(pool, 300, tenant: "acme")
            try await Self.enqueue(pool, 300, tenant: "globex")
            for tenant in (1...20).map({ "later-\($0)" }) {
                try await pool.query(
                    """
                    INSERT INTO switchyard.jobs (request, tenant, run_at)
                    VALUES ('{"messages":[{"role":"user","content":"later"}]}', $1, now() + interval '1 hour')
                    """, [tenant])
            }
            // Two tenants due and the queue's order: 3 slots each.
            let first = try await store.claim(worker: "w", freeSlots: 9, backgroundSlots: 0, lease: Self.lease)
            #expect(Self.countsByTenant(first) == ["acme": 3, "globex": 3, "none": 3], "\(first.map(\.tenant))")
            let second = try await store.claim(worker: "w", freeSlots: 9, backgroundSlots: 0, lease: Self.lease)
            // The last two without a tenant, and the queue's order goes on with acme's.
            #expect(Self.countsByTenant(second) == ["acme": 4, "globex": 3, "none": 2], "\(second.map(\.tenant))")
        }
    }

    /// The walkthrough's flood, through a worker: its claims and its cursor.
    @Test("a worker runs a tenant's few jobs among the first, however deep another tenant's backlog, and every job once")
    func workerDrain() async throws {
        try await TestDatabase.withMigratedPool { pool in
            try await Self.enqueue(pool, 300, tenant: "acme", .background)
            try await Self.enqueue(pool, 8, tenant: "globex", .background)
            let executor = GatedExecutor()
            executor.releaseAll()
            let configuration = WorkerServiceTests.configuration(concurrency: 4, reserve: 0)
            try await WorkerServiceTests.withWorker(pool, configuration, executor) { _ in
                try await waitUntil("every job has its result") {
                    try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 308
                }
            }
            let started = executor.started
            #expect(started.count == 308)
            #expect(Set(started.map(\.id)).count == 308)
            let globex = started.indices.filter { started[$0].tenant == "globex" }
            // Two of each claim of four while globex has jobs (with the queue's order alone: the last eight).
            #expect(globex.count == 8)
            #expect(globex.allSatisfy { $0 < 40 }, "\(globex)")
        }
    }
}

extension Sequence {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var values: [T] = []
        for element in self { values.append(try await transform(element)) }
        return values
    }
}
