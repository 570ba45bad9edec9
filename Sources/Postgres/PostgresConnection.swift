import CLibPQ
import Foundation

/// A statement and its bind parameters, for `pipeline(_:)`.
public struct PostgresStatement: Sendable {
    public var sql: String
    public var binds: [(any PostgresEncodable)?]

    public init(_ sql: String, _ binds: [(any PostgresEncodable)?] = []) {
        self.sql = sql
        self.binds = binds
    }
}

/// Transaction isolation levels for `withTransaction`.
public enum PostgresIsolation: String, Sendable {
    case readCommitted = "READ COMMITTED"
    case repeatableRead = "REPEATABLE READ"
    case serializable = "SERIALIZABLE"
}

/// One libpq connection, confined to its own thread.
///
/// Every method runs on the connection's `ThreadExecutor`, so the blocking libpq calls inside
/// never touch Swift's cooperative pool, and the `PGconn` is only ever used from one thread.
/// Use it from one task at a time (a pool lends it out that way); statements from two tasks
/// would interleave between awaits.
public actor PostgresConnection {
    private let executor: ThreadExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public nonisolated let configuration: PostgresConfiguration
    private var handle: OpaquePointer?
    private let canceller = Canceller()
    private let noticeSink: NoticeSink
    /// Statements prepared on this connection by `query(_:_:prepared:)`, by their text.
    private var prepared: [String: PreparedStatement] = [:]
    /// False once a statement this connection prepared was gone when it ran it: a pooler shares
    /// server connections under it (transaction mode), or reset the session (`DISCARD ALL`).
    /// From then on it sends unnamed statements only, which every pooler handles.
    private var preparing = true
    /// Statements whose prepared form went stale (their result type changed): run unprepared.
    private var unpreparable: Set<String> = []

    private init(configuration: PostgresConfiguration, threadName: String) {
        self.configuration = configuration
        self.executor = ThreadExecutor(name: threadName)
        self.noticeSink = NoticeSink(handler: configuration.noticeHandler)
    }

    // Isolated, so the handle is finished on the connection's own thread like every other call.
    isolated deinit {
        canceller.replace(with: nil)
        if let handle { PQfinish(handle) }
        executor.shutdown()
    }

    /// Opens a connection.
    /// - Throws: `PostgresError` `.connectionFailed`, naming the target (never the password) and
    ///   saying what to check.
    public static func connect(
        _ configuration: PostgresConfiguration, threadName: String = "postgres"
    ) async throws -> PostgresConnection {
        let connection = PostgresConnection(configuration: configuration, threadName: threadName)
        try await connection.open()
        return connection
    }

    private func open() throws {
        handle = try LibPQ.connect(configuration, noticeSink: noticeSink)
        canceller.replace(with: PQgetCancel(handle))
    }

    /// Closes the connection. Later calls throw `.connectionClosed`.
    public func close() {
        canceller.replace(with: nil)
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// The server's process id for this connection (`pg_backend_pid()`), or nil once closed.
    public var backendPID: Int32? { handle.map { PQbackendPID($0) } }

    // MARK: Statements

    /// Runs one statement with bind parameters and returns its rows.
    ///
    /// Cancelling the calling task sends a cancel request for this statement to the server.
    /// - Throws: `PostgresError`; `.server` errors carry the SQLSTATE.
    @discardableResult
    public nonisolated func query(_ sql: String, _ binds: [(any PostgresEncodable)?] = []) async throws
        -> PostgresRows
    {
        let ticket = canceller.newTicket()
        return try await withTaskCancellationHandler {
            try await self.run(ticket) { handle in
                try LibPQ.withParameters(binds) { try Self.unprepared(sql, $0, handle) }
            }
        } onCancel: {
            canceller.cancel(ticket)
        }
    }

    /// Runs one statement as a prepared statement of this connection: parsed and analyzed once,
    /// then only bound and executed (the statements a worker runs for every claim and write-back
    /// are the same text each time). Postgres still chooses between a custom and a generic plan
    /// per execution, as for any prepared statement.
    ///
    /// A statement is named after a hash of its text and parameter types, so on a server
    /// connection that a pooler shares between clients a name always means the same statement.
    /// It runs unprepared, as `query(_:_:)` runs it: when its binary parameters are of other
    /// types than it was prepared with; from the first time its result type changed under it
    /// (0A000, "cached plan must not change result type"), on this connection; and, for every
    /// statement of this connection, from the first time a prepared statement was gone when it
    /// ran it (26000: a transaction-mode pooler without prepared-statement support, or `DISCARD
    /// ALL`). When such an error aborts the caller's transaction, it is thrown. A PL/pgSQL
    /// function whose saved plan kept a row type's columns of before a change to it (42804) has
    /// the session's plans discarded, and the call is made once more, outside a transaction.
    @discardableResult
    public nonisolated func query(_ sql: String, _ binds: [(any PostgresEncodable)?], prepared: Bool) async throws
        -> PostgresRows
    {
        guard prepared else { return try await query(sql, binds) }
        let ticket = canceller.newTicket()
        return try await withTaskCancellationHandler {
            try await self.runPrepared(ticket, sql, binds)
        } onCancel: {
            canceller.cancel(ticket)
        }
    }

    private func runPrepared(_ ticket: UInt64, _ sql: String, _ binds: [(any PostgresEncodable)?]) throws
        -> PostgresRows
    {
        try run(ticket) { handle in
            do {
                return try self.runPrepared(sql, binds, handle)
            } catch let error as PostgresError where error.isStaleFunctionResult && PQtransactionStatus(handle) == PQTRANS_IDLE {
                // A function's saved plan read a `*` of a row type that has changed since (a
                // column added to switchyard.jobs): the session failed so at every call, and
                // workers running through an upgrade claimed nothing until restarted (a review
                // of sql/0088). Its plans are made afresh, and the statement is run once more.
                PQclear(PQexec(handle, "DISCARD PLANS"))
                return try self.runPrepared(sql, binds, handle)
            }
        }
    }

    private func runPrepared(_ sql: String, _ binds: [(any PostgresEncodable)?], _ handle: OpaquePointer) throws
        -> PostgresRows
    {
        try LibPQ.withParameters(binds) { parameters in
            guard self.preparing, !self.unpreparable.contains(sql) else {
                return try Self.unprepared(sql, parameters, handle)
            }
            do {
                let statement: PreparedStatement
                if let known = self.prepared[sql] {
                    statement = known
                } else {
                    statement = try PreparedStatement.prepare(sql, parameters, handle)
                    self.prepared[sql] = statement
                }
                guard statement.accepts(parameters) else { return try Self.unprepared(sql, parameters, handle) }
                return try LibPQ.rows(
                    PQexecPrepared(
                        handle, statement.name, parameters.count, parameters.values, parameters.lengths,
                        parameters.formats, 0
                    ),
                    handle
                )
            } catch let error as PostgresError where error.sqlState == .invalidStatementName || error.isStalePlan {
                // Gone (even between preparing and describing it): this connection prepares
                // nothing more. Stale: this text is not prepared again on it (a pooler that
                // keeps prepared statements for its clients would hand the stale one back
                // under the same name). Either way this call runs unprepared, unless the
                // error aborted the caller's transaction.
                self.prepared[sql] = nil
                if error.isStalePlan {
                    self.unpreparable.insert(sql)
                } else {
                    self.preparing = false
                    self.prepared = [:]
                }
                guard PQtransactionStatus(handle) == PQTRANS_IDLE else { throw error }
                return try Self.unprepared(sql, parameters, handle)
            }
        }
    }

    private static func unprepared(_ sql: String, _ parameters: LibPQ.Parameters, _ handle: OpaquePointer) throws
        -> PostgresRows
    {
        try LibPQ.rows(
            PQexecParams(
                handle, try LibPQ.checked(sql), parameters.count, parameters.types, parameters.values,
                parameters.lengths, parameters.formats, 0
            ),
            handle
        )
    }

    /// Runs a script of one or more statements separated by semicolons, with no parameters
    /// (the simple query protocol), e.g. a migration file.
    public nonisolated func execute(script: String) async throws {
        let ticket = canceller.newTicket()
        try await withTaskCancellationHandler {
            try await self.run(ticket) { handle in
                var last: PostgresRows?
                guard PQsendQuery(handle, try LibPQ.checked(script)) == 1 else { throw LibPQ.connectionError(handle) }
                var firstError: Error?
                while let result = PQgetResult(handle) {
                    do { last = try LibPQ.rows(result, handle) } catch { firstError = firstError ?? error }
                }
                if let firstError { throw firstError }
                _ = last
            }
        } onCancel: {
            canceller.cancel(ticket)
        }
    }

    /// Sends a batch of statements in one round trip (libpq pipeline mode) and returns each
    /// statement's rows, in order.
    ///
    /// The batch runs as one implicit transaction: if any statement fails, none of them takes
    /// effect, and the first error is thrown.
    public func pipeline(_ statements: [PostgresStatement]) throws -> [PostgresRows] {
        guard let handle else { throw LibPQ.closedError() }
        return try Pipeline(handle: handle, statements: statements).run()
    }

    /// Sends a batch of statements in one round trip, each its own transaction (a Sync after
    /// each): one that fails leaves the others be. Returns each statement's rows or error, in
    /// order; a lost connection is thrown (statements before it may have committed).
    public func pipelineSeparately(_ statements: [PostgresStatement]) throws -> [Result<PostgresRows, any Error>] {
        guard let handle else { throw LibPQ.closedError() }
        return try Pipeline(handle: handle, statements: statements, separately: true).exchange()
    }

    private func run<T>(_ ticket: UInt64, _ body: (OpaquePointer) throws -> T) throws -> T {
        guard let handle else { throw LibPQ.closedError() }
        if Task.isCancelled { throw CancellationError() }
        canceller.begin(ticket)
        defer { canceller.end() }
        return try body(handle)
    }

    // MARK: Transactions

    /// Runs `body` in a transaction: commits when it returns, rolls back when it throws.
    public nonisolated func withTransaction<T>(
        isolation: PostgresIsolation? = nil, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await query(isolation.map { "BEGIN ISOLATION LEVEL \($0.rawValue)" } ?? "BEGIN")
        let value: T
        do {
            value = try await body(self)
        } catch {
            _ = try? await query("ROLLBACK")
            throw error
        }
        try await query("COMMIT")
        return value
    }

    /// The value a libpq connection option came to on this connection (`PQconninfo`): the
    /// client's defaults, or what the connection string said instead.
    func option(_ keyword: String) -> String? {
        guard let handle, let options = PQconninfo(handle) else { return nil }
        defer { PQconninfoFree(options) }
        var entry = options
        while let name = entry.pointee.keyword {
            if String(cString: name) == keyword { return entry.pointee.val.map { String(cString: $0) } }
            entry += 1
        }
        return nil
    }

    // MARK: Health

    /// True when the connection is open, idle outside a transaction, and the server has not
    /// closed it (a cheap, non-blocking check: no round trip).
    public func isReusable() -> Bool {
        guard let handle, PQstatus(handle) == CONNECTION_OK else { return false }
        // An idle connection has nothing to read unless the server said goodbye (or sent a NOTIFY
        // or a parameter change). A goodbye is a FATAL message followed by end-of-file, which
        // libpq only notices on a second read, so keep reading while there is something to read.
        for _ in 0..<4 {
            var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 0) > 0 else { break }
            guard PQconsumeInput(handle) == 1 else { return false }
            while let notification = PQnotifies(handle) { PQfreemem(notification) }
        }
        return PQstatus(handle) == CONNECTION_OK && PQtransactionStatus(handle) == PQTRANS_IDLE
    }

    /// Rolls back a transaction a caller left open (it threw between BEGIN and COMMIT without
    /// `withTransaction`), then answers `isReusable()`; one hop for a pool's checkin.
    func resetForReuse() -> Bool {
        guard let handle else { return false }
        let status = PQtransactionStatus(handle)
        if status == PQTRANS_INTRANS || status == PQTRANS_INERROR {
            PQclear(PQexec(handle, "ROLLBACK"))
        }
        return isReusable()
    }
}

