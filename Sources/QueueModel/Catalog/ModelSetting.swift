/// A key of a model's `settings` that an adapter reads, and the JSON it must hold.
///
/// One table for both ends: `dispatcher models import` refuses a value of the wrong type, naming
/// the model and the key, and the adapters check again before each call (a catalog stored by a
/// version that did not check) and fail with `misconfigured` rather than call with a default in
/// its place. Keys not in the table are kept and not checked (a simulated model's are warned of).
/// Ranges and the values of a simulated model's settings (`error_rate` from 0 to 1, a known
/// `outage_fault`) are checked by its adapter, at the first call.
public struct ModelSetting: Sendable, Hashable {
    /// What a setting must hold.
    public enum Kind: Sendable, Hashable {
        /// A whole number of at least 1.
        case positiveInteger
        case boolean
        case number
        case string
        case array
        /// An object whose every value is a string.
        case objectOfStrings

        /// What the value must be, as the message says it: "a positive whole number".
        public var description: String {
            switch self {
            case .positiveInteger: "a positive whole number"
            case .boolean: "true or false"
            case .number: "a number"
            case .string: "a string"
            case .array: "an array"
            case .objectOfStrings: "an object whose values are strings"
            }
        }

        /// Whether `value` is of this kind.
        public func accepts(_ value: JSONValue) -> Bool {
            switch self {
            case .positiveInteger: (value.intValue ?? 0) >= 1
            case .boolean: value.boolValue != nil
            case .number: value.doubleValue != nil
            case .string: value.stringValue != nil
            case .array: value.arrayValue != nil
            case .objectOfStrings: value.objectValue?.values.allSatisfy { $0.stringValue != nil } == true
            }
        }
    }

    /// The key in `settings`.
    public var key: String
    /// What its value must be.
    public var kind: Kind
    /// The providers whose adapter reads it.
    public var providers: Set<ProviderKind>
    /// A valid value, for the hint (JSON text).
    public var example: String

    /// Every key an adapter reads, in documentation order (docs/routing.md lists them).
    public static let all: [ModelSetting] = {
        let http: Set<ProviderKind> = [.openai, .anthropic]
        func simulated(_ key: String, _ kind: Kind, _ example: String) -> ModelSetting {
            ModelSetting(key: key, kind: kind, providers: [.simulated], example: example)
        }
        return [
            ModelSetting(
                key: "headers", kind: .objectOfStrings, providers: http,
                example: #"{"HTTP-Referer": "https://example.com"}"#),
            ModelSetting(key: "insecure_skip_tls_verify", kind: .boolean, providers: http, example: "true"),
            ModelSetting(key: "default_max_tokens", kind: .positiveInteger, providers: [.anthropic], example: "4096"),
            ModelSetting(key: "keep_cache_control", kind: .boolean, providers: [.openai], example: "false"),
            simulated("mode", .string, #""instant""#),
            simulated("latency_p50_ms", .number, "400"),
            simulated("latency_p95_ms", .number, "1200"),
            simulated("error_rate", .number, "0.02"),
            simulated("rate_limit_rate", .number, "0.01"),
            simulated("retry_after_ms", .number, "500"),
            simulated("seed", .number, "7"),
            simulated("output_tokens_min", .number, "16"),
            simulated("output_tokens_max", .number, "160"),
            simulated("outages", .array, #"[{"start": "2025-06-01T12:00:00Z", "end": "2025-06-01T12:05:00Z"}]"#),
            simulated("outage_file", .string, #""/tmp/switchyard-primary-down""#),
            simulated("outage_fault", .string, #""server_error""#),
        ]
    }()

    /// Whether a request header's name says it carries credentials (`Authorization`, `api-key`,
    /// `x-portkey-api-key`, `X-Auth-Token`, …): import refuses such a `headers` entry, and a
    /// worker hides the value of one stored before as it hides keys.
    public static func carriesCredentials(header: String) -> Bool {
        let name = header.lowercased()
        return ["auth", "key", "token", "secret", "password", "cookie", "credential"].contains { name.contains($0) }
    }

    /// A setting whose value is of the wrong type.
    public struct Problem: Sendable, Hashable {
        /// The key in `settings`.
        public var key: String
        /// What is wrong, "must be a positive whole number, got a string" (never the value, which
        /// may be a secret).
        public var message: String
        /// How to write it instead.
        public var hint: String
    }

    /// The settings `provider`'s adapter reads whose values are of the wrong type; null counts
    /// as not set (the adapter's default), keys it does not read are not checked.
    /// - Parameters:
    ///   - settings: the model's `settings` object.
    ///   - provider: the model's provider.
    public static func problems(in settings: JSONValue, provider: ProviderKind) -> [Problem] {
        all.compactMap { setting in
            guard setting.providers.contains(provider), let value = settings[setting.key], !value.isNull,
                !setting.kind.accepts(value)
            else { return nil }
            // "4096" for 4096, "true" for true: the fix is to drop the quotes.
            let withoutQuotes =
                value.stringValue.flatMap { try? JSONValue(parsing: $0) }.map(setting.kind.accepts) == true
            return Problem(
                key: setting.key,
                message: "must be \(setting.kind.description), got \(value.typeName)",
                hint: (withoutQuotes ? "write it without quotes, e.g. " : "write it as, e.g., ")
                    + "\"\(setting.key)\": \(setting.example)")
        }
    }
}
