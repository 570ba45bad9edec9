import Foundation

/// What a provider said about a model's rate limits in its response headers.
///
/// Read from OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` and Anthropic's
/// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`, on
/// successful answers and errors alike, so routing can lower a model's budget before a 429.
public struct RateLimitInfo: Sendable, Hashable {
    /// Requests allowed per window.
    public var requestLimit: Int?
    /// Requests left in the current window.
    public var remainingRequests: Int?
    /// Time until the request window resets.
    public var requestsReset: Duration?
    /// Tokens allowed per window.
    public var tokenLimit: Int?
    /// Tokens left in the current window (for Anthropic, the lowest of its token budgets).
    public var remainingTokens: Int?
    /// Time until the token window resets.
    public var tokensReset: Duration?

    /// Creates a record directly (simulated models, tests).
    public init(
        requestLimit: Int? = nil, remainingRequests: Int? = nil, requestsReset: Duration? = nil,
        tokenLimit: Int? = nil, remainingTokens: Int? = nil, tokensReset: Duration? = nil
    ) {
        self.requestLimit = requestLimit
        self.remainingRequests = remainingRequests
        self.requestsReset = requestsReset
        self.tokenLimit = tokenLimit
        self.remainingTokens = remainingTokens
        self.tokensReset = tokensReset
    }

    /// Parses the rate-limit headers of a response; nil when it has none.
    /// - Parameters:
    ///   - headers: response headers with lowercased names.
    ///   - now: the current time, to turn Anthropic's reset timestamps into durations.
    public init?(headers: [String: String], now: Date) {
        func int(_ name: String) -> Int? { headers[name].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
        func reset(_ name: String) -> Duration? { headers[name].flatMap { Self.parseReset($0, now: now) } }

        requestLimit = int("x-ratelimit-limit-requests") ?? int("anthropic-ratelimit-requests-limit")
        remainingRequests = int("x-ratelimit-remaining-requests") ?? int("anthropic-ratelimit-requests-remaining")
        requestsReset = reset("x-ratelimit-reset-requests") ?? reset("anthropic-ratelimit-requests-reset")

        let anthropicTokens = ["tokens", "input-tokens", "output-tokens"].map { "anthropic-ratelimit-\($0)" }
        tokenLimit = int("x-ratelimit-limit-tokens") ?? anthropicTokens.compactMap { int("\($0)-limit") }.min()
        remainingTokens =
            int("x-ratelimit-remaining-tokens")
            ?? anthropicTokens.compactMap { int("\($0)-remaining") }.min()
        tokensReset = reset("x-ratelimit-reset-tokens") ?? anthropicTokens.compactMap { reset("\($0)-reset") }.max()

        if requestLimit == nil, remainingRequests == nil, requestsReset == nil, tokenLimit == nil,
            remainingTokens == nil, tokensReset == nil
        {
            return nil
        }
    }

    /// How long until an exhausted budget (no requests or no tokens left) refills; nil when
    /// neither budget is exhausted or the provider did not say.
    public var exhaustedUntil: Duration? {
        var waits: [Duration] = []
        if let remainingRequests, remainingRequests <= 0, let requestsReset { waits.append(requestsReset) }
        if let remainingTokens, remainingTokens <= 0, let tokensReset { waits.append(tokensReset) }
        return waits.max()
    }

    /// The longest a provider's pause holds a model back on a worker. A header of years
    /// (`retry-after: 99999999`, a reset of `100000000h`) paused the model there until the worker
    /// restarted, its jobs put back again and again. A longer pause is this long: the model is
    /// tried again then, and a provider still out of budget says so again.
    public static let longestPause = Duration.seconds(900)

    /// The longest duration a header is read as: a day. One past what a `Duration` holds (`inf`,
    /// `1e300`, `99999999999999999999999h`) stopped the worker.
    static let longestReading = 86_400_000.0

    /// A wait in milliseconds as a duration, at most a day; nil when it is no wait (NaN, negative).
    static func wait(milliseconds: Double) -> Duration? {
        guard !milliseconds.isNaN, milliseconds >= 0 else { return nil }
        return .milliseconds(min(milliseconds, longestReading))
    }

    /// The wait a response asks for: `retry-after-ms` (milliseconds), else `retry-after`
    /// (seconds, or an HTTP date); nil when neither is present or readable.
    /// - Parameters:
    ///   - headers: response headers with lowercased names.
    ///   - now: the current time, for the HTTP-date form.
    public static func retryAfter(headers: [String: String], now: Date) -> Duration? {
        if let text = headers["retry-after-ms"], let milliseconds = Double(text.trimmingCharacters(in: .whitespaces)),
            let wait = wait(milliseconds: milliseconds)
        {
            return wait
        }
        guard let text = headers["retry-after"]?.trimmingCharacters(in: .whitespaces) else { return nil }
        if let seconds = Double(text), let wait = wait(milliseconds: seconds * 1000) { return wait }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: text) else { return nil }
        return wait(milliseconds: max(0, date.timeIntervalSince(now)) * 1000)
    }

    /// Parses a reset value: OpenAI's Go-style durations (`1s`, `6m0s`, `1h2m3.5s`, `20ms`), plain
    /// seconds, or an RFC 3339 timestamp (Anthropic).
    static func parseReset(_ text: String, now: Date) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(trimmed), let wait = wait(milliseconds: seconds * 1000) { return wait }
        if let duration = parseGoDuration(trimmed) { return duration }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var date = formatter.date(from: trimmed)
        if date == nil {
            formatter.formatOptions = [.withInternetDateTime]
            date = formatter.date(from: trimmed)
        }
        return date.flatMap { wait(milliseconds: max(0, $0.timeIntervalSince(now)) * 1000) }
    }

    /// `1h2m3.5s`, `6m0s`, `20ms`, `150us` → a duration; nil for anything else.
    static func parseGoDuration(_ text: String) -> Duration? {
        let units: [(suffix: String, milliseconds: Double)] = [
            ("ms", 1), ("us", 0.001), ("µs", 0.001), ("ns", 0.000_001), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
        ]
        var rest = Substring(text)
        var total = 0.0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard let unit = units.first(where: { rest.hasPrefix($0.suffix) }) else { return nil }
            rest = rest.dropFirst(unit.suffix.count)
            total += value * unit.milliseconds
        }
        return wait(milliseconds: total)
    }
}
