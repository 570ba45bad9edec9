import Foundation
import Synchronization

/// A log line's fields, in order: `["job": 42, "model": "gpt-4"]`.
public typealias LogFields = KeyValuePairs<String, any CustomStringConvertible>

/// A structured logger: one line per event, logfmt by default or JSON lines, to stderr.
///
/// Configure with `SWITCHYARD_LOG_LEVEL` (trace, debug, info, notice, warning, error) and
/// `SWITCHYARD_LOG_FORMAT` (logfmt, json). Every registered secret is replaced by `[REDACTED]`
/// before a line is written, whatever field or message it hides in.
public struct Logger: Sendable {
    public enum Level: Int, Comparable, Sendable, CaseIterable {
        case trace, debug, info, notice, warning, error

        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }

        public var name: String {
            switch self {
            case .trace: "trace"
            case .debug: "debug"
            case .info: "info"
            case .notice: "notice"
            case .warning: "warning"
            case .error: "error"
            }
        }
    }

    public enum Format: Sendable { case logfmt, json }

    /// The component writing (`worker`, `dispatcher`, `postgres`).
    public var label: String
    public var level: Level
    public var format: Format
    /// Fields added to every line (for example the worker's id).
    public private(set) var metadata: [(String, String)] = []
    private let sink: Sink

    /// A logger configured from the environment, writing to stderr. A value it does not know
    /// (any case is fine; `warn` means warning) leaves the default and says so in a warning line.
    public init(label: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.init(label: label, environment: environment, sink: .standardError, warnOnce: true)
    }

    /// A logger configured from `environment` that hands each line to `write` (tests).
    public init(label: String, environment: [String: String], write: @escaping @Sendable (String) -> Void) {
        self.init(label: label, environment: environment, sink: Sink(write: write))
    }

    /// - Parameter warnOnce: say what is wrong with the environment once per process, not once
    ///   per logger (a process makes several).
    private init(label: String, environment: [String: String], sink: Sink, warnOnce: Bool = false) {
        self.label = label
        self.level = .info
        self.format = .logfmt
        self.sink = sink
        var unknown: [String] = []
        // Set but empty (or blank) is as good as unset.
        func setting(_ name: String) -> String? {
            environment[name].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        if let text = setting("SWITCHYARD_LOG_LEVEL") {
            let name = text.lowercased() == "warn" ? "warning" : text.lowercased()
            if let level = Level.allCases.first(where: { $0.name == name }) { self.level = level } else {
                unknown.append("SWITCHYARD_LOG_LEVEL=\(text) is not a level: use trace, debug, info, notice, warning or error")
            }
        }
        if let text = setting("SWITCHYARD_LOG_FORMAT") {
            switch text.lowercased() {
            case "json": format = .json
            case "logfmt": format = .logfmt
            default: unknown.append("SWITCHYARD_LOG_FORMAT=\(text) is not a format: use logfmt or json")
            }
        }
        for problem in unknown where !warnOnce || Self.warned.withLock({ $0.insert(problem).inserted }) {
            warning("\(problem); using the default")
        }
    }

    /// The environment problems this process has warned about (see `warnOnce`).
    private static let warned = Mutex<Set<String>>([])

    /// A logger that hands each line to `write` (tests read what was logged this way).
    public init(label: String, level: Level = .trace, format: Format = .logfmt, write: @escaping @Sendable (String) -> Void) {
        self.label = label
        self.level = level
        self.format = format
        self.sink = Sink(write: write)
    }

    /// A copy that adds a field to every line.
    public func with(_ key: String, _ value: some CustomStringConvertible) -> Logger {
        var copy = self
        copy.metadata.append((key, value.description))
        copy.metadataKinds.append(Self.kind(of: value))
        return copy
    }

    /// The JSON type a field keeps in JSON lines, when it is not a string.
    enum ValueKind: Sendable { case number, bool }

    /// Each `metadata` field's JSON type (nil: a string), in the same order.
    private var metadataKinds: [ValueKind?] = []

    static func kind(of value: any CustomStringConvertible) -> ValueKind? {
        if value is Bool { return .bool }
        if value is any BinaryInteger || value is any BinaryFloatingPoint { return .number }
        return nil
    }

    public func trace(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> LogFields = [:]) {
        log(.trace, message(), fields())
    }
    public func debug(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> LogFields = [:]) {
        log(.debug, message(), fields())
    }
    public func info(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> LogFields = [:]) {
        log(.info, message(), fields())
    }
    public func notice(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> LogFields = [:]) {
        log(.notice, message(), fields())
    }
    public func warning(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> LogFields = [:]) {
        log(.warning, message(), fields())
    }
    public func error(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> LogFields = [:]) {
        log(.error, message(), fields())
    }

    /// Writes a line when `level` is enabled; the message and the fields are only built then.
    public func log(_ level: Level, _ message: @autoclosure () -> String, _ fields: @autoclosure () -> LogFields = [:]) {
        guard level >= self.level else { return }
        var pairs: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", level.name), ("logger", label), ("msg", message()),
        ]
        pairs += metadata
        // Numbers and booleans stay so in JSON lines (`"latency_ms":4`, not `"4"`).
        var kinds: [String: ValueKind] = [:]
        for ((key, _), kind) in zip(metadata, metadataKinds) { kinds[key] = kind }
        for (key, value) in fields() {
            pairs.append((key, value.description))
            kinds[key] = Self.kind(of: value)
        }
        // Each value before it is escaped: an escaped key (`/` as `\/`, `"` as `\"`) would no
        // longer match the registered one.
        pairs = pairs.map { key, value in (key, Secrets.redact(value)) }
        sink.write(format == .json ? Self.json(pairs, kinds: kinds) : Self.logfmt(pairs))
    }

    static func logfmt(_ pairs: [(String, String)]) -> String {
        pairs.map { key, value in
            let needsQuotes = value.isEmpty || value.unicodeScalars.contains {
                $0 == "=" || $0 == "\"" || $0.properties.isWhitespace || $0.properties.generalCategory == .control
            }
            guard needsQuotes else { return "\(key)=\(value)" }
            var escaped = ""
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                case "\r": escaped += "\\r"
                case "\t": escaped += "\\t"
                case _ where scalar.properties.generalCategory == .control || scalar == "\u{2028}" || scalar == "\u{2029}":
                    escaped += String(format: "\\u%04x", scalar.value)
                default: escaped.unicodeScalars.append(scalar)
                }
            }
            return "\(key)=\"\(escaped)\""
        }.joined(separator: " ")
    }

    static func json(_ pairs: [(String, String)], kinds: [String: ValueKind] = [:]) -> String {
        let object = Dictionary(
            pairs.map { key, value -> (String, Any) in
                switch kinds[key] {
                case .bool?:
                    if let flag = Bool(value) { return (key, NSNumber(value: flag)) }
                case .number?:
                    if let whole = Int64(value) { return (key, NSNumber(value: whole)) }
                    if let number = Double(value), number.isFinite { return (key, NSNumber(value: number)) }
                case nil:
                    break
                }
                return (key, value)
            }, uniquingKeysWith: { _, last in last })
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func timestamp() -> String {
        Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }

    struct Sink: Sendable {
        let write: @Sendable (String) -> Void

        static let standardError = Sink { line in
            standardErrorLock.withLock { _ in StandardStream.error.write(line + "\n") }
        }
    }

    private static let standardErrorLock = Mutex(())
}