/// A statement prepared on one connection, with the parameter types the server settled on.
private struct PreparedStatement {
    let name: String
    let types: [UInt32]

    /// Prepares `sql` as `switchyard_` and a hash of its text and parameter types. When the
    /// server already has a statement of that name (a pooler's server connection that another
    /// client prepared it on), it is the same statement: that one is used.
    static func prepare(_ sql: String, _ parameters: LibPQ.Parameters, _ handle: OpaquePointer) throws
        -> PreparedStatement
    {
        let types = (0..<Int(parameters.count)).map { parameters.types?[$0] ?? 0 }
        let name = "switchyard_" + String(fnv1a(sql + "\u{0}" + types.map(String.init).joined(separator: ",")), radix: 16)
        do {
            _ = try LibPQ.rows(
                PQprepare(handle, name, try LibPQ.checked(sql), parameters.count, parameters.types), handle)
        } catch let error as PostgresError where error.sqlState == .duplicatePreparedStatement {
            guard PQtransactionStatus(handle) == PQTRANS_IDLE else { throw error }
        }
        guard let described = PQdescribePrepared(handle, name) else { throw LibPQ.connectionError(handle) }
        defer { PQclear(described) }
        guard PQresultStatus(described) == PGRES_COMMAND_OK else { throw LibPQ.serverError(described, handle) }
        return PreparedStatement(name: name, types: (0..<PQnparams(described)).map { PQparamtype(described, $0) })
    }

