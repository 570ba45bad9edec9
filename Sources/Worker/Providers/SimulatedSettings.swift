import Foundation
import QueueModel

/// A simulated model's behaviour, read from its catalog entry's `settings`.
///
/// ```json
/// { "latency_p50_ms": 400, "latency_p95_ms": 1200, "error_rate": 0.02, "rate_limit_rate": 0.01,
///   "retry_after_ms": 500, "seed": 7, "output_tokens_min": 16, "output_tokens_max": 160,
///   "outages": [{"start": "2025-06-01T12:00:00Z", "end": "2025-06-01T12:05:00Z", "fault": "server_error"}],
///   "outage_file": "/tmp/switchyard-primary-down", "outage_fault": "server_error" }
/// ```
/// `{"mode": "instant"}` answers at once and never fails at random (for benchmarks); scheduled
/// outages still apply, since someone asked for them. Every key is optional; the keys are
/// `ModelSpec.simulatedSettingsKeys`, and the import warns of any other (which is ignored here).
struct SimulatedSettings: Sendable {
    /// What a failing simulated call does.
    enum Fault: String, Sendable, CaseIterable {
        /// 503 server error (→ next candidate).
        case serverError = "server_error"
        /// 529 overloaded (→ next candidate).
        case overloaded
        /// Hangs until the attempt's timeout (→ next candidate).
        case timeout
        /// 401 (→ next candidate, model marked unhealthy).
        case unauthorized
        /// 429 `insufficient_quota` (→ next candidate, model marked unhealthy).
        case quota
        /// 429 `rate_limit_exceeded` with the model's `retry_after_ms`.
        case rateLimited = "rate_limited"
    }

    /// A time range [start, end) during which every call fails with `fault`.
    struct Outage: Sendable, Hashable {
        var start: Date
        var end: Date
        var fault: Fault
    }

    /// `mode: "instant"`: no latency, no random failures.
    var instant = false
    /// `latency_p50_ms` (default 400): the median latency.
    var latencyP50 = 400.0
    /// `latency_p95_ms` (default 1200, or the median if that is higher): the 95th percentile.
    var latencyP95 = 1200.0
    /// `error_rate` (0–1, default 0): the share of calls answered with a 500.
    var errorRate = 0.0
    /// `rate_limit_rate` (0–1, default 0): the share of calls answered with a 429.
    var rateLimitRate = 0.0
    /// `retry_after_ms` (default 1000): the wait a simulated 429 asks for.
    var retryAfter: Duration = .seconds(1)
    /// `seed`: the model's random stream; default a hash of the model's name.
    var seed: UInt64?
    /// `output_tokens_min` (default 16): the shortest answer, in tokens.
    var outputTokensMin = 16
    /// `output_tokens_max` (default 160): the longest answer, in tokens (before `max_tokens`).
    var outputTokensMax = 160
    /// `outages`: windows during which every call fails.
    var outages: [Outage] = []
    /// `outage_file`: while a file exists at this path, every call fails with `outageFault`.
    var outageFile: String?
    /// `outage_fault` (default `server_error`): what calls do while the outage file exists.
    var outageFault = Fault.serverError