/// Values that must never be written anywhere: API keys read from the environment.
public enum Secrets {
    /// A registered secret, as bytes, with the stem that marks it: its first half, or its first
    /// 12 bytes (all of a shorter one).
    private struct Secret: Sendable, Equatable {
        let key: [UInt8]
        let stem: [UInt8]

        init(_ text: String) {
            key = Array(text.utf8)
            stem = Array(key.prefix(max(12, key.count / 2)))
        }
    }

    private static let registered = Mutex<[Secret]>([])

    /// Registers a secret; from now on `redact` hides it. Values shorter than 8 characters are
    /// ignored, since hiding them would mangle ordinary text.
    public static func register(_ secret: String) {
        guard secret.count >= 8 else { return }
        let entry = Secret(secret)
        registered.withLock { if !$0.contains(entry) { $0.append(entry) } }
    }

    /// A JSON document with every registered secret replaced in its strings and member names as
    /// they read once decoded: redacting the raw text misses a key the sender escaped (`/` as
    /// `\/`, any character as `\u0041`).
    public static func redact(_ value: JSONValue) -> JSONValue {
        let secrets = registered.withLock { $0 }
        guard !secrets.isEmpty else { return value }
        func clean(_ value: JSONValue) -> JSONValue {
            switch value {
            case .string(let text): .string(redact(text))
            case .array(let items): .array(items.map(clean))
            case .object(let members):
                .object(Dictionary(members.map { (redact($0.key), clean($0.value)) }, uniquingKeysWith: { first, _ in first }))
            case .null, .bool, .number: value
            }
        }
        return clean(value)
    }

