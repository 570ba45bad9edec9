import Foundation
import QueueModel
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The process's one HTTP client for provider APIs: a URLSession sized for the worker's
/// concurrency, with per-attempt timeouts, cancellation and a bound on how much of an answer it
/// reads.
///
/// FoundationNetworking allows 6 connections per host by default, which would queue a worker's
/// attempts behind each other; the limit is raised to the worker's concurrency. TLS certificates
/// are verified; only a model the catalog flags and the worker's operator confirms may skip it
/// (`InsecureTLS`). Nothing is cached and no cookies are kept.
///
/// A body is collected as it arrives and cut off once it passes `maximumResponseBytes`: a
/// provider (or a misconfigured base URL) that sends an endless or enormous answer fails that
/// attempt instead of holding it all in the worker's memory, where it would take every job in
/// flight down with the process.
public final class HTTPTransport: Sendable {
    /// The most bytes of one response body read by default: 32 MiB. A chat completion at the
    /// largest output limits is a few megabytes at most.
    public static let defaultMaximumResponseBytes = 32 << 20
    /// The most connections held open to one host at once.
    public let maximumConnectionsPerHost: Int
    /// The most bytes of one response body read; a longer one fails the attempt.
    public let maximumResponseBytes: Int
    /// Whether (and for which models) this worker's operator allowed skipping TLS verification.
    public let insecureTLS: InsecureTLS
    private let session: URLSession
    private let collector: ResponseCollector
    #if !canImport(FoundationNetworking)
        /// Made only when the operator confirmed skipping verification for some model.
        private let unverifiedSession: URLSession?
        private let unverifiedCollector: ResponseCollector
    #endif