    /// Reads and checks the settings.
    /// - Throws: `ProviderError.misconfigured` naming the field and what it must be.
    init(_ settings: JSONValue, model: String) throws {
        func fail(_ message: String) -> ProviderError {
            ProviderError(
                .misconfigured, "simulated model \(model): \(message)",
                hint: "fix the model's settings in the catalog and import it again", model: model)
        }
        func number(_ key: String, in range: ClosedRange<Double>) throws -> Double? {
            guard let value = settings[key], !value.isNull else { return nil }
            guard let number = value.doubleValue, range.contains(number) else {
                throw fail("\(key) must be a number from \(range.lowerBound) to \(range.upperBound), got \(value)")
            }
            return number
        }
        guard settings.objectValue != nil || settings.isNull else { throw fail("settings must be an object") }
        switch settings["mode"]?.stringValue {
        case nil, "normal": break
        case "instant": instant = true
        case let other?: throw fail("mode must be \"normal\" or \"instant\", got \"\(other)\"")
        }
        latencyP50 = try number("latency_p50_ms", in: 0...3_600_000) ?? latencyP50
        latencyP95 = try number("latency_p95_ms", in: 0...3_600_000) ?? max(latencyP95, latencyP50)
        guard latencyP95 >= latencyP50 else { throw fail("latency_p95_ms must not be below latency_p50_ms") }
        errorRate = try number("error_rate", in: 0...1) ?? 0
        rateLimitRate = try number("rate_limit_rate", in: 0...1) ?? 0
        retryAfter = try number("retry_after_ms", in: 0...3_600_000).map { .milliseconds($0) } ?? retryAfter
        seed = try number("seed", in: 0...9_007_199_254_740_992).map { UInt64($0) }
        outputTokensMin = Int(try number("output_tokens_min", in: 1...1_000_000) ?? Double(outputTokensMin))
        outputTokensMax = Int(
            try number("output_tokens_max", in: 1...1_000_000) ?? Double(max(outputTokensMax, outputTokensMin)))
        guard outputTokensMax >= outputTokensMin else {
            throw fail("output_tokens_max must not be below output_tokens_min")
        }
        outageFile = settings["outage_file"]?.stringValue
        outageFault = try Self.fault(settings["outage_fault"], default: .serverError, fail: fail)
        for entry in settings["outages"]?.arrayValue ?? [] {
            outages.append(try Self.outage(entry, fail: fail))
        }
    }

    /// The fault in force at `now`, if any: a scheduled window, or the outage file existing.
    func activeOutage(at now: Date) -> Fault? {
        if let window = outages.first(where: { $0.start <= now && now < $0.end }) { return window.fault }
        if let outageFile, FileManager.default.fileExists(atPath: outageFile) { return outageFault }
        return nil
    }

    /// `{"start","end","fault"}` or `[start, end]`; times are ISO 8601 strings or epoch seconds;
    /// a missing start means "always was", a missing end "until further notice".
    private static func outage(_ entry: JSONValue, fail: (String) -> ProviderError) throws -> Outage {
        let start: JSONValue?
        let end: JSONValue?
        var fault = Fault.serverError
        if let pair = entry.arrayValue, pair.count == 2 {
            (start, end) = (pair[0], pair[1])
        } else if entry.objectValue != nil {
            (start, end) = (entry["start"], entry["end"])
            fault = try Self.fault(entry["fault"], default: .serverError, fail: fail)
        } else {
            throw fail("each outage must be {\"start\",\"end\",\"fault\"} or [start, end], got \(entry)")
        }
        let from = try time(start, fail: fail) ?? .distantPast
        let until = try time(end, fail: fail) ?? .distantFuture
        guard from < until else { throw fail("an outage ends before it starts: \(entry)") }
        return Outage(start: from, end: until, fault: fault)
    }

    private static func time(_ value: JSONValue?, fail: (String) -> ProviderError) throws -> Date? {
        switch value {
        case nil, .null?: return nil
        case .number(let seconds)?: return Date(timeIntervalSince1970: seconds)
        // Written with more than 15 digits (a review's 1790000000.1234567 was refused).
        case .exactNumber?: return value?.doubleValue.map { Date(timeIntervalSince1970: $0) }
        case .string(let text)?:
            let formatter = ISO8601DateFormatter()
            for options: ISO8601DateFormatter.Options in [
                [.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime],
            ] {
                formatter.formatOptions = options
                if let date = formatter.date(from: text) { return date }
            }
            throw fail("outage time \"\(text)\" is not ISO 8601 (e.g. 2025-06-01T12:00:00Z)")
        case let other?:
            throw fail("outage times must be ISO 8601 strings or epoch seconds, got \(other)")
        }
    }

    private static func fault(_ value: JSONValue?, default: Fault, fail: (String) -> ProviderError) throws -> Fault {
        guard let value, !value.isNull else { return `default` }
        guard let name = value.stringValue, let fault = Fault(rawValue: name) else {
            let names = Fault.allCases.map(\.rawValue).joined(separator: ", ")
            throw fail("fault must be one of \(names), got \(value)")
        }
        return fault
    }
}
