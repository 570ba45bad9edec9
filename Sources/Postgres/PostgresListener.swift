import CLibPQ
import Foundation

/// A NOTIFY received on a channel this process listens on.
public struct PostgresNotification: Sendable, Hashable {
    public var channel: String
    public var payload: String
    /// The server process that sent it.
    public var senderPID: Int32
}

/// What a `listen(on:)` sequence yields.
public enum PostgresListenEvent: Sendable, Hashable {
    case notification(PostgresNotification)
    /// The listening connection broke; it is being re-established. Notifications sent from now
    /// until `.reconnected` are lost.
    case disconnected(reason: String)
    /// The connection was re-established and every channel is listened to again. Notifications
    /// sent while disconnected were lost: poll for whatever they would have announced.
    case reconnected
}

/// Notifications from a dedicated listening connection, as an `AsyncSequence`.
///
/// Ending the iteration (or cancelling its task) closes the connection and stops its thread.
/// A slow consumer loses the oldest events beyond `bufferLimit`: notifications are wake-ups
/// to poll, never the only record of anything.
public struct PostgresNotifications: AsyncSequence, Sendable {
    public typealias Element = PostgresListenEvent
    let stream: AsyncStream<PostgresListenEvent>

    public func makeAsyncIterator() -> AsyncStream<PostgresListenEvent>.Iterator {
        stream.makeAsyncIterator()
    }

    /// Starts listening; returns once every channel is listened to on the server.
    /// - Throws: `PostgresError` when the first connection or a `LISTEN` fails.
    /// - Parameter coalescing: deliver at most one notification per channel of what arrived
    ///   together, without its payload: for listeners that take a notification as a wake-up
    ///   (any session may NOTIFY, and a flood of them cost a worker a core).
    static func start(
        configuration: PostgresConfiguration, channels: [String], coalescing: Bool = false, bufferLimit: Int = 10_000
    ) async throws -> PostgresNotifications {
        let (stream, continuation) = AsyncStream.makeStream(
            of: PostgresListenEvent.self, bufferingPolicy: .bufferingNewest(bufferLimit)
        )
        let listener = try ListenerThread(
            configuration: configuration, channels: channels, coalescing: coalescing, continuation: continuation)
        continuation.onTermination = { _ in listener.stop() }
        try await withCheckedThrowingContinuation { (ready: CheckedContinuation<Void, Error>) in
            listener.start(ready: ready)
        }
        return PostgresNotifications(stream: stream)
    }
}

/// The thread behind a `PostgresNotifications`: waits on the connection's socket with `poll`
/// (no sleeping, no timers), and on a pipe that `stop()` writes to.
private final class ListenerThread: @unchecked Sendable {
    // Safe because the libpq handle is only touched by the thread `start` creates; other threads
    // only write to `wakeWrite`, and `stopped` is guarded by `lock`. The pipe is closed in deinit,
    // when neither the thread nor a `stop()` can use it: closed as the thread ended, a later
    // `stop()` (the stream's termination, which the thread's own end sets off) wrote its byte to
    // whatever the process had opened under that number since, such as a socket to a server
    // gone (SIGPIPE, which killed a test run) or a connection in use.
    private let configuration: PostgresConfiguration
    private let channels: [String]
    private let coalescing: Bool
    private let noticeSink: NoticeSink
    private let continuation: AsyncStream<PostgresListenEvent>.Continuation
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let lock = NSLock()
    private var stopped = false

    init(
        configuration: PostgresConfiguration, channels: [String], coalescing: Bool,
        continuation: AsyncStream<PostgresListenEvent>.Continuation
    ) throws {
        self.configuration = configuration
        self.channels = channels
        self.coalescing = coalescing
        self.noticeSink = NoticeSink(handler: configuration.noticeHandler)
        self.continuation = continuation
        var descriptors: [Int32] = [0, 0]
        guard switchyard_cloexec_pipe(&descriptors) == 0 else {
            throw PostgresError(.connectionFailed, "could not create a pipe for the listener: errno \(errno)")
        }
        wakeRead = descriptors[0]
        wakeWrite = descriptors[1]
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    func start(ready: CheckedContinuation<Void, Error>) {
        let thread = Thread { [self] in run(ready: ready) }
        thread.name = "postgres-listen"
        thread.stackSize = 512 * 1024
        thread.start()
    }

    func stop() {
        let first = lock.withLock {
            defer { stopped = true }
            return !stopped
        }
        if first {
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)
        }
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func run(ready: CheckedContinuation<Void, Error>) {
        var handle: OpaquePointer?
        var ready: CheckedContinuation<Void, Error>? = ready
        var backoffMS: Int32 = 50
        defer {
            if let handle { PQfinish(handle) }
            continuation.finish()
        }
        while !isStopped {
            guard let connection = handle else {
                do {
                    handle = try connectAndListen()
                } catch {
                    if let first = ready {
                        first.resume(throwing: error)
                        return
                    }
                    // Wait out the backoff, unless stop() comes first.
                    if waitForWake(timeoutMS: backoffMS) { return }
                    backoffMS = min(backoffMS * 2, 2000)
                    continue
                }
                backoffMS = 50
                if let first = ready {
                    first.resume()
                    ready = nil
                } else {
                    continuation.yield(.reconnected)
                }
                continue
            }
            var descriptors = [
                pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0),
                pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&descriptors, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if descriptors[1].revents != 0 { return }
            if descriptors[0].revents != 0 {
                if PQconsumeInput(connection) == 0 || PQstatus(connection) != CONNECTION_OK {
                    continuation.yield(.disconnected(reason: LibPQ.errorMessage(connection)))
                    PQfinish(connection)
                    handle = nil
                    continue
                }
                var seen: Set<String> = []
                while let notify = PQnotifies(connection) {
                    defer { PQfreemem(notify) }
                    let channel = String(cString: notify.pointee.relname)
                    if coalescing {
                        guard seen.insert(channel).inserted else { continue }
                        continuation.yield(
                            .notification(PostgresNotification(channel: channel, payload: "", senderPID: notify.pointee.be_pid)))
                        continue
                    }
                    continuation.yield(
                        .notification(
                            PostgresNotification(
                                channel: channel, payload: String(cString: notify.pointee.extra),
                                senderPID: notify.pointee.be_pid
                            )
                        )
                    )
                }
            }
        }
    }

    private func connectAndListen() throws -> OpaquePointer {
        let handle = try LibPQ.connect(configuration, noticeSink: noticeSink)
        for channel in channels {
            guard let quoted = PQescapeIdentifier(handle, channel, channel.utf8.count) else {
                defer { PQfinish(handle) }
                throw LibPQ.connectionError(handle)
            }
            let statement = "LISTEN " + String(cString: quoted)
            PQfreemem(quoted)
            do {
                _ = try LibPQ.rows(PQexec(handle, statement), handle)
            } catch {
                PQfinish(handle)
                throw error
            }
        }
        return handle
    }

    /// Waits up to `timeoutMS` for `stop()`; returns true when stopped.
    private func waitForWake(timeoutMS: Int32) -> Bool {
        var descriptor = pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)
        _ = poll(&descriptor, 1, timeoutMS)
        return descriptor.revents != 0 || isStopped
    }
}
