import Postgres

/// An error from Switchyard's queue, catalog or schema operations, for a person to read.
///
/// `code` says what kind of failure it is (extensible); `message` says what happened and `hint`
/// what to do. Errors from the server keep their SQLSTATE.
public struct QueueError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The database's schema is newer than this binary, or was changed after being applied.
        public static let schemaMismatch = Code("schemaMismatch")
        /// The database has migrations this binary knows but has not applied yet.
        public static let schemaBehind = Code("schemaBehind")
        /// The request or an argument is invalid; nothing was stored.
        public static let invalidInput = Code("invalidInput")
        /// A job, model or route that does not exist.
        public static let notFound = Code("notFound")
        /// A database failure that is not the caller's fault.
        public static let database = Code("database")
        /// A timeout the caller asked for ran out.
        public static let timedOut = Code("timedOut")
    }

    public var code: Code
    public var message: String
    public var hint: String?
    public var sqlState: SQLState?
    /// What `message` lists, for a program to read (`--json`): a refused catalog's problems and
    /// warnings, each with its path. Nil for most errors.
    public var details: JSONValue?

    public init(_ code: Code, _ message: String, hint: String? = nil, sqlState: SQLState? = nil, details: JSONValue? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
        self.sqlState = sqlState
        self.details = details
    }

    public var description: String { hint.map { "\(message)\nhint: \($0)" } ?? message }
}
