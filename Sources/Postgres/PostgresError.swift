/// An error from the Postgres client: a failed connection, a statement the server refused, or a
/// value that could not be decoded.
///
/// Server errors carry the SQLSTATE, so callers can tell a unique violation, a serialization
/// failure or a deadlock (worth a retry) from a bad request (not worth one).
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is. Extensible: new codes may appear in later versions.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The connection string could not be parsed.
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// The server could not be reached, refused the credentials, or has no such database.
        public static let connectionFailed = Code("connectionFailed")
        /// The connection broke while in use, or was used after it was closed.
        public static let connectionClosed = Code("connectionClosed")
        /// The server answered a statement with an error; see `sqlState`.
        public static let server = Code("server")
        /// A value could not be decoded into the requested Swift type.
        public static let decoding = Code("decoding")
        /// A parameter could not be sent (for example, a string with a NUL byte).
        public static let invalidParameter = Code("invalidParameter")
        /// libpq reported something this client did not expect.
        public static let protocolViolation = Code("protocolViolation")
        /// The pool was closed, or no connection became free in time.
        public static let poolUnavailable = Code("poolUnavailable")
    }

    public var code: Code
    /// The primary message, for a person.
    public var message: String
    /// The server's SQLSTATE for `.server` errors.
    public var sqlState: SQLState?
    public var detail: String?
    public var hint: String?
    /// The server's severity (`ERROR`, `FATAL`, …) for `.server` errors.
    public var severity: String?
    /// The constraint a violation names, when the server names one.
    public var constraint: String?

    public init(
        _ code: Code, _ message: String, sqlState: SQLState? = nil, detail: String? = nil,
        hint: String? = nil, severity: String? = nil, constraint: String? = nil
    ) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.severity = severity
        self.constraint = constraint
    }

    public var description: String {
        var text = message
        if let sqlState { text += " (SQLSTATE \(sqlState.rawValue))" }
        if let detail { text += "\ndetail: \(detail)" }
        if let hint { text += "\nhint: \(hint)" }
        return text
    }

    /// True for failures that a retry of the same transaction may cure: serialization failures,
    /// deadlocks, and a connection that broke (the statement may or may not have run).
    public var isTransient: Bool {
        if code == .connectionClosed { return true }
        guard let sqlState else { return false }
        return sqlState == .serializationFailure || sqlState == .deadlockDetected
            || sqlState.rawValue.hasPrefix("08") || sqlState == .adminShutdown
            || sqlState == .cannotConnectNow
    }

    /// True when the database could not be reached or went away: this client could not connect
    /// or lost the connection (or its pool is closed), the connection broke (class 08), or the
    /// server is shutting down, restarting or starting up. Unlike `isTransient`, not a deadlock or a
    /// serialization failure: those come from a server that is up.
    public var isUnreachable: Bool {
        if [.connectionFailed, .connectionClosed, .poolUnavailable].contains(code) { return true }
        guard let sqlState else { return false }
        return sqlState.errorClass == "08" || [.adminShutdown, .crashShutdown, .cannotConnectNow].contains(sqlState)
    }

    /// True when no statement was sent: the connection could not be opened (or the pool had none
    /// to give). Unlike a connection lost mid-statement, the statement certainly did nothing.
    public var sentNothing: Bool { code == .connectionFailed || code == .poolUnavailable }

    /// True when the server cannot take any write now, whatever the statement: unreachable, read
    /// only (`25006`: a primary turned standby, `default_transaction_read_only`), or out of disk
    /// (`53100`). Writing less at a time does not help. (Not out of memory, `53200`: a batch of
    /// large answers can cause that itself, and its halves get through.)
    public var isServerUnavailable: Bool {
        isUnreachable || sqlState == .readOnlySQLTransaction || sqlState == SQLState("53100")
    }

    /// True when the server refused a value the statement carried (a data exception, a
    /// constraint, a limit: SQLSTATE classes 22, 23 and 54): sending the same values again
    /// cannot succeed, and waiting does not help. Not for failures of the connection or the server.
    public var isRefusedValue: Bool {
        guard code == .server, let sqlState else { return false }
        return ["22", "23", "54"].contains(sqlState.errorClass)
    }
}

/// A Postgres SQLSTATE code (see the "PostgreSQL Error Codes" appendix).
public struct SQLState: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// The two-character class, e.g. `23` for integrity constraint violations.
    public var errorClass: Substring { rawValue.prefix(2) }

    public static let uniqueViolation = SQLState("23505")
    public static let foreignKeyViolation = SQLState("23503")
    public static let notNullViolation = SQLState("23502")
    public static let checkViolation = SQLState("23514")
    public static let serializationFailure = SQLState("40001")
    public static let deadlockDetected = SQLState("40P01")
    public static let syntaxError = SQLState("42601")
    public static let undefinedTable = SQLState("42P01")
    public static let undefinedFunction = SQLState("42883")
    public static let invalidParameterValue = SQLState("22023")
    public static let invalidTextRepresentation = SQLState("22P02")
    public static let raiseException = SQLState("P0001")
    public static let queryCanceled = SQLState("57014")
    public static let readOnlySQLTransaction = SQLState("25006")
    public static let adminShutdown = SQLState("57P01")
    public static let crashShutdown = SQLState("57P02")
    public static let cannotConnectNow = SQLState("57P03")
    public static let insufficientPrivilege = SQLState("42501")
    public static let invalidPassword = SQLState("28P01")
    public static let invalidCatalogName = SQLState("3D000")
    public static let lockNotAvailable = SQLState("55P03")
    public static let invalidStatementName = SQLState("26000")
    public static let featureNotSupported = SQLState("0A000")
    public static let datatypeMismatch = SQLState("42804")
    public static let duplicatePreparedStatement = SQLState("42P05")
}

extension PostgresError {
    /// A prepared statement whose result type changed since it was prepared (a column added to
    /// a table it reads with `*`, a function's result redefined): Postgres will not run it.
    var isStalePlan: Bool {
        sqlState == .featureNotSupported && message.contains("cached plan must not change result type")
    }

    /// A PL/pgSQL function's saved plan that returns a row type's columns of before a change to it
    /// (`RETURN QUERY SELECT * FROM f()` after a column was added to f's table): `DISCARD PLANS`
    /// mends it.
    var isStaleFunctionResult: Bool {
        sqlState == .datatypeMismatch && message.contains("structure of query does not match function result type")
    }
}
