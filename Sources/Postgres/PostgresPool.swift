import Foundation
import Synchronization

/// A bounded pool of connections, each on its own thread.
///
/// Connections are checked on the way out (a broken one is replaced, not handed over) and on the
/// way back (one left in a transaction is rolled back). Opening a connection retries with
/// exponential backoff while the server is unreachable or starting up, so the pool rides out a
/// server restart; wrong credentials or a missing database fail at once.
public final class PostgresPool: Sendable {
    /// Pool settings.
    public struct Options: Sendable {
        /// The most connections open at once; callers beyond it wait their turn.
        public var maxConnections: Int
        /// How long to keep retrying to open a connection before giving up.
        public var connectRetryTimeout: Duration
        /// Names the connections' threads (`NAME-1`, `NAME-2`, …).
        public var threadName: String
        /// Told when a connection attempt failed and will be tried again (for up to
        /// `connectRetryTimeout`), with the failure: once per connection being opened.
        public var onConnectRetry: (@Sendable (PostgresError) -> Void)?

        public init(
            maxConnections: Int = 8, connectRetryTimeout: Duration = .seconds(15), threadName: String = "pg",
            onConnectRetry: (@Sendable (PostgresError) -> Void)? = nil
        ) {
            self.maxConnections = max(1, maxConnections)
            self.connectRetryTimeout = connectRetryTimeout
            self.threadName = threadName
            self.onConnectRetry = onConnectRetry
        }
    }

    public let configuration: PostgresConfiguration
    public let options: Options

    private struct Waiter {
        let id: UInt64
        /// Resumed with a connection, or with nil to say "a slot is free: open one yourself".
        let continuation: CheckedContinuation<PostgresConnection?, Error>
    }

    private struct State {
        var idle: [PostgresConnection] = []
        var open = 0
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
        var closed = false
        /// Fewer connections than `maxConnections` for a while: the server had no slot free for
        /// one more, so checkouts wait for those open rather than knock on a full server.
        var cap: (limit: Int, until: ContinuousClock.Instant)?
        /// False once the owner gives up waiting for the server (`stopRetryingConnects`).
        var retryConnects = true
    }

    private let state = Mutex(State())

    public init(_ configuration: PostgresConfiguration, options: Options = Options()) {
        self.configuration = configuration
        self.options = options
    }