    /// 64-bit FNV-1a of the text's UTF-8.
    private static func fnv1a(_ text: String) -> UInt64 {
        text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }

    /// Whether every binary parameter has the type the statement was prepared with (the server
    /// reads text ones as that type).
    func accepts(_ parameters: LibPQ.Parameters) -> Bool {
        guard Int(parameters.count) == types.count else { return false }
        guard let formats = parameters.formats, let given = parameters.types else { return true }
        return (0..<types.count).allSatisfy { formats[$0] == 0 || given[$0] == types[$0] }
    }
}

/// Sends cancel requests for the statement that is running, from any thread.
///
/// `PQcancel` is made to be called from another thread than the connection's. A ticket ties a
/// cancellation to one statement, so a late cancel never hits the next user's statement.
private final class Canceller: @unchecked Sendable {
    // Safe because every field is read and written with `lock` held.
    private let lock = NSLock()
    private var cancelHandle: OpaquePointer?
    private var running: UInt64 = 0
    private var nextTicket: UInt64 = 0

    func newTicket() -> UInt64 {
        lock.withLock {
            nextTicket += 1
            return nextTicket
        }
    }

    func replace(with handle: OpaquePointer?) {
        lock.withLock {
            if let cancelHandle { PQfreeCancel(cancelHandle) }
            cancelHandle = handle
        }
    }

    func begin(_ ticket: UInt64) { lock.withLock { running = ticket } }
    func end() { lock.withLock { running = 0 } }

    /// Cancels the statement with this ticket if it is still running. `PQcancel` opens a network
    /// connection, so it runs on a Dispatch thread, never on the cooperative pool that called us.
    func cancel(_ ticket: UInt64) {
        DispatchQueue.global().async { [self] in
            lock.withLock {
                guard running == ticket, let cancelHandle else { return }
                var buffer = [CChar](repeating: 0, count: 256)
                _ = PQcancel(cancelHandle, &buffer, Int32(buffer.count))
            }
        }
    }
}

/// Holds the NOTICE handler for libpq's C callback.
final class NoticeSink: Sendable {
    let handler: (@Sendable (PostgresNotice) -> Void)?
    init(handler: (@Sendable (PostgresNotice) -> Void)?) { self.handler = handler }
}