    /// Creates the process's transport, and warns (on every start) when the environment allows
    /// skipping TLS verification for some model.
    /// - Parameters:
    ///   - maximumConnectionsPerHost: the worker's concurrency (attempts in flight).
    ///   - maximumResponseBytes: the most bytes of one response body read.
    ///   - environment: where `SWITCHYARD_INSECURE_TLS_MODELS` is read from.
    ///   - logger: where the warning goes.
    public init(
        maximumConnectionsPerHost: Int, maximumResponseBytes: Int = HTTPTransport.defaultMaximumResponseBytes,
        environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger = Logger(label: "worker")
    ) {
        self.maximumConnectionsPerHost = max(1, maximumConnectionsPerHost)
        self.maximumResponseBytes = max(1, maximumResponseBytes)
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
        collector = ResponseCollector(limit: self.maximumResponseBytes, trustsAnyServer: false)
        session = URLSession(configuration: configuration, delegate: collector, delegateQueue: nil)
        #if !canImport(FoundationNetworking)
            unverifiedCollector = ResponseCollector(limit: self.maximumResponseBytes, trustsAnyServer: true)
            unverifiedSession =
                insecureTLS.confirmedModels.isEmpty
                ? nil : URLSession(configuration: configuration, delegate: unverifiedCollector, delegateQueue: nil)
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
    /// - Throws: `ProviderError` (`timedOut`, `connectionFailed`, `invalidResponse` for a body over
    ///   `maximumResponseBytes`), or `CancellationError` when the calling task was cancelled (the
    ///   request is cancelled with it).
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
            if let tooLarge = error as? ResponseTooLarge {
                throw ProviderError(
                    .invalidResponse,
                    "the answer is larger than \(Self.describe(bytes: tooLarge.limit)), the most a worker reads; "
                        + "it was cut off there",
                    hint: "check that the model's base_url points at a chat-completions server, and the request's "
                        + "max_tokens", model: model, httpStatus: tooLarge.status, latency: start.duration(to: clock.now))
            }
            var failure = ProviderError.fromTransport(error, model: model, latency: nil)
            failure.latency = start.duration(to: clock.now)
            throw failure
        }
    }

    /// One request: a data task, and another if libcurl sent the first again (see below).
    private func perform(_ request: URLRequest, skipVerification: Bool) async throws -> Exchange {
        #if canImport(FoundationNetworking)
            let (session, collector) = (session, collector)
        #else
            let (session, collector) =
                skipVerification && unverifiedSession != nil
                ? (unverifiedSession!, unverifiedCollector) : (session, collector)
        #endif
        // libcurl sends a request again on another connection when the server closed the one it
        // reused (an idle timeout, a restart), and FoundationNetworking cannot give a body given
        // as data again: it would go with its head alone. The collector stops such a task as it
        // is sent again (`SentAgain`), and it is sent once more here, as a new task: as often as
        // closed kept connections may meet it (a review's burst left four, and a second try met
        // the next one), at most `resends`; the attempt's budget bounds it too. Only within a
        // second of sending: later, the server may have read the request and worked on it (a
        // proxy's idle timeout during a long answer), and sending it again could bill it twice.
        // (A body given as a stream could be given again, but then libcurl waited for the answer
        // with FoundationNetworking watching the socket for writing: it spun a core for as long
        // as any call was in flight, 85-90% of one in a review.)
        for _ in 0...min(maximumConnectionsPerHost, Self.resends) {
            do {
                return try await dataTask(request, on: session, collector)
            } catch is SentAgain {
                continue
            }
        }
        throw URLError(.networkConnectionLost)
    }

    /// How many times a request is sent again after libcurl met a closed kept-alive connection.
    static let resends = 8

    /// One data task, cancelled when the calling task is.
    private func dataTask(
        _ request: URLRequest, on session: URLSession, _ collector: ResponseCollector
    ) async throws -> Exchange {
        let handle = TaskHandle()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Exchange, Error>) in
                let task = session.dataTask(with: request)
                collector.expect(task, continuation, body: request.httpBody)
                handle.start(task)
            }
        } onCancel: {
            handle.cancel()
        }
    }

    /// Formats a byte count for a message: "32 MiB", "1500 bytes".
    static func describe(bytes: Int) -> String {
        bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : bytes % 1024 == 0 ? "\(bytes >> 10) KiB" : "\(bytes) bytes"
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

/// A task libcurl was sending again on a new connection (the server closed the one it reused),
/// which its body would not have reached: it was cancelled, to be sent as a new task.
private struct SentAgain: Error {
    /// How soon after it was sent a task is sent again: the race of a reuse with the server's
    /// closing of an idle connection shows at once.
    static let within: TimeInterval = 1
}

/// A body that passed the transport's limit: its task was cancelled there.
private struct ResponseTooLarge: Error {
    var status: Int
    var limit: Int
}

/// The sessions' delegate: collects each data task's head and body as they arrive and resumes the
/// task's continuation once, when it completes, fails, or its body passes the limit (the task is
/// then cancelled, so no more of it is read). Tasks are registered with `expect` before they start.
private final class ResponseCollector: NSObject, URLSessionDataDelegate, Sendable {
    private struct Collecting {
        var continuation: CheckedContinuation<HTTPTransport.Exchange, Error>
        /// The request's body, to send again from its start (Apple's Foundation; FoundationNetworking
        /// ends the task instead, and the transport sends it again: `SentAgain`).
        var requestBody: Data?
        /// When the task was started.
        var started = Date()
        var response: HTTPURLResponse?
        var body = Data()
    }

    let limit: Int
    /// Accepts any server certificate: only for the session of models whose verification the
    /// catalog and the operator turned off (`InsecureTLS`), and only where URLSession asks.
    let trustsAnyServer: Bool
    private let tasks = Mutex<[Int: Collecting]>([:])

    init(limit: Int, trustsAnyServer: Bool) {
        self.limit = limit
        self.trustsAnyServer = trustsAnyServer
    }

    func expect(
        _ task: URLSessionTask, _ continuation: CheckedContinuation<HTTPTransport.Exchange, Error>, body: Data?
    ) {
        tasks.withLock { $0[task.taskIdentifier] = Collecting(continuation: continuation, requestBody: body) }
    }

    /// The request's body again, from its start, for a request sent again. FoundationNetworking
    /// asks as libcurl sends a request again on a new connection, and takes a stream only for a
    /// body given as one (a body given as data, it stops on): the task ends here instead, and the
    /// transport sends the request again as a new task. The request sent without its body is
    /// cancelled before the server can have read all it announced.
    func urlSession(
        _ session: URLSession, task: URLSessionTask,
        needNewBodyStream completionHandler: @escaping @Sendable (InputStream?) -> Void
    ) {
        #if canImport(FoundationNetworking)
            completionHandler(nil)
            finish(task) { collecting in
                // Later than the race of a reuse with a closing: the server may have worked on it.
                .failure(
                    Date().timeIntervalSince(collecting.started) < SentAgain.within
                        ? SentAgain() : URLError(.networkConnectionLost))
            }
            // Not from here: FoundationNetworking asks on the queue that a cancellation waits for.
            DispatchQueue.global().async { task.cancel() }
        #else
            let body = tasks.withLock { $0[task.taskIdentifier]?.requestBody }
            completionHandler(body.map { InputStream(data: $0) })
        #endif
    }

    /// Resumes the task's continuation, the first time only.
    private func finish(_ task: URLSessionTask, _ result: (Collecting) -> Result<HTTPTransport.Exchange, Error>) {
        guard let collecting = tasks.withLock({ $0.removeValue(forKey: task.taskIdentifier) }) else { return }
        collecting.continuation.resume(with: result(collecting))
    }

    private func tooLarge(_ task: URLSessionTask, status: Int) {
        finish(task) { _ in .failure(ResponseTooLarge(status: status, limit: self.limit)) }
        task.cancel()
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void
    ) {
        guard let response = response as? HTTPURLResponse else {
            finish(dataTask) { _ in .failure(URLError(.badServerResponse)) }
            completionHandler(.cancel)
            return
        }
        // A head that announces more than the limit is refused before any of the body is read.
        if response.expectedContentLength > Int64(limit) {
            tooLarge(dataTask, status: response.statusCode)
            completionHandler(.cancel)
            return
        }
        tasks.withLock { $0[dataTask.taskIdentifier]?.response = response }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let over: Int? = tasks.withLock { tasks in
            // Read and appended in place: a copy taken out and put back would copy the body each time.
            guard let count = tasks[dataTask.taskIdentifier]?.body.count else { return nil }
            if count + data.count > limit { return tasks[dataTask.taskIdentifier]?.response?.statusCode ?? 0 }
            tasks[dataTask.taskIdentifier]?.body.append(data)
            return nil
        }
        if let status = over { tooLarge(dataTask, status: status) }
    }

    /// Redirects are not followed: the request carries the model's API key, and following would
    /// hand it to whatever address the answer names (libcurl drops it only across hosts, and an
    /// http:// target would carry it in clear). The 3xx itself is the answer, classified as a
    /// misconfigured base_url.
    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
        newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void
    ) {
        completionHandler(nil)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        finish(task) { collecting in
            if let error { return .failure(error) }
            guard let response = collecting.response ?? (task.response as? HTTPURLResponse) else {
                return .failure(URLError(.badServerResponse))
            }
            var headers: [String: String] = [:]
            for (name, value) in response.allHeaderFields {
                headers[String(describing: name).lowercased()] = String(describing: value)
            }
            return .success(
                HTTPTransport.Exchange(status: response.statusCode, headers: headers, body: collecting.body, latency: .zero))
        }
    }

    #if !canImport(FoundationNetworking)
        func urlSession(
            _ session: URLSession, didReceive challenge: URLAuthenticationChallenge
        ) async -> (URLSession.AuthChallengeDisposition, URLCredential?) {
            guard trustsAnyServer,
                challenge.protectionSpace.authenticationMethod == NSURLAuthenticationMethodServerTrust,
                let trust = challenge.protectionSpace.serverTrust
            else { return (.performDefaultHandling, nil) }
            return (.useCredential, URLCredential(trust: trust))
        }
    #endif
}
