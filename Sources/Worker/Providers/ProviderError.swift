import Foundation
import QueueModel

/// Why one attempt to call a model failed, for the fallback executor and for a person to read.
///
/// `code` says what kind of failure it is (extensible, like `QueueError.Code`); ask
/// `decision(remainingBudget:)` what to do next. Every text field is scrubbed of API keys when the
/// error is made (registered secrets and anything shaped like a key), so the error can be logged
/// and stored in a result's trail as it is.
public struct ProviderError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's name, as stored in trails.
        public let rawValue: String
        /// Creates a code; prefer the named ones.
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// 429 `rate_limit_exceeded` (or a 429 without a code): retry after the wait it asks for.
        public static let rateLimited = Code("rate_limited")
        /// 429 `insufficient_quota`, or a billing error: the account cannot pay for this model.
        public static let quotaExhausted = Code("quota_exhausted")
        /// 401 or 403: the key is wrong, revoked or lacks access to this model.
        public static let unauthorized = Code("unauthorized")
        /// 404: the provider does not know the model (the catalog's upstream name is wrong).
        public static let modelNotFound = Code("model_not_found")
        /// 5xx other than 529: the provider failed.
        public static let serverError = Code("server_error")
        /// 529 (Anthropic's "overloaded"): the provider is out of capacity.
        public static let overloaded = Code("overloaded")
        /// The attempt ran out of its time budget (or the provider answered 408).
        public static let timedOut = Code("timed_out")
        /// No connection could be made, or it broke before the answer was complete.
        public static let connectionFailed = Code("connection_failed")
        /// The prompt plus `max_tokens` does not fit the model's context window.
        public static let contextLengthExceeded = Code("context_length_exceeded")
        /// Any other 4xx: the request itself is at fault, no model will accept it.
        public static let badRequest = Code("bad_request")
        /// A 2xx whose body is not a chat completion this adapter can read.
        public static let invalidResponse = Code("invalid_response")
        /// The environment variable named by the model's `api_key_env` is not set.
        public static let missingAPIKey = Code("missing_api_key")
        /// The request uses something this provider's API or this model cannot take (an input
        /// type its translation does not support, or a 4xx `unsupported_parameter` such as
        /// `max_tokens` on an o1-style model); another model may take it.
        public static let unsupportedRequest = Code("unsupported_request")
        /// The catalog entry cannot be used as it is (bad base URL, bad simulated settings).
        public static let misconfigured = Code("misconfigured")
    }

    /// The kind of failure.
    public var code: Code
    /// What happened, in words (the provider's own message when it sent one).
    public var message: String
    /// What to do about it, when there is something a person can do.
    public var hint: String?
    /// The catalog name of the model called.
    public var model: String
    /// The HTTP status, when the provider answered at all.
    public var httpStatus: Int?
    /// The provider's machine-readable code (`rate_limit_exceeded`, `context_length_exceeded`).
    public var providerCode: String?
    /// The provider's error type (`invalid_request_error`, `overloaded_error`).
    public var providerType: String?
    /// How long the provider asked to wait before retrying (`retry-after-ms`, `retry-after`, or
    /// the reset time of an exhausted rate-limit budget).
    public var retryAfter: Duration?
    /// Rate-limit headers sent with the error.
    public var rateLimit: RateLimitInfo?
    /// From sending the request to the failure, when measured.
    public var latency: Duration?
    /// The failure comes from this worker's own setup (its environment, its platform), not from
    /// the model: other workers may call the model, so it is skipped here and the fleet's
    /// breaker is not told. A missing API key always is.
    public var isThisWorkerOnly: Bool

    /// Creates an error; every text is scrubbed of secrets here, once, so no field can leak one.
    public init(
        _ code: Code, _ message: String, hint: String? = nil, model: String, httpStatus: Int? = nil,
        providerCode: String? = nil, providerType: String? = nil, retryAfter: Duration? = nil,
        rateLimit: RateLimitInfo? = nil, latency: Duration? = nil, isThisWorkerOnly: Bool = false
    ) {
        self.code = code
        self.message = Self.capped(Self.scrub(message))
        self.hint = hint.map(Self.scrub)
        self.model = model
        self.httpStatus = httpStatus
        self.providerCode = providerCode.map(Self.scrub)
        self.providerType = providerType.map(Self.scrub)
        self.retryAfter = retryAfter
        self.rateLimit = rateLimit
        self.latency = latency
        self.isThisWorkerOnly = isThisWorkerOnly || code == .missingAPIKey
    }

    /// The full text for logs: model, status, codes, message and hint.
    public var description: String {
        var text = "\(model): \(summary)"
        if let hint { text += "\nhint: \(hint)" }
        return Self.scrub(text)
    }

    /// A one-line summary for the attempt trail (at most 300 characters), e.g.
    /// `HTTP 429 rate_limit_exceeded: Rate limit reached (retry after 1.5s)`. Never contains a key.
    public var summary: String {
        // Switchyard's code (the taxonomy the docs list) first; the provider's own label, which
        // may say otherwise (a 401 whose body says server_error), after it.
        var head = (httpStatus.map { "HTTP \($0) " } ?? "") + code.rawValue
        if let label = providerCode ?? providerType, label != code.rawValue { head += " (\(label))" }
        var text = "\(head): \(message.split(whereSeparator: \.isNewline).joined(separator: " "))"
        if let retryAfter { text += " (retry after \(Self.format(retryAfter)))" }
        if text.count > 300 { text = String(text.prefix(299)) + "…" }
        return Self.scrub(text)
    }

    /// `1.5s`, `250ms`: durations as a person reads them.
    static func format(_ duration: Duration) -> String {
        let milliseconds =
            Double(duration.components.seconds) * 1000
            + Double(duration.components.attoseconds) / 1e15
        if milliseconds < 1000 { return "\(Int(milliseconds.rounded()))ms" }
        return String(format: "%.1fs", milliseconds / 1000)
    }

    /// The most of a message kept (a provider's error body can echo a whole request); scrubbed
    /// first, so no cut can leave part of a key behind.
    static let messageLimit = 4000

    static func capped(_ text: String) -> String {
        text.count > messageLimit ? String(text.prefix(messageLimit - 1)) + "…" : text
    }

    /// Removes registered secrets and anything shaped like an API key or bearer token. Providers
    /// echo part of a bad key in their 401 messages ("Incorrect API key provided: sk-abc…xyz").
    static func scrub(_ text: String) -> String {
        var result = Secrets.redact(text)
        for (pattern, template) in Self.keyPatterns {
            result = result.replacingOccurrences(of: pattern, with: template, options: .regularExpression)
        }
        return result
    }

    // A key ends with a letter, digit, `_`, `*` or `-`: the sentence's full stop after it stays
    // ("…provided: [REDACTED]. You can…").
    private static let keyPatterns: [(pattern: String, template: String)] = [
        (#"\bsk-[A-Za-z0-9_*.\-]{5,}[A-Za-z0-9_*\-]"#, "[REDACTED]"),
        // A key the provider masked, whatever its shape: "gsk_abc1************wxyz". Matched only
        // from the start of a run, and the run taken whole (possessive): tried at every position
        // of a long run with no asterisks, it took time growing with the square of the run.
        (#"(?<![A-Za-z0-9_.\-])[A-Za-z0-9_.\-]{3,}+\*{4,}[A-Za-z0-9_.\-]*"#, "[REDACTED]"),
        (#"(?i)\b(api key provided:\s*)(?!\[REDACTED\])\S*[^\s.,;:!?)"']"#, "$1[REDACTED]"),
        (#"(?i)\b(bearer\s+)[A-Za-z0-9_*.\-]{5,}[A-Za-z0-9_*\-]"#, "$1[REDACTED]"),
        (#"(?i)\b(x-api-key|api[_-]?key)(["']?\s*[:=]\s*["']?)[A-Za-z0-9_*.\-]{5,}[A-Za-z0-9_*\-]"#, "$1$2[REDACTED]"),
    ]
}
