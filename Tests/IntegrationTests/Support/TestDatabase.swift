import Foundation
import Postgres
import QueueModel

/// Databases for integration tests: each test gets a fresh database of its own on one shared
/// server, so tests run in parallel without seeing each other's rows.
///
/// The server is `SWITCHYARD_TEST_DATABASE_URL` (or `DATABASE_URL`) when set, else a private
/// cluster started on first use and removed when the test process exits.
enum TestDatabase {
    /// Runs `body` with a new, empty database, and drops it afterwards.
    static func withEmpty<T>(_ body: (PostgresConfiguration) async throws -> T) async throws -> T {
        let configuration = try await SharedServer.instance.createDatabase(migrated: false)
        return try await withDrop(configuration, body)
    }

    /// Runs `body` with a new database that has every migration applied, and drops it afterwards.
    static func withMigrated<T>(_ body: (PostgresConfiguration) async throws -> T) async throws -> T {
        let configuration = try await SharedServer.instance.createDatabase(migrated: true)
        return try await withDrop(configuration, body)
    }

    /// Runs `body` with a pool on a new migrated database.
    static func withMigratedPool<T>(
        maxConnections: Int = 8, _ body: (PostgresPool) async throws -> T
    ) async throws -> T {
        try await withMigrated { configuration in
            let pool = PostgresPool(configuration, options: .init(maxConnections: maxConnections))
            do {
                let value = try await body(pool)
                await pool.close()
                return value
            } catch {
                await pool.close()
                throw error
            }
        }
    }

    private static func withDrop<T>(
        _ configuration: PostgresConfiguration, _ body: (PostgresConfiguration) async throws -> T
    ) async throws -> T {
        let value: T
        do {
            value = try await body(configuration)
        } catch {
            await SharedServer.instance.drop(configuration)
            throw error
        }
        await SharedServer.instance.drop(configuration)
        return value
    }
}

/// The one server the test process shares, and the migrated template its databases copy.
actor SharedServer {
    static let instance = SharedServer()

    private var administration: PostgresConfiguration?
    // Tasks, not values: callers arrive concurrently (the actor is re-entered at every await),
    // and all of them must share one server and one template.
    private var serverTask: Task<PostgresConfiguration, Error>?
    private var templateTask: Task<Void, Error>?
    private var counter = 0
    private let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)

    private func server() async throws -> PostgresConfiguration {
        if serverTask == nil {
            serverTask = Task {
                let environment = ProcessInfo.processInfo.environment
                let given = environment["SWITCHYARD_TEST_DATABASE_URL"] ?? environment["DATABASE_URL"]
                if let given, !given.isEmpty { return try PostgresConfiguration(given) }
                // Removed by its watchdog when the test process exits.
                return try await PrivatePostgres.start().configuration()
            }
        }
        let configuration = try await serverTask!.value
        administration = configuration
        return configuration
    }

    private var templateName: String { "switchyard_test_template_\(runID)" }

    private func prepareTemplate(on server: PostgresConfiguration) async throws {
        if templateTask == nil {
            let name = templateName
            templateTask = Task {
                try await Self.execute(on: server, "CREATE DATABASE \(name)")
                let pool = PostgresPool(server.withDatabase(name), options: .init(maxConnections: 1))
                do {
                    try await Migrator().migrate(pool)
                } catch {
                    await pool.close()
                    throw error
                }
                await pool.close()
            }
        }
        try await templateTask!.value
    }

    /// Creates `test_<run>_<n>`, copied from the migrated template when asked.
    func createDatabase(migrated: Bool) async throws -> PostgresConfiguration {
        let server = try await server()
        if migrated { try await prepareTemplate(on: server) }
        counter += 1
        let name = "test_\(runID)_\(counter)"
        try await administer(on: server, "CREATE DATABASE \(name)" + (migrated ? " TEMPLATE \(templateName)" : ""))
        return server.withDatabase(name)
    }

    /// Drops a test database, ending any sessions still in it.
    func drop(_ configuration: PostgresConfiguration) async {
        guard let server = administration, let name = configuration.databaseOverride else { return }
        try? await administer(on: server, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// Creations and drops under way, and those waiting for one to end. Copies of one template
    /// take turns (Postgres locks it), so hundreds of tests starting at once each held a
    /// connection in its queue: 300 of the server's 500 at once, and other tests' connections
    /// were refused ("too many clients already"). A few at a time, each closing its connection
    /// before the next goes.
    private var administering = 0
    private var waitingToAdminister: [CheckedContinuation<Void, Never>] = []
    private static let administeringAtOnce = 4

    private func administer(on server: PostgresConfiguration, _ sql: String) async throws {
        if administering < Self.administeringAtOnce {
            administering += 1
        } else {
            await withCheckedContinuation { waitingToAdminister.append($0) }
        }
        defer {
            if waitingToAdminister.isEmpty {
                administering -= 1
            } else {
                waitingToAdminister.removeFirst().resume()
            }
        }
        let connection = try await PostgresConnection.connect(server)
        do {
            try await connection.query(sql)
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    private static func execute(on server: PostgresConfiguration, _ sql: String) async throws {
        let connection = try await PostgresConnection.connect(server)
        defer { Task { await connection.close() } }
        try await connection.query(sql)
    }
}

/// Runs `body` with a private cluster of its own (for tests that restart or stop the server),
/// and stops and removes the cluster afterwards, whether `body` throws or not.
func withPrivateCluster<T>(
    tcpAuthentication: String = "trust", _ body: (PrivatePostgres) async throws -> T
) async throws -> T {
    let cluster = try await PrivatePostgres.start(tcpAuthentication: tcpAuthentication)
    let value: T
    do {
        value = try await body(cluster)
    } catch {
        try? await cluster.stop()
        throw error
    }
    try await cluster.stop()
    return value
}
