import CLibPQ
import Foundation

/// One batch of statements sent in libpq pipeline mode, in one round trip.
///
/// The socket is non-blocking while the batch is in flight and the results are read while
/// statements are still being sent: with a large batch, a client that only wrote would
/// eventually block on a full socket while the server blocks on its own full socket of results.
struct Pipeline {
    let handle: OpaquePointer
    let statements: [PostgresStatement]
    /// A Sync after each statement, so each commits (or fails) on its own; otherwise a single
    /// Sync at the end makes the batch one implicit transaction.
    let separately: Bool

    /// How many statements to queue before reading whatever results have arrived.
    private let sendChunk = 64

    init(handle: OpaquePointer, statements: [PostgresStatement], separately: Bool = false) {
        self.handle = handle
        self.statements = statements
        self.separately = separately
    }

    /// Each statement's rows, in order, or the batch's first failure (statements after it were
    /// skipped, unless `separately`).
    func run() throws -> [PostgresRows] {
        try exchange().map { try $0.get() }
    }

    /// Each statement's rows or failure, in order. A failure of the connection is thrown.
    func exchange() throws -> [Result<PostgresRows, any Error>] {
        if statements.isEmpty { return [] }
        guard PQenterPipelineMode(handle) == 1 else {
            throw PostgresError(
                .protocolViolation, "could not enter pipeline mode: \(LibPQ.errorMessage(handle))"
            )
        }
        guard PQsetnonblocking(handle, 1) == 0 else {
            PQexitPipelineMode(handle)
            throw LibPQ.connectionError(handle)
        }
        defer {
            PQsetnonblocking(handle, 0)
            PQexitPipelineMode(handle)
        }

        var results: [Result<PostgresRows, any Error>] = []
        results.reserveCapacity(statements.count)
        var sent = 0
        var synced = false
        var awaitingEndOfStatement = false
        let syncs = separately ? statements.count : 1
        var syncsSeen = 0

        while syncsSeen < syncs {
            var queued = 0
            while sent < statements.count && queued < sendChunk {
                let statement = statements[sent]
                let accepted = try LibPQ.withParameters(statement.binds) { parameters in
                    PQsendQueryParams(
                        handle, try LibPQ.checked(statement.sql), parameters.count, parameters.types, parameters.values,
                        parameters.lengths, parameters.formats, 0
                    )
                }
                guard accepted == 1 else { throw LibPQ.connectionError(handle) }
                if separately {
                    guard PQpipelineSync(handle) == 1 else { throw LibPQ.connectionError(handle) }
                }
                sent += 1
                queued += 1
            }
            if sent == statements.count && !synced && !separately {
                guard PQpipelineSync(handle) == 1 else { throw LibPQ.connectionError(handle) }
                synced = true
            }
            let flush = PQflush(handle)
            guard flush >= 0 else { throw LibPQ.connectionError(handle) }

            guard PQconsumeInput(handle) == 1 else { throw LibPQ.connectionError(handle) }
            var progressed = false
            while syncsSeen < syncs && PQisBusy(handle) == 0 {
                guard let result = PQgetResult(handle) else {
                    // NULL ends one statement's results; the next call starts the next statement's.
                    guard awaitingEndOfStatement else { break }
                    awaitingEndOfStatement = false
                    progressed = true
                    continue
                }
                progressed = true
                if PQresultStatus(result) == PGRES_PIPELINE_SYNC {
                    PQclear(result)
                    syncsSeen += 1
                    continue
                }
                awaitingEndOfStatement = true
                // In one transaction, statements after a failure come back "aborted": the first
                // failure is the story.
                results.append(Result { try LibPQ.rows(result, handle) })
            }
            if syncsSeen == syncs { break }
            // More to send and the socket took everything so far: keep sending.
            if flush == 0 && sent < statements.count { continue }
            if progressed && flush == 0 { continue }
            // Nothing more to send right now: wait until the server answers or the socket drains.
            var descriptor = pollfd(
                fd: PQsocket(handle), events: Int16(POLLIN) | (flush == 1 ? Int16(POLLOUT) : 0), revents: 0
            )
            while poll(&descriptor, 1, -1) < 0 {
                guard errno == EINTR else { throw LibPQ.connectionError(handle) }
            }
        }
        return results
    }
}