    /// Lends a connection to `body` and takes it back afterwards, whatever `body` does.
    public func withConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await checkout()
        let value: T
        do {
            value = try await body(connection)
        } catch {
            await checkin(connection)
            throw error
        }
        await checkin(connection)
        return value
    }

    /// Runs `body` in a transaction on a pooled connection: commit on return, rollback on throw.
    public func withTransaction<T>(
        isolation: PostgresIsolation? = nil, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await withConnection { connection in
            try await connection.withTransaction(isolation: isolation, body)
        }
    }

    /// Runs one statement on a pooled connection.
    @discardableResult
    public func query(_ sql: String, _ binds: [(any PostgresEncodable)?] = []) async throws -> PostgresRows {
        try await withConnection { try await $0.query(sql, binds) }
    }

    /// Runs one statement on a pooled connection, prepared there the first time it runs on it;
    /// see `PostgresConnection.query(_:_:prepared:)`.
    @discardableResult
    public func query(_ sql: String, _ binds: [(any PostgresEncodable)?], prepared: Bool) async throws -> PostgresRows {
        try await withConnection { try await $0.query(sql, binds, prepared: prepared) }
    }

    /// Sends a batch of statements in one round trip; see `PostgresConnection.pipeline(_:)`.
    public func pipeline(_ statements: [PostgresStatement]) async throws -> [PostgresRows] {
        try await withConnection { try await $0.pipeline(statements) }
    }

    /// Sends a batch of statements in one round trip, each its own transaction; see
    /// `PostgresConnection.pipelineSeparately(_:)`.
    public func pipelineSeparately(_ statements: [PostgresStatement]) async throws -> [Result<PostgresRows, any Error>] {
        try await withConnection { try await $0.pipelineSeparately(statements) }
    }

    /// Listens on channels over a dedicated connection (outside the pool's bound).
    /// - Returns: once every `LISTEN` is in place, a sequence of notifications and reconnects.
    /// - Parameter coalescing: at most one notification per channel of those that arrive
    ///   together, without payloads (for wake-ups).
    public func listen(on channels: [String], coalescing: Bool = false) async throws -> PostgresNotifications {
        try await PostgresNotifications.start(configuration: configuration, channels: channels, coalescing: coalescing)
    }

    /// Closes idle connections and refuses new checkouts; lent connections close on return.
    public func close() async {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            defer {
                state.open -= state.idle.count
                state.idle = []
                state.waiters = []
            }
            return (state.idle, state.waiters)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: Self.closedError) }
        for connection in idle { await connection.close() }
    }

    /// From now on, a connection that cannot be opened fails at once instead of being retried for
    /// `connectRetryTimeout`: for a process stopping with the database down.
    public func stopRetryingConnects() {
        state.withLock { $0.retryConnects = false }
    }

    /// Connections open now, lent or idle.
    public var openConnections: Int { state.withLock { $0.open } }

    // MARK: Checkout and checkin

    private enum Step {
        case use(PostgresConnection)
        case open
        case wait
    }

    private func checkout() async throws -> PostgresConnection {
        while true {
            let step: Step = try state.withLock { state in
                if state.closed { throw Self.closedError }
                if let connection = state.idle.popLast() { return .use(connection) }
                if state.open < limit(&state) {
                    state.open += 1
                    return .open
                }
                return .wait
            }
            switch step {
            case .use(let connection):
                if await connection.isReusable() { return connection }
                await discard(connection)
            case .open:
                do {
                    return try await openConnection()
                } catch let error as PostgresError where error.isServerFull && capAtOthers() {
                    // A worker started beside a full fleet opened each extra connection for 15 s
                    // per checkout and did 36 jobs in 90 s: it waits for its own instead, and
                    // asks the server again after a while.
                    releaseSlot()
                } catch {
                    releaseSlot()
                    throw error
                }
            case .wait:
                if let connection = try await waitForTurn() { return connection }
            }
        }
    }

    private func waitForTurn() async throws -> PostgresConnection? {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let action: (() -> Void)? = state.withLock { state in
                    if state.closed { return { continuation.resume(throwing: Self.closedError) } }
                    if Task.isCancelled { return { continuation.resume(throwing: CancellationError()) } }
                    if let connection = state.idle.popLast() { return { continuation.resume(returning: connection) } }
                    if state.open < limit(&state) { return { continuation.resume(returning: nil) } }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                action?()
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    private func checkin(_ connection: PostgresConnection) async {
        guard await connection.resetForReuse() else {
            await discard(connection)
            return
        }
        enum Return {
            case handOver(Waiter)
            case keep
            case close
        }
        let decision: Return = state.withLock { state in
            if state.closed { return .close }
            if !state.waiters.isEmpty { return .handOver(state.waiters.removeFirst()) }
            state.idle.append(connection)
            return .keep
        }
        switch decision {
        case .handOver(let waiter): waiter.continuation.resume(returning: connection)
        case .keep: break
        case .close: await discard(connection)
        }
    }

    private func discard(_ connection: PostgresConnection) async {
        await connection.close()
        releaseSlot()
    }

    /// Frees one slot and lets the longest waiter open a connection in it.
    private func releaseSlot() {
        let waiter = state.withLock { state -> Waiter? in
            state.open -= 1
            return state.waiters.isEmpty ? nil : state.waiters.removeFirst()
        }
        waiter?.continuation.resume(returning: nil)
    }

    /// How many connections may be open now: `maxConnections`, or fewer (never none) while the
    /// server is full.
    private func limit(_ state: inout State) -> Int {
        if let cap = state.cap, cap.until < .now { state.cap = nil }
        return min(options.maxConnections, max(1, state.cap?.limit ?? .max))
    }

    /// Whether connections other than the one being opened exist, to wait for.
    private func othersOpen() -> Bool { state.withLock { $0.open > 1 } }

    /// When connections other than the one being opened exist, caps the pool at them for a while
    /// and says so; in one step, so a connection discarded meanwhile cannot make the cap 0 (no
    /// connection to wait for, and none allowed).
    private func capAtOthers() -> Bool {
        state.withLock { state in
            guard state.open > 1 else { return false }
            state.cap = (state.open - 1, .now + .seconds(30))
            return true
        }
    }

    private func openConnection() async throws -> PostgresConnection {
        let threadName = "\(options.threadName)-\(state.withLock { $0.open })"
        let clock = ContinuousClock()
        let deadline = clock.now + options.connectRetryTimeout
        var delay = Duration.milliseconds(50)
        var told = false
        while true {
            do {
                return try await PostgresConnection.connect(configuration, threadName: threadName)
            } catch let error as PostgresError
                where error.isWorthReconnecting && !(error.isServerFull && othersOpen()) && clock.now + delay < deadline
                    && state.withLock({ $0.retryConnects })
            {
                if !told, let onConnectRetry = options.onConnectRetry {
                    told = true
                    onConnectRetry(error)
                }
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
        }
    }

    private static let closedError = PostgresError(
        .poolUnavailable, "the connection pool is closed", hint: "The process is shutting down; retry elsewhere."
    )
}

extension PostgresError {
    /// The server refused a connection because it has no slot free (`max_connections`).
    var isServerFull: Bool {
        code == .connectionFailed
            && ["too many clients", "remaining connection slots are reserved", "too many connections for"].contains {
                message.contains($0)
            }
    }

    /// A connection failure that may clear up by itself (server down, restarting, or overloaded),
    /// unlike wrong credentials or a missing database.
    var isWorthReconnecting: Bool {
        guard code == .connectionFailed else { return false }
        // Only libpq's reason, after "could not connect to TARGET: ": a database named
        // `invalid_x` must not make every failure look permanent.
        let reason = message.range(of: ": ").map { String(message[$0.upperBound...]) } ?? message
        let permanent = [
            "authentication failed", "no password supplied", "does not exist", "permission denied",
            "no pg_hba.conf entry", "invalid ", "server does not support SSL", "certificate", "sslmode",
        ]
        // Not "SSL" alone: "SSL SYSCALL error: EOF detected" is a server going away mid-handshake.
        return !permanent.contains { reason.contains($0) }
    }
}
