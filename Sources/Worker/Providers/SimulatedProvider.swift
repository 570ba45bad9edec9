import Foundation
import QueueModel
import Synchronization

/// In-process models for the demo, tests and benchmarks: no keys, no network.
///
/// Each call draws its fate from a seeded stream (the model's `seed`, or a hash of its name,
/// mixed with the call's sequence number for that model): a 429 with `retry_after_ms` at
/// `rate_limit_rate`, a 500 at `error_rate`, and otherwise a latency from a log-normal fitted to
/// `latency_p50_ms` and `latency_p95_ms`, slept with the injected clock. A latency beyond the
/// attempt's timeout is a timeout. Scheduled outages and an outage file fail every call while in
/// force. The answer itself depends only on the model and the request (`SimulatedAnswer`).
/// A prompt plus `max_tokens` larger than the model's `context_window` gets OpenAI's 400
/// `context_length_exceeded`, so fallback to a larger model can be exercised too.
/// See `SimulatedSettings` for the settings' keys.
public final class SimulatedProvider: ModelProvider {
    private let clock: any ProviderClock
    private let salt: UInt64
    /// Calls made so far, per model: the position of the next call in the model's random stream.
    private let calls = Mutex<[String: UInt64]>([:])
    /// Each model's settings as last checked, with the catalog's text of them.
    private let checked = Mutex<[String: (source: JSONValue, settings: SimulatedSettings)]>([:])

    /// Creates the provider.
    /// - Parameters:
    ///   - clock: whose `sleep` plays the latency and whose `now` is checked against outages.
    ///   - salt: mixed into every model's seed; give workers different salts to decorrelate their
    ///     failures, or the same to make runs repeat exactly.
    public init(clock: any ProviderClock = SystemProviderClock(), salt: UInt64 = 0) {
        self.clock = clock
        self.salt = salt
    }

    /// Plays one call.
    /// - Throws: `ProviderError` as a real provider would fail, `CancellationError` when cancelled.
    public func complete(_ call: ProviderCall) async throws -> ProviderReply {
        let model = call.model
        let settings = try self.settings(of: model)
        _ = try ProviderEndpoint.requestObject(call)

        let promptTokens = SimulatedAnswer.promptTokens(call.request)
        let maxTokens = call.request["max_tokens"]?.intValue ?? call.request["max_completion_tokens"]?.intValue ?? 0
        if promptTokens + maxTokens > model.contextWindow {
            throw ProviderError(
                .contextLengthExceeded,
                "This model's maximum context length is \(model.contextWindow) tokens. However, you requested "
                    + "\(promptTokens + maxTokens) tokens (\(promptTokens) in the messages, \(maxTokens) in the "
                    + "completion).",
                model: model.name, httpStatus: 400, providerCode: "context_length_exceeded",
                providerType: "invalid_request_error", latency: .zero)
        }
        if let fault = settings.activeOutage(at: clock.now()) {
            throw try await fail(
                with: fault, call: call, settings: settings, latency: .zero, reason: "simulated outage")
        }
        if settings.instant { return reply(call, settings: settings, latency: .zero) }

        var random = nextStream(for: model, settings: settings)
        let rateLimitDraw = random.unit()
        let errorDraw = random.unit()
        let latency = Duration.milliseconds(random.logNormal(p50: settings.latencyP50, p95: settings.latencyP95))
        if rateLimitDraw < settings.rateLimitRate {
            throw try await fail(
                with: .rateLimited, call: call, settings: settings, latency: .zero, reason: "simulated")
        }
        if latency > call.timeout {
            throw try await fail(with: .timeout, call: call, settings: settings, latency: latency, reason: "simulated")
        }
        try await clock.sleep(for: latency)
        if errorDraw < settings.errorRate {
            throw ProviderError(
                .serverError, "simulated server error", model: model.name, httpStatus: 500,
                providerType: "server_error",
                latency: latency)
        }
        return reply(call, settings: settings, latency: latency)
    }

    /// A model's settings, checked and read once per version of them: checking them on every call
    /// was 3% of a worker's CPU draining instant jobs. Settings that fail their check are
    /// not kept, so each call fails as the first did.
    private func settings(of model: ModelSpec) throws -> SimulatedSettings {
        if let known = checked.withLock({ $0[model.name] }), known.source == model.settings { return known.settings }
        try model.checkSettings()
        let settings = try SimulatedSettings(model.settings, model: model.name)
        checked.withLock { $0[model.name] = (model.settings, settings) }
        return settings
    }

    private func reply(_ call: ProviderCall, settings: SimulatedSettings, latency: Duration) -> ProviderReply {
        let (response, usage) = SimulatedAnswer.completion(
            for: call.request, model: call.model, settings: settings, created: clock.now())
        return ProviderReply(response: response, usage: usage, httpStatus: 200, latency: latency)
    }

    /// The random stream of this model's next call.
    private func nextStream(for model: ModelSpec, settings: SimulatedSettings) -> SimulatedRandom {
        let index = calls.withLock { calls in
            defer { calls[model.name, default: 0] += 1 }
            return calls[model.name, default: 0]
        }
        let seed = settings.seed ?? StableHash.hash(model.name)
        return SimulatedRandom(seed: StableHash.mix(seed ^ StableHash.mix(salt)) ^ StableHash.mix(index &+ 1))
    }

    /// The error a fault produces; `timeout` first sleeps out the attempt's budget, as a hung
    /// server would hold it.
    private func fail(
        with fault: SimulatedSettings.Fault, call: ProviderCall, settings: SimulatedSettings, latency: Duration,
        reason: String
    ) async throws -> ProviderError {
        let model = call.model.name
        switch fault {
        case .serverError:
            return ProviderError(
                .serverError, "\(reason): the service is unavailable", model: model, httpStatus: 503,
                providerType: "server_error", latency: latency)
        case .overloaded:
            return ProviderError(
                .overloaded, "\(reason): Overloaded", model: model, httpStatus: 529, providerType: "overloaded_error",
                latency: latency)
        case .timeout:
            try await clock.sleep(for: call.timeout)
            return ProviderError(
                .timedOut, "\(reason): no answer within the attempt's budget of \(ProviderError.format(call.timeout))",
                model: model, latency: call.timeout)
        case .unauthorized:
            return ProviderError(
                .unauthorized, "\(reason): invalid API key", model: model, httpStatus: 401,
                providerCode: "invalid_api_key", providerType: "invalid_request_error", latency: latency)
        case .quota:
            return ProviderError(
                .quotaExhausted, "\(reason): You exceeded your current quota", model: model, httpStatus: 429,
                providerCode: "insufficient_quota", providerType: "insufficient_quota", latency: latency)
        case .rateLimited:
            return ProviderError(
                .rateLimited, "\(reason): Rate limit reached for \(model)", model: model, httpStatus: 429,
                providerCode: "rate_limit_exceeded", providerType: "requests", retryAfter: settings.retryAfter,
                latency: latency)
        }
    }
}
