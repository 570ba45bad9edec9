import Foundation
import QueueModel
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A minimal HTTP responder for Prometheus scrapes: `GET /metrics` answers the rendered series,
/// any other path 404, any other method 405. `Connection: close`.
///
/// Sockets block, so the accept loop runs on a dedicated thread, never on the cooperative pool,
/// and each connection on a thread of its own (at most `maximumConnections` at once; past that a
/// connection is closed at once): an idle or slow client cannot hold up a scrape. A request has
/// 2 seconds in all to send its head, however slowly it trickles in, and 2 for its answer.
final class MetricsServer: Sendable {
    /// The address bound (`127.0.0.1` unless told otherwise).
    let address: String
    /// The port bound (the one the kernel chose when asked for port 0).
    let port: Int
    private let listener: Int32
    private let render: @Sendable () -> String
    /// Whether `stop()` ran, and whether the loop closed the listener: kept under one lock so the
    /// descriptor is never shut down after it was closed (and perhaps reused).
    private let state = Mutex((stopped: false, closed: false))
    /// Connections being served now.
    private let active = Mutex(0)
    /// The most connections served at once.
    static let maximumConnections = 16

    /// Binds and listens (the thread starts with `start()`).
    /// - Throws: `QueueError.invalidInput` when the address is not an IP address, or the port
    ///   cannot be bound (in use, or privileged), saying what to change.
    init(address: String = "127.0.0.1", port: Int, render: @escaping @Sendable () -> String) throws {
        self.address = address
        self.render = render
        let isIPv6 = address.contains(":")
        let descriptor = socket(isIPv6 ? AF_INET6 : AF_INET, Self.streamType, 0)
        guard descriptor >= 0 else { throw Self.failure("create a socket", address, port) }
        var yes: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        let bound: Int32
        if isIPv6 {
            var socketAddress = sockaddr_in6()
            socketAddress.sin6_family = sa_family_t(AF_INET6)
            socketAddress.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, address, &socketAddress.sin6_addr) == 1 else {
                close(descriptor)
                throw Self.badAddress(address)
            }
            bound = withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        } else {
            var socketAddress = sockaddr_in()
            socketAddress.sin_family = sa_family_t(AF_INET)
            socketAddress.sin_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET, address, &socketAddress.sin_addr) == 1 else {
                close(descriptor)
                throw Self.badAddress(address)
            }
            bound = withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard bound == 0, listen(descriptor, 16) == 0 else {
            let error = Self.failure("listen", address, port)
            close(descriptor)
            throw error
        }
        self.listener = descriptor
        self.port = Self.boundPort(descriptor) ?? port
    }

    /// Starts answering on a thread of its own.
    func start() {
        let thread = Thread { [self] in self.acceptLoop() }
        thread.name = "metrics-http"
        thread.stackSize = 256 * 1024
        thread.start()
    }

    /// Stops accepting; the thread closes the socket on its way out.
    func stop() {
        state.withLock { state in
            guard !state.stopped else { return }
            state.stopped = true
            // Wakes the blocked accept() (it returns an error), which ends the loop.
            if !state.closed { shutdown(listener, Int32(SHUT_RDWR)) }
        }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func acceptLoop() {
        while !isStopped {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if isStopped { break }
                usleep(100_000)  // e.g. out of descriptors: back off instead of spinning
                continue
            }
            let admitted = active.withLock { count in
                guard count < Self.maximumConnections else { return false }
                count += 1
                return true
            }
            guard admitted else {
                close(connection)
                continue
            }
            let thread = Thread { [self] in
                serve(connection)
                close(connection)
                active.withLock { $0 -= 1 }
            }
            thread.name = "metrics-conn"
            thread.stackSize = 256 * 1024
            thread.start()
        }
        state.withLock { state in
            state.closed = true
            close(listener)
        }
    }

    private func serve(_ connection: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard let head = Self.readHead(connection, within: .seconds(2)) else { return }
        let response = Self.respond(to: head, render: render)
        Self.writeAll(connection, response)
    }

    /// The response bytes for a request head (the request line and headers).
    static func respond(to head: String, render: () -> String) -> Data {
        let requestLine = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
        let parts = requestLine.split(separator: " ")
        guard parts.count >= 2 else { return response(400, "Bad Request", "malformed request line\n") }
        let method = parts[0]
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard path == "/metrics" else {
            return response(404, "Not Found", "not found: only /metrics is served here\n")
        }
        guard method == "GET" || method == "HEAD" else {
            return response(405, "Method Not Allowed", "use GET /metrics\n", extra: "Allow: GET, HEAD\r\n")
        }
        return response(200, "OK", render(), contentType: MetricsRegistry.contentType, bodyless: method == "HEAD")
    }

    private static func response(
        _ status: Int, _ reason: String, _ body: String, contentType: String = "text/plain; charset=utf-8",
        extra: String = "", bodyless: Bool = false
    ) -> Data {
        let bytes = Data(body.utf8)
        var data = Data(
            ("HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\n"
                + "\(extra)Connection: close\r\n\r\n").utf8)
        if !bodyless { data.append(bytes) }
        return data
    }

    /// Reads until the end of the headers (or 16 KB, or `limit` in all); nil when nothing came.
    private static func readHead(_ connection: Int32, within limit: Duration) -> String? {
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while received.count < 16_384 {
            // Each read waits only for what is left of the limit: a byte now and then cannot keep
            // the connection open.
            let left = clock.now.duration(to: deadline)
            guard left > .zero else { break }
            let microseconds = max(1, Int(left.components.seconds) * 1_000_000 + Int(left.components.attoseconds / 1_000_000_000_000))
            var timeout = timeval(tv_sec: microseconds / 1_000_000, tv_usec: .init(microseconds % 1_000_000))
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received += buffer[..<count]
            if received.count >= 4, received.suffix(4).elementsEqual(end) { break }
            if let text = String(bytes: received, encoding: .utf8), text.contains("\r\n\r\n") { break }
        }
        return received.isEmpty ? nil : String(decoding: received, as: UTF8.self)
    }

    private static func writeAll(_ connection: Int32, _ data: Data) {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let sent = send(connection, raw.baseAddress! + offset, raw.count - offset, Self.sendFlags)
                if sent <= 0 { return }
                offset += sent
            }
        }
    }

    #if os(Linux)
        private static let streamType = Int32(SOCK_STREAM.rawValue)
        /// A client that hung up must not kill the worker with SIGPIPE.
        private static let sendFlags = Int32(MSG_NOSIGNAL)
    #else
        private static let streamType = SOCK_STREAM
        private static let sendFlags: Int32 = 0
    #endif

    private static func boundPort(_ descriptor: Int32) -> Int? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard result == 0 else { return nil }
        if Int32(storage.ss_family) == AF_INET6 {
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    Int(UInt16(bigEndian: $0.pointee.sin6_port))
                }
            }
        }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    private static func failure(_ action: String, _ address: String, _ port: Int) -> QueueError {
        let reason = String(cString: strerror(errno))
        return QueueError(
            .invalidInput, "cannot \(action) for metrics on \(address):\(port): \(reason)",
            hint: "choose another --metrics-port (or 0 for any free port), or stop the process that holds it")
    }

    private static func badAddress(_ address: String) -> QueueError {
        QueueError(
            .invalidInput, "--metrics-address \"\(address)\" is not an IP address",
            hint: "use 127.0.0.1 (the default, local scrapes only), 0.0.0.0 (every interface) or ::1")
    }
}
