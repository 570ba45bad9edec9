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

    /// A listener whose first connection failed closed its wake-up pipe as its thread ended, and the
    /// stream's end then wrote a byte to the pipe's number: to whatever the process had opened under
    /// it since (a CI run died of SIGPIPE, as a socket to a stopped server got it, one guesses).
    @Test("a listener that cannot connect writes nothing to a descriptor it no longer owns")
    func failedListenerWritesNowhere() async throws {
        let unreachable = try PostgresConfiguration("postgres://someone@127.0.0.1:1/app?connect_timeout=2")
        // Opens pipes, as fast as it can, and looks in each for a byte nobody here wrote.
        let probe = DescriptorProbe()
        Thread { probe.run() }.start()
        let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        // 3,000 listeners (the old race took 1 in about 1,000), or what 3 s allow on a loaded
        // machine: the probe keeps a core busy.
        let clock = ContinuousClock()
        let end = clock.now + .seconds(3)
        for _ in 0..<3_000 where clock.now < end {
            let pool = PostgresPool(unreachable, options: .init(maxConnections: 1))
            let error = await #expect(throws: PostgresError.self) { _ = try await pool.listen(on: ["anything"]) }
            #expect(error?.code == .connectionFailed && error?.message.contains("127.0.0.1:1") == true, "\(String(describing: error))")
            await pool.close()
        }
        #expect(probe.stop() == 0, "bytes found in pipes this process had just opened")
        // And the pipes are closed all the same: none of the listeners' is left open.
        try await waitUntil("the listeners' pipes are closed") {
            try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count < before + 100
        }
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

/// Opens and closes pipes in a loop on a thread of its own, counting the bytes found in them: each
/// pipe is new, so a byte in one was written by someone holding a stale descriptor number.
private final class DescriptorProbe: @unchecked Sendable {
    // Safe because `stopping` and `strays` are only touched under `lock`.
    private let lock = NSLock()
    private var stopping = false
    private var strays = 0
    private let done = DispatchSemaphore(value: 0)

    func run() {
        var buffer = [UInt8](repeating: 0, count: 16)
        while !lock.withLock({ stopping }) {
            var descriptors: [Int32] = [0, 0]
            guard pipe(&descriptors) == 0 else { continue }
            _ = fcntl(descriptors[0], F_SETFL, O_NONBLOCK)
            let found = read(descriptors[0], &buffer, buffer.count)
            close(descriptors[1])
            close(descriptors[0])
            if found > 0 { lock.withLock { strays += found } }
        }
        done.signal()
    }

    /// Stops the loop and returns the bytes it found.
    func stop() -> Int {
        lock.withLock { stopping = true }
        done.wait()
        return lock.withLock { strays }
    }
}
