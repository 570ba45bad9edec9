import Foundation
import QueueModel
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The process's one HTTP client for provider APIs: a URLSession sized for the worker's
/// concurrency, with per-attempt timeouts and cancellation.
///
/// FoundationNetworking allows 6 connections per host by default, which would queue a worker's
/// attempts behind each other; the limit is raised to the worker's concurrency. TLS certificates
/// are verified; only a model the catalog flags and the worker's operator confirms may skip it
/// (`InsecureTLS`). Nothing is cached and no cookies are kept.
public final class HTTPTransport: Sendable {
    /// The most connections held open to one host at once.
    public let maximumConnectionsPerHost: Int
    /// Whether (and for which models) this worker's operator allowed skipping TLS verification.
    public let insecureTLS: InsecureTLS
    private let session: URLSession
    #if !canImport(FoundationNetworking)
        /// Made only when the operator confirmed skipping verification for some model.
        private let unverifiedSession: URLSession?
    #endif

    /// Creates the process's transport, and warns (on every start) when the environment allows
    /// skipping TLS verification for some model.
    /// - Parameters:
    ///   - maximumConnectionsPerHost: the worker's concurrency (attempts in flight).
    ///   - environment: where `SWITCHYARD_INSECURE_TLS_MODELS` is read from.
    ///   - logger: where the warning goes.
    public init(
        maximumConnectionsPerHost: Int, environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger = Logger(label: "worker")
    ) {
        self.maximumConnectionsPerHost = max(1, maximumConnectionsPerHost)
        insecureTLS = InsecureTLS(environment: environment)
        if let warning = insecureTLS.startWarning { logger.warning(warning) }
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
        #if !canImport(FoundationNetworking)
            unverifiedSession =
                insecureTLS.confirmedModels.isEmpty
                ? nil : URLSession(configuration: configuration, delegate: TrustingDelegate(), delegateQueue: nil)
        #endif
    }

    deinit {
        session.finishTasksAndInvalidate()
        #if !canImport(FoundationNetworking)
            unverifiedSession?.finishTasksAndInvalidate()
        #endif
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

        /// The exchange with every registered secret replaced in its body and headers, whole,
        /// before anything parses or cuts them (an excerpt cut through a key would no longer
        /// match it). Adapters read provider answers only this way, so a key a provider echoes
        /// cannot reach a result, a trail or a log.
        func redactingSecrets() -> Exchange {
            var copy = self
            let text = String(decoding: body, as: UTF8.self)
            let clean = Secrets.redact(text)
            if clean != text { copy.body = Data(clean.utf8) }
            copy.headers = headers.mapValues { Secrets.redact($0) }
            return copy
        }
    }

    /// Sends a request and waits for the whole response, at most `timeout`.
    ///
    /// The timer is the budget: the request races a timer in a task group, which cancels the
    /// request when the timer wins, so a server that accepts the connection and then hangs cannot
    /// hold the attempt past its budget. The request's own timeout is only a backstop, a second
    /// past the budget in whole seconds: Linux's URLSession applies it in whole seconds (1.5 s
    /// cut at 1 s; 0.7 s at once).
    /// - Parameter skipVerification: true only when `InsecureTLS.skipsVerification` said so.
    /// - Throws: `ProviderError` (`timedOut`, `connectionFailed`), or `CancellationError` when the
    ///   calling task was cancelled (the request is cancelled with it).
    func send(
        _ request: URLRequest, timeout: Duration, model: String, skipVerification: Bool = false
    ) async throws -> Exchange {
        var bounded = request
        bounded.timeoutInterval =
            (Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18).rounded(.up) + 1
        let request = bounded
        let clock = ContinuousClock()
        let start = clock.now
        do {
            var exchange = try await withThrowingTaskGroup(of: Exchange.self) { group in
                group.addTask { try await self.perform(request, skipVerification: skipVerification) }
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
    private func perform(_ request: URLRequest, skipVerification: Bool) async throws -> Exchange {
        #if canImport(FoundationNetworking)
            let session = session
        #else
            let session = skipVerification ? (unverifiedSession ?? session) : session
        #endif
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

#if !canImport(FoundationNetworking)
    /// Accepts any server certificate: used only for models the catalog flags and the operator
    /// confirmed (`InsecureTLS`). No state, so sharing it between threads is safe.
    private final class TrustingDelegate: NSObject, URLSessionDelegate, @unchecked Sendable {
        func urlSession(
            _ session: URLSession, didReceive challenge: URLAuthenticationChallenge
        ) async -> (URLSession.AuthChallengeDisposition, URLCredential?) {
            guard challenge.protectionSpace.authenticationMethod == NSURLAuthenticationMethodServerTrust,
                let trust = challenge.protectionSpace.serverTrust
            else { return (.performDefaultHandling, nil) }
            return (.useCredential, URLCredential(trust: trust))
        }
    }
#endif
