import Foundation
import Postgres
import QueueModel
import Testing

/// Roles and sessions for the security tests: real roles on the test server, `SET ROLE` in a
/// transaction, and connection strings that log in as a role.
///
/// Roles are cluster-wide and the test databases share one server, so every role a test makes
/// has a name unique to this test process and is dropped when the test ends.
enum SecurityFixtures {
    /// A role name no other test (of this process or another) uses: `sy_<random>_<suffix>`.
    static func roleName(_ suffix: String, batch: String = uniqueTag()) -> String {
        "sy_\(batch)_\(suffix)".lowercased()
    }

    /// A random tag for one test's roles.
    static func uniqueTag() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    /// Creates roles that are members of Switchyard roles (`[name: "switchyard_submitter"]`), runs
    /// `body` with their full names, and drops them afterwards.
    /// - Parameter login: whether the roles may log in (for child processes); else `SET ROLE` only.
    static func withRoles<T>(
        _ pool: PostgresPool, _ memberships: [String: String], login: Bool = false,
        _ body: ([String: String]) async throws -> T
    ) async throws -> T {
        let batch = uniqueTag()
        let names = Dictionary(uniqueKeysWithValues: memberships.keys.map { ($0, roleName($0, batch: batch)) })
        for (suffix, group) in memberships.sorted(by: { $0.key < $1.key }) {
            try await pool.query(
                "\(Self.createRoleSQL(names[suffix]!, login: login)) IN ROLE \(try quoted(group))")
        }
        do {
            let value = try await body(names)
            await drop(pool, Array(names.values))
            return value
        } catch {
            await drop(pool, Array(names.values))
            throw error
        }
    }

    private static func createRoleSQL(_ name: String, login: Bool) -> String {
        // Names are made here from [a-z0-9_] only; identifiers cannot be bind parameters.
        "CREATE ROLE \(try! quoted(name)) \(login ? "LOGIN" : "NOLOGIN")"
    }

    private static func drop(_ pool: PostgresPool, _ names: [String]) async {
        for name in names {
            _ = try? await pool.query("DROP ROLE IF EXISTS \(try! quoted(name))")
        }
    }

    /// A role or group name as an SQL identifier; only plain names are accepted.
    static func quoted(_ name: String) throws -> String {
        guard !name.isEmpty,
            name.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F })
        else { throw FixtureError("not a plain role name: \(name)") }
        return "\"\(name)\""
    }

    /// Maps roles to tenants in `switchyard.tenant_roles` (per database).
    static func map(_ pool: PostgresPool, _ pairs: [(role: String, tenant: String)]) async throws {
        for pair in pairs {
            try await pool.query(
                "INSERT INTO switchyard.tenant_roles (role, tenant) VALUES ($1, $2)", [pair.role, pair.tenant])
        }
    }

    /// The same database, logged in as `role` (the test server trusts local connections).
    static func configuration(_ configuration: PostgresConfiguration, as role: String) throws -> PostgresConfiguration {
        try PostgresConfiguration(connectionString(configuration, as: role))
    }

    /// A connection string for the same database, as `role`.
    static func connectionString(_ configuration: PostgresConfiguration, as role: String) -> String {
        let base = configuration.effectiveConnectionString
        if base.contains("://") {
            return base.replacingOccurrences(
                of: #"^([a-z]+://)([^@/]*@)?"#, with: "$1\(role)@", options: .regularExpression)
        }
        return base + " user=\(role)"
    }

    /// The connection string with extra libpq keywords (`sslmode=require`), over TCP.
    static func connectionString(_ configuration: PostgresConfiguration, tcpWith keywords: String) -> String {
        let base = configuration.effectiveConnectionString
        if base.contains("://") {
            return base + (base.contains("?") ? "&" : "?") + keywords.replacingOccurrences(of: " ", with: "&")
        }
        return base + " host=127.0.0.1 " + keywords
    }

    /// How many rows of every table in schema switchyard mention `text` anywhere, by table
    /// (tables without a match are left out). Every column of every row is searched, as JSON text.
    static func tablesMentioning(_ text: String, in pool: PostgresPool) async throws -> [String: Int] {
        let tables = try await pool.query(
            """
            SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'switchyard' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            ORDER BY 1
            """
        ).map { try $0[0].decode(String.self) }
        var found: [String: Int] = [:]
        for table in tables {
            // The table name comes from pg_class (format %I quotes it), not from input.
            let count = try await pool.query(
                "SELECT count(*) FROM \(table) t WHERE strpos(to_jsonb(t)::text, $1) > 0", [text]
            ).scalar(Int.self)
            if count > 0 { found[table] = count }
        }
        return found
    }
}

/// A session that tries statements as a role, each in a transaction of its own.
struct RoleSession {
    let connection: PostgresConnection

    /// Runs `sql` as `role` (and, when given, with `switchyard.tenant` set) in a transaction that
    /// is always rolled back, and returns its rows or the server's error.
    func attempt(
        as role: String, tenant: String? = nil, _ sql: String, _ binds: [(any PostgresEncodable)?] = []
    ) async throws -> Result<PostgresRows, PostgresError> {
        try await connection.query("BEGIN")
        let result: Result<PostgresRows, PostgresError>
        do {
            try await connection.query("SELECT set_config('role', $1, true)", [role])
            if let tenant { try await connection.query("SELECT set_config('switchyard.tenant', $1, true)", [tenant]) }
            result = .success(try await connection.query(sql, binds))
        } catch let error as PostgresError {
            result = .failure(error)
        }
        try await connection.query("ROLLBACK")
        return result
    }

    /// Runs `sql` as `role` and commits; throws what the server refused.
    @discardableResult
    func run(
        as role: String, tenant: String? = nil, _ sql: String, _ binds: [(any PostgresEncodable)?] = []
    ) async throws -> PostgresRows {
        try await connection.query("BEGIN")
        do {
            try await connection.query("SELECT set_config('role', $1, true)", [role])
            if let tenant { try await connection.query("SELECT set_config('switchyard.tenant', $1, true)", [tenant]) }
            let rows = try await connection.query(sql, binds)
            try await connection.query("COMMIT")
            return rows
        } catch {
            _ = try? await connection.query("ROLLBACK")
            throw error
        }
    }
}

/// A security test could not set itself up.
struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
