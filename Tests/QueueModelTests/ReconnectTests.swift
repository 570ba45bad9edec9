import Testing

@testable import Postgres

@Suite("Pool: which connection failures are worth retrying")
struct ReconnectTests {
    static func failure(_ reason: String, database: String = "app") -> PostgresError {
        PostgresError(.connectionFailed, "could not connect to postgres://u@db:5432/\(database): \(reason)")
    }

    @Test("a server that is down or restarting is retried, whatever the database is called")
    func transient() {
        #expect(Self.failure("connection refused").isWorthReconnecting)
        #expect(Self.failure("connection refused", database: "invalid_x").isWorthReconnecting)
        #expect(Self.failure("SSL SYSCALL error: EOF detected").isWorthReconnecting)
        #expect(Self.failure("FATAL:  the database system is starting up").isWorthReconnecting)
    }

    @Test("wrong credentials, a missing database and TLS misconfiguration are not")
    func permanent() {
        #expect(!Self.failure("FATAL:  password authentication failed for user \"u\"").isWorthReconnecting)
        #expect(!Self.failure("FATAL:  database \"app\" does not exist").isWorthReconnecting)
        #expect(!Self.failure("server does not support SSL, but SSL was required").isWorthReconnecting)
        #expect(!Self.failure("invalid sslmode value: \"sometimes\"").isWorthReconnecting)
    }
}
