import CLibPQ
import Foundation

/// Where and how to connect: a `postgres://` URL or a libpq `key=value` connection string, plus
/// the client's own settings.
///
/// The password may be part of the connection string; it is never part of `target`,
/// `description` or any error this client raises.
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    /// The connection string as given.
    public let connectionString: String
    /// Sent as `application_name`, shown in `pg_stat_activity`.
    public var applicationName: String = "switchyard"
    /// How long one connection attempt may take.
    public var connectTimeoutSeconds: Int = 10
    /// How long data sent over TCP may go unacknowledged before libpq drops the connection
    /// (`tcp_user_timeout`; nil: the system's, about 15 minutes; the connection string may set its
    /// own). Keepalives do not probe a connection with a statement on its way: a worker whose
    /// connections a middlebox forgot hung 15 minutes in TCP retransmission. Linux counts a server
    /// that stops reading (its receive window full) the same way, so a client that pipelines more
    /// than the socket buffers hold behind a statement waiting on a lock is dropped too: workers
    /// set it (`WorkerCommand`), the CLI's bulk `cancel -` and `retry -` do not.
    public var tcpUserTimeoutMilliseconds: Int?
    /// Receives the server's NOTICE and WARNING messages instead of libpq's default (stderr).
    public var noticeHandler: (@Sendable (PostgresNotice) -> Void)?

    /// The server, database and user this configuration points at, without the password.
    /// A socket directory as libpq's URIs name it (a walkthrough read `@[/tmp/x]:5432` as made up),
    /// an IPv6 address in brackets, each part percent-encoded where a URI needs it.
    public var target: String {
        func encoded(_ text: String, _ allowed: CharacterSet) -> String {
            text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
        }
        let user = encoded(targetUser, .urlUserAllowed)
        let database = encoded(databaseOverride ?? targetDatabase, .urlPathAllowed.subtracting(["/"]))
        if targetHost.hasPrefix("/") {
            let host = encoded(targetHost, .urlQueryAllowed.subtracting(["&", "=", "#", "+"]))
            return "postgres://\(user)@/\(database)?host=\(host)&port=\(targetPort)"
        }
        let host = targetHost.contains(":") ? "[\(targetHost)]" : targetHost
        return "postgres://\(user)@\(host):\(targetPort)/\(database)"
    }
    private let targetUser: String
    private let targetHost: String
    private let targetPort: String
    private let targetDatabase: String
    /// A database name that replaces the one in the connection string.
    public private(set) var databaseOverride: String?
    /// The password, kept only so error messages can be scrubbed of it.
    let password: String?
    /// The connection string's own `options` (server settings such as `-c statement_timeout=5s`),
    /// or PGOPTIONS's.
    let givenOptions: String?
    /// Server settings for every session, set with `setting(_:to:)` (`-c name=value` each).
    private(set) var sessionSettings: [(name: String, value: String)] = []

    /// Parses and checks a connection string.
    /// - Parameter connectionString: `postgres://user:pw@host:5432/db?sslmode=require` or
    ///   `host=/tmp port=5432 dbname=db`.
    /// - Throws: `PostgresError` with code `.invalidConfiguration` when libpq cannot parse it.
    public init(_ connectionString: String) throws {
        self.connectionString = connectionString
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(connectionString, &errorMessage) else {
            var message = "could not parse the database connection string"
            if let errorMessage {
                var reason = String(cString: errorMessage).trimmingCharacters(in: .whitespacesAndNewlines)
                PQfreemem(errorMessage)
                // libpq quotes the token it could not read, which may be the password: unparsed,
                // the string's password is not known, so a string that may hold one loses them all.
                if connectionString.contains("@") || connectionString.lowercased().contains("password") {
                    // First quote to last: a quote inside the token must not end the hiding.
                    reason = reason.replacingOccurrences(
                        of: #"".*""#, with: "(a part of the string, not shown: it may hold the password)",
                        options: .regularExpression)
                }
                message += ": " + reason
            }
            throw PostgresError(
                .invalidConfiguration, message,
                hint: message.contains("percent-encoded")
                    ? "Write a % in the user name or password as %25 (and @ as %40, : as %3A, / as %2F, # as %23)."
                    : "Use a URL like postgres://user@localhost:5432/dbname or key=value pairs like "
                        + "\"host=localhost dbname=app\"."
            )
        }
        defer { PQconninfoFree(options) }
        var values: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                values[String(cString: keyword)] = String(cString: value)
            }
            option += 1
        }
        if let problem = Self.unencodedURLProblem(connectionString, values) {
            throw PostgresError(
                .invalidConfiguration,
                "the database URL cannot be read as written (not shown: it may hold the password): \(problem)",
                hint: "Percent-encode these characters in the user name and password: @ as %40, : as %3A, / as %2F, "
                    + "# as %23, ? as %3F, % as %25 (or pick a password of letters, digits and - _ . ~)."
            )
        }
        let environment = ProcessInfo.processInfo.environment
        let host = values["host"] ?? values["hostaddr"] ?? environment["PGHOST"] ?? "/var/run/postgresql"
        let port = values["port"] ?? environment["PGPORT"] ?? "5432"
        let user = values["user"] ?? environment["PGUSER"] ?? NSUserName()
        let database = values["dbname"] ?? environment["PGDATABASE"] ?? user
        self.password = values["password"]
        // libpq would read PGOPTIONS when the string names none; an `options` of ours replaces both.
        self.givenOptions =
            values["options"] ?? ProcessInfo.processInfo.environment["PGOPTIONS"].flatMap { $0.isEmpty ? nil : $0 }
        (targetUser, targetHost, targetPort, targetDatabase) = (user, host, port, database)
    }

    /// The same, with a server setting for every session it opens (a custom one such as
    /// `switchyard.tenant` too), sent as libpq's `options` after the connection string's own.
    public func setting(_ name: String, to value: String) -> PostgresConfiguration {
        var copy = self
        copy.sessionSettings.append((name, value))
        return copy
    }

    /// libpq's `options` for a session: the connection string's, then each setting as
    /// `-c name=value`, white space and backslashes escaped with a backslash as the server reads them; nil
    /// when no setting was added (the connection string's own then stand as they are).
    var optionsWithSettings: String? {
        guard !sessionSettings.isEmpty else { return nil }
        // The server splits `options` at any white space (a tenant with a tab failed the connection).
        func escaped(_ text: String) -> String {
            var out = ""
            for character in text {
                if character == "\\" || character.isWhitespace { out.append("\\") }
                out.append(character)
            }
            return out
        }
        let settings = sessionSettings.map { "-c " + escaped("\($0.name)=\($0.value)") }
        return ([givenOptions].compactMap { $0 } + settings).joined(separator: " ")
    }

    /// The same server and credentials, another database.
    public func withDatabase(_ name: String) -> PostgresConfiguration {
        var copy = self
        copy.databaseOverride = name
        return copy
    }

    /// The connection string with the database override applied, for handing to another
    /// process (a worker, `psql`, `pgbench`).
    public var effectiveConnectionString: String {
        guard let database = databaseOverride else { return connectionString }
        if connectionString.contains("://") {
            return connectionString.replacingOccurrences(
                of: #"^([a-z]+://[^/?]*)(/[^?]*)?"#, with: "$1/\(database)", options: .regularExpression
            )
        }
        return connectionString + " dbname=\(database)"
    }

    /// The configuration named by an environment variable, by default `DATABASE_URL`.
    /// - Returns: nil when the variable is unset or empty.
    public static func fromEnvironment(_ variable: String = "DATABASE_URL") throws -> PostgresConfiguration? {
        guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty else { return nil }
        return try PostgresConfiguration(value)
    }

    public var description: String { target }

    /// Why a `postgres://` URL that libpq parsed was most likely written with a reserved character
    /// left unencoded in its password or user name (libpq then splits it elsewhere: the rest of a
    /// password `p@ss:w/rd` became the host, port and database, and an error quoted them); nil
    /// when it reads as a URL should.
    private static func unencodedURLProblem(_ string: String, _ values: [String: String]) -> String? {
        let lowered = string.lowercased()
        guard lowered.hasPrefix("postgres://") || lowered.hasPrefix("postgresql://") else { return nil }
        // libpq's authority ends at the first / or ?: a database name may hold an @ (my@db).
        let authority = string.dropFirst(lowered.hasPrefix("postgres://") ? 11 : 13).prefix { $0 != "/" && $0 != "?" }
        if authority.count(where: { $0 == "@" }) > 1 { return "it has more than one @ before its host" }
        // A / in the password ends the authority there: what came before it reads as host:port.
        if let port = values["port"], !port.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ",") }) {
            return "its port is not a number"
        }
        return nil
    }

    /// Removes the password from a message that might quote the connection string. A short
    /// password is removed only where it stands alone, so that a password `p` does not take every
    /// p out of libpq's words.
    func scrub(_ message: String) -> String {
        guard let password, !password.isEmpty else { return message }
        if password.count >= 8 { return message.replacingOccurrences(of: password, with: "********") }
        let escaped = NSRegularExpression.escapedPattern(for: password)
        return message.replacingOccurrences(
            of: "(?<![A-Za-z0-9])\(escaped)(?![A-Za-z0-9])", with: "********", options: .regularExpression)
    }
}

/// A NOTICE, WARNING or other non-error message the server sent during a statement.
public struct PostgresNotice: Sendable {
    public var severity: String
    public var sqlState: SQLState?
    public var message: String
}
