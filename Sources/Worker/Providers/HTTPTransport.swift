import Foundation
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The process's one HTTP client for provider APIs: a URLSession sized for the worker's
/// concurrency, with per-attempt timeouts and cancellation.
///
/// FoundationNetworking allows 6 connections per host by default, which would queue a worker's
/// attempts behind each other; the limit is raised to the worker's concurrency. TLS certificates
/// are verified (no delegate overrides it). Nothing is cached and no cookies are kept.
public final class HTTPTransport: Sendable {
    /// The most connections held open to one host at once.
    public let maximumConnectionsPerHost: Int
    private let session: URLSession

    /// Creates the process's transport.
    /// - Parameter maximumConnectionsPerHost: the worker's concurrency (attempts in flight).
    public init(maximumConnectionsPerHost: Int) {
        self.maximumConnectionsPerHost = max(1, maximumConnectionsPerHost)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = self.maximumConnectionsPerHost
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.urlCache = nil
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        // Per-attempt timeouts are set on each request and enforced by `send`; these only stop a
        // request nobody bounded from living forever.
        configuration.timeoutIntervalForRequest = 600
        configuration.timeoutIntervalForResource = 600
        session = URLSession(configuration: configuration)
    }

    deinit {
        session.finishTasksAndInvalidate()
    }

    /// A response, whatever its status.
    struct Exchange: Sendable {
        /// The HTTP status.
        var status: Int
        /// The response headers, names lowercased.
        var headers: [String: String]
        /// The whole body.
        var body: Data
        /// From sending the request to having the whole body.
        var latency: Duration
    }

    /// Sends a request and waits for the whole response, at most `timeout`.
    ///
    /// The timeout is enforced twice: as the request's own timeout, and by racing the request
    /// against a timer in a task group, which cancels the request when the timer wins, so a server
    /// that accepts the connection and then hangs cannot hold the attempt past its budget.
    /// - Throws: `ProviderError` (`timedOut`, `connectionFailed`), or `CancellationError` when the
    ///   calling task was cancelled (the request is cancelled with it).
    func send(_ request: URLRequest, timeout: Duration, model: String) async throws -> Exchange {
        var bounded = request
        bounded.timeoutInterval = max(
            0.001, Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        let request = bounded
        let clock = ContinuousClock()
        let start = clock.now
        do {
            var exchange = try await withThrowingTaskGroup(of: Exchange.self) { group in
                group.addTask { try await self.perform(request) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw ProviderError(
                        .timedOut, "no complete answer within the attempt's budget of \(ProviderError.format(timeout))",
                        model: model)
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
            exchange.latency = start.duration(to: clock.now)
            return exchange
        } catch {
            if Task.isCancelled { throw CancellationError() }
            var failure = ProviderError.fromTransport(error, model: model, latency: nil)
            failure.latency = start.duration(to: clock.now)
            throw failure
        }
    }

    /// One data task, cancelled when the calling task is.
    private func perform(_ request: URLRequest) async throws -> Exchange {
        let handle = TaskHandle()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Exchange, Error>) in
                let task = session.dataTask(with: request) { data, response, error in
                    if let error {
                        continuation.resume(throwing: error)
                    } else if let response = response as? HTTPURLResponse {
                        var headers: [String: String] = [:]
                        for (name, value) in response.allHeaderFields {
                            headers[String(describing: name).lowercased()] = String(describing: value)
                        }
                        continuation.resume(
                            returning: Exchange(
                                status: response.statusCode, headers: headers, body: data ?? Data(), latency: .zero))
                    } else {
                        continuation.resume(throwing: URLError(.badServerResponse))
                    }
                }
                handle.start(task)
            }
        } onCancel: {
            handle.cancel()
        }
    }

    /// The data task of one `perform`, so the cancellation handler (which may run before the task
    /// exists, or concurrently with its start) can cancel it.
    private final class TaskHandle: Sendable {
        // The mutex guards both fields; a task is started or cancelled only while holding it, so
        // a cancellation that arrives before `start` cancels the task as soon as it exists.
        private let state = Mutex<(task: URLSessionDataTask?, cancelled: Bool)>((nil, false))

        func start(_ task: URLSessionDataTask) {
            state.withLock { state in
                state.task = task
                if state.cancelled { task.cancel() } else { task.resume() }
            }
        }

        func cancel() {
            state.withLock { state in
                state.cancelled = true
                state.task?.cancel()
            }
        }
    }
}