    /// The text with every registered secret replaced by `[REDACTED]`, and with it what is left of
    /// one cut short (its first half, or its first 12 characters, and on as far as it matches).
    public static func redact(_ text: String) -> String {
        let secrets = registered.withLock { $0 }
        var result = text
        for secret in secrets { result = redact(secret, in: result) }
        return result
    }

    /// `redact`, for a message rather than a document: text that holds a secret written with JSON
    /// escapes (`\/`, `\u0073`: an excerpt of a body, a message copied from one) comes back with
    /// its escapes read, redacted. (A document must keep its escapes: `redact(JSONValue)` reads it.)
    public static func redactUnescaping(_ text: String) -> String {
        let result = redact(text)
        guard result.contains("\\"), let unescaped = jsonUnescaped(result) else { return result }
        let clean = redact(unescaped)
        return clean != unescaped ? clean : result
    }

    /// Replaces every run of `text` that starts with the secret's stem and matches the secret as
    /// far as it goes. Compared as bytes: a stem that ends inside a character still matches.
    private static func redact(_ secret: Secret, in text: String) -> String {
        var text = text
        text.makeContiguousUTF8()
        let clean = text.utf8.withContiguousStorageIfAvailable { bytes -> String? in
            guard var next = find(secret.stem, in: bytes, from: 0) else { return nil }
            var output: [UInt8] = []
            output.reserveCapacity(bytes.count)
            var copied = 0
            while true {
                output.append(contentsOf: bytes[copied..<next])
                var end = next + secret.stem.count
                while end < bytes.count, end - next < secret.key.count, bytes[end] == secret.key[end - next] {
                    end += 1
                }
                output.append(contentsOf: "[REDACTED]".utf8)
                copied = end
                guard let found = find(secret.stem, in: bytes, from: end) else { break }
                next = found
            }
            output.append(contentsOf: bytes[copied...])
            return String(decoding: output, as: UTF8.self)
        }
        return (clean ?? nil) ?? text
    }

    /// Where `needle` first occurs in `bytes` at or after `start`.
    private static func find(_ needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard let first = needle.first, bytes.count >= needle.count else { return nil }
        var index = start
        while index <= bytes.count - needle.count {
            if bytes[index] == first, needle.indices.allSatisfy({ bytes[index + $0] == needle[$0] }) { return index }
            index += 1
        }
        return nil
    }

    private static let simpleEscapes: [Unicode.Scalar: Unicode.Scalar] = [
        "/": "/", "\\": "\\", "\"": "\"", "n": "\n", "t": "\t", "r": "\r", "b": "\u{8}", "f": "\u{C}",
    ]

    /// The text with JSON string escapes read (`\/`, `\"`, `\n`, `\u0073`, surrogate pairs), or
    /// nil when it has none that change it.
    static func jsonUnescaped(_ text: String) -> String? {
        var scalars = String.UnicodeScalarView()
        var iterator = Array(text.unicodeScalars)[...]
        var changed = false
        func hex4(_ digits: ArraySlice<Unicode.Scalar>) -> UInt32? {
            guard digits.count == 4 else { return nil }
            return UInt32(String(String.UnicodeScalarView(digits)), radix: 16)
        }
        while let scalar = iterator.first {
            iterator = iterator.dropFirst()
            guard scalar == "\\", let next = iterator.first else { scalars.append(scalar); continue }
            if let replacement = simpleEscapes[next] {
                scalars.append(replacement)
                iterator = iterator.dropFirst()
                changed = true
            } else if next == "u", let high = hex4(iterator.dropFirst().prefix(4)) {
                iterator = iterator.dropFirst(5)
                if (0xD800..<0xDC00).contains(high), iterator.starts(with: ["\\", "u"]),
                    let low = hex4(iterator.dropFirst(2).prefix(4)), (0xDC00..<0xE000).contains(low),
                    let combined = Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                {
                    scalars.append(combined)
                    iterator = iterator.dropFirst(6)
                } else {
                    scalars.append(Unicode.Scalar(high) ?? "\u{FFFD}")
                }
                changed = true
            } else {
                scalars.append(scalar)
            }
        }
        return changed ? String(scalars) : nil
    }
}

/// Standard output and error, written with write(2): FileHandle traps when a write fails, and with
/// SIGPIPE ignored (both programs ignore it) a reader that went away (`| head`) is such a failure.
/// What cannot be written is dropped.
public enum StandardStream {
    case output, error

    public func write(_ text: String) {
        let descriptor = self == .output ? STDOUT_FILENO : STDERR_FILENO
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
            if written > 0 {
                bytes = bytes.dropFirst(written)
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                return
            }
        }
    }
}
