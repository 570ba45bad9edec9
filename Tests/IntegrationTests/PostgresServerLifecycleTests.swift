import Foundation
import Postgres
import Testing

/// Tests that stop, restart or misconfigure a server: each uses a private cluster of its own.
@Suite("Postgres client across server restarts and failures")
struct PostgresServerLifecycleTests {
    @Test("LISTEN/NOTIFY round trip, and LISTEN again after the server restarts")
    func listenAcrossRestart() async throws {
        try await withPrivateCluster { cluster in
            let pool = PostgresPool(cluster.configuration(), options: .init(maxConnections: 2))
            let notifications = try await pool.listen(on: ["jobs_new", "Mixed Case"])
            var iterator = notifications.makeAsyncIterator()

            try await pool.query("SELECT pg_notify('jobs_new', 'first')")
            try await pool.query("NOTIFY \"Mixed Case\", 'quoted'")
            let first = await nextNotification(&iterator)
            #expect(first?.channel == "jobs_new")
            #expect(first?.payload == "first")
            #expect(await nextNotification(&iterator)?.payload == "quoted")

            try await cluster.restart()

            // The sequence says it lost the connection, then that it is listening again.
            var sawReconnect = false
            while let event = await iterator.next() {
                if case .reconnected = event {
                    sawReconnect = true
                    break
                }
            }
            #expect(sawReconnect)
            try await pool.query("SELECT pg_notify('jobs_new', 'after restart')")
            #expect(await nextNotification(&iterator)?.payload == "after restart")
            await pool.close()
        }
    }

    @Test("the pool replaces broken connections after a server restart")
    func poolRecoversAfterRestart() async throws {
        try await withPrivateCluster { cluster in
            let pool = PostgresPool(cluster.configuration(), options: .init(maxConnections: 4))
            // Open all four connections, so every one of them is stale after the restart.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask { try await pool.query("SELECT pg_sleep(0.1)") }
                }
                try await group.waitForAll()
            }
            #expect(pool.openConnections == 4)
            let before = try await pool.query("SELECT pg_postmaster_start_time()").scalar(Date.self)

            try await cluster.restart()

            for _ in 0..<8 {
                #expect(try await pool.query("SELECT 1").scalar(Int.self) == 1)
            }
            let after = try await pool.query("SELECT pg_postmaster_start_time()").scalar(Date.self)
            #expect(after > before)
            await pool.close()
        }
    }

    @Test("connection errors name the target and what to check, and never the password")
    func connectionErrors() async throws {
        let port = try await withPrivateCluster(tcpAuthentication: "scram-sha-256") { cluster in
            let admin = try await PostgresConnection.connect(cluster.configuration())
            try await admin.query("CREATE ROLE app LOGIN PASSWORD 'right-horse-battery'")
            await admin.close()
            let secret = "wrong-staple-4711"

            // Wrong password.
            let badPassword = try PostgresConfiguration("postgres://app:\(secret)@127.0.0.1:\(cluster.port)/postgres")
            let authError = try await #require(throws: PostgresError.self) {
                _ = try await PostgresConnection.connect(badPassword)
            }
            #expect(authError.code == .connectionFailed)
            #expect(authError.message.contains("postgres://app@127.0.0.1:\(cluster.port)/postgres"))
            #expect(authError.message.contains("password authentication failed"))
            #expect(authError.hint?.contains("password") == true)
            #expect(!"\(authError)".contains(secret))
            #expect(!badPassword.description.contains(secret))

            // The pool does not hammer a server with a wrong password: it fails at once.
            let pool = PostgresPool(badPassword, options: .init(connectRetryTimeout: .seconds(30)))
            await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
            await pool.close()

            // The right password works.
            let good = try PostgresConfiguration("postgres://app:right-horse-battery@127.0.0.1:\(cluster.port)/postgres")
            let connection = try await PostgresConnection.connect(good)
            #expect(try await connection.query("SELECT current_user").scalar(String.self) == "app")
            await connection.close()

            // A database that does not exist.
            let missing = try await #require(throws: PostgresError.self) {
                _ = try await PostgresConnection.connect(cluster.configuration(database: "no_such_db"))
            }
            #expect(missing.message.contains("no_such_db"))
            #expect(missing.hint?.contains("createdb") == true)
            return cluster.port
        }

        // Nothing listening any more.
        let unreachable = try PostgresConfiguration("postgres://someone:\("pw-never-shown")@127.0.0.1:\(port)/app")
        let error = try await #require(throws: PostgresError.self) {
            _ = try await PostgresConnection.connect(unreachable)
        }
        #expect(error.message.contains("127.0.0.1:\(port)/app"))
        #expect(error.hint?.contains("server is running") == true)
        #expect(!"\(error)".contains("pw-never-shown"))

        // A connection string that does not parse.
        let parseError = try #require(throws: PostgresError.self) { try PostgresConfiguration("postgres://host:5432/db?no_such_option=1") }
        #expect(parseError.code == .invalidConfiguration)
    }

    @Test("the pool never opens more connections than its bound")
    func poolIsBounded() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: 3))
            let peak = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        try await pool.withConnection { connection in
                            try await connection.query("SELECT pg_sleep(0.05)")
                            return pool.openConnections
                        }
                    }
                }
                return try await group.reduce(0) { max($0, $1) }
            }
            #expect(peak <= 3)
            let sessions = try await pool.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
            ).scalar(Int.self)
            #expect(sessions <= 3)
            await pool.close()
        }
    }
}

private func nextNotification(_ iterator: inout PostgresNotifications.AsyncIterator) async -> PostgresNotification? {
    while let event = await iterator.next() {
        if case .notification(let notification) = event { return notification }
    }
    return nil
}
