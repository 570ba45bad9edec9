import CLibPQ
import Foundation

/// One batch of statements sent in libpq pipeline mode, ending in a single Sync.
///
/// The socket is non-blocking while the batch is in flight and the results are read while
/// statements are still being sent: with a large batch, a client that only wrote would
/// eventually block on a full socket while the server blocks on its own full socket of results.
struct Pipeline {
    let handle: OpaquePointer
    let statements: [PostgresStatement]

    /// How many statements to queue before reading whatever results have arrived.
    private let sendChunk = 64

    func run() throws -> [PostgresRows] {
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

        var results: [PostgresRows] = []
        results.reserveCapacity(statements.count)
        var firstError: Error?
        var sent = 0
        var synced = false
        var awaitingEndOfStatement = false
        var sawSync = false

        while !sawSync {
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
                sent += 1
                queued += 1
            }
            if sent == statements.count && !synced {
                guard PQpipelineSync(handle) == 1 else { throw LibPQ.connectionError(handle) }
                synced = true
            }
            let flush = PQflush(handle)
            guard flush >= 0 else { throw LibPQ.connectionError(handle) }

            guard PQconsumeInput(handle) == 1 else { throw LibPQ.connectionError(handle) }
            var progressed = false
            while !sawSync && PQisBusy(handle) == 0 {
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
                    sawSync = true
                    break
                }
                awaitingEndOfStatement = true
                do {
                    results.append(try LibPQ.rows(result, handle))
                } catch {
                    // Statements after a failure come back "aborted"; the first failure is the story.
                    if firstError == nil { firstError = error }
                }
            }
            if sawSync { break }
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
        if let firstError { throw firstError }
        return results
    }
}
