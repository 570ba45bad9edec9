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
        // Slashes as they are ("http:\/\/…" is valid JSON, but no one greps for it).
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
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
///
/// A key is hidden wherever any 8 bytes of it appear in a row, so a copy cut short, split in two,
/// or with its head masked is hidden as the whole key is. Each key is looked for as written, with
/// its letters in either case, percent-encoded (a URL or form field) and in base64 (plain or
/// URL-safe, at any of the three byte offsets the key can start at in an encoded header).
public enum Secrets {
    /// How many bytes of a key in a row give it away.
    static let window = 8

    /// Every 8-byte window of every registered key in every written form, ASCII letters folded to
    /// lower case and packed into a `UInt64`; and a 65,536-bit filter of their hashes, so most
    /// positions of a text are ruled out by one bit test.
    private struct Windows: Sendable {
        var keys: Set<String> = []
        var packed: Set<UInt64> = []
        var filter = [UInt64](repeating: 0, count: 1024)

        static func slot(_ window: UInt64) -> Int { Int(truncatingIfNeeded: (window &* 0x9E37_79B9_7F4A_7C15) >> 48) }

        mutating func insert(_ form: [UInt8]) {
            guard form.count >= Secrets.window else { return }
            var window: UInt64 = 0
            for (index, byte) in form.enumerated() {
                window = window << 8 | UInt64(Secrets.folded(byte))
                guard index >= Secrets.window - 1 else { continue }
                packed.insert(window)
                let slot = Self.slot(window)
                filter[slot >> 6] |= 1 << UInt64(slot & 63)
            }
        }

        func contains(_ window: UInt64) -> Bool {
            let slot = Self.slot(window)
            return filter[slot >> 6] & (1 << UInt64(slot & 63)) != 0 && packed.contains(window)
        }
    }

    private static let registered = Mutex(Windows())

    /// Registers a secret; from now on `redact` hides it. Values shorter than 8 bytes are ignored:
    /// hiding every copy of so short a text would mangle ordinary text, and no provider issues
    /// keys that short.
    public static func register(_ secret: String) {
        let key = Array(secret.utf8)
        guard key.count >= window else { return }
        registered.withLock { windows in
            guard windows.keys.insert(secret).inserted else { return }
            for form in writtenForms(of: key) { windows.insert(form) }
        }
    }

    /// The ways a key may be written back: as it is, percent-encoded, and in base64 and its
    /// URL-safe alphabet at each byte offset (only the characters that encode the key's bytes
    /// alone, which are the same whatever surrounds it).
    static func writtenForms(of key: [UInt8]) -> [[UInt8]] {
        var forms = [key]
        let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)
        let hex = Array("0123456789ABCDEF".utf8)
        let percent = key.flatMap { unreserved.contains($0) ? [$0] : [UInt8(ascii: "%"), hex[Int($0 >> 4)], hex[Int($0 & 15)]] }
        if percent != key { forms.append(percent) }
        for offset in 0..<3 {
            let encoded = Array((Data(repeating: 0, count: offset) + Data(key)).base64EncodedString().utf8)
            // A group of 4 characters encodes 3 bytes: drop the groups that hold a byte not the key's.
            let stable = Array(encoded.dropFirst(offset == 0 ? 0 : 4).dropLast(4))
            forms.append(stable)
            forms.append(stable.map { $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0 })
        }
        return forms
    }

    static func folded(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
    }

    /// A JSON document with every registered secret replaced in its strings and member names as
    /// they read once decoded: redacting the raw text misses a key the sender escaped (`/` as
    /// `\/`, any character as `\u0041`).
    public static func redact(_ value: JSONValue) -> JSONValue {
        guard !registered.withLock({ $0.keys.isEmpty }) else { return value }
        func clean(_ value: JSONValue) -> JSONValue {
            switch value {
            case .string(let text): .string(redact(text))
            case .array(let items): .array(items.map(clean))
            case .object(let members):
                .object(Dictionary(members.map { (redact($0.key), clean($0.value)) }, uniquingKeysWith: { first, _ in first }))
            case .null, .bool, .number, .exactNumber: value
            }
        }
        return clean(value)
    }

    /// The text with every run that holds 8 bytes of a registered secret in a row (in any of
    /// its written forms, letters in either case) replaced by one `[REDACTED]`. JSON escapes are
    /// read as what they stand for (`\/` as `/`, `\u0073` as `s`), so a key a provider escaped
    /// is found too, and a document stays a document: a run covers whole escapes.
    public static func redact(_ text: String) -> String {
        let windows = registered.withLock { $0 }
        guard !windows.keys.isEmpty else { return text }
        var text = text
        text.makeContiguousUTF8()
        let clean = text.utf8.withContiguousStorageIfAvailable { bytes -> String? in
            // Runs of raw bytes covered by a window of a key, merged where they touch.
            var runs: [Range<Int>] = []
            var packed: UInt64 = 0
            // Where each of the last 8 bytes read began in the raw text.
            var starts = [Int](repeating: 0, count: window)
            var count = 0
            func read(_ byte: UInt8, from start: Int, to end: Int) {
                packed = packed << 8 | UInt64(folded(byte))
                starts[count % window] = start
                count += 1
                guard count >= window, windows.contains(packed) else { return }
                let first = starts[count % window]
                if let last = runs.last, first <= last.upperBound {
                    runs[runs.count - 1] = last.lowerBound..<end
                } else {
                    runs.append(first..<end)
                }
            }
            var position = 0
            while position < bytes.count {
                guard bytes[position] == UInt8(ascii: "\\"), let (scalar, length) = escape(in: bytes, at: position)
                else {
                    read(bytes[position], from: position, to: position + 1)
                    position += 1
                    continue
                }
                for byte in String(Character(scalar)).utf8 { read(byte, from: position, to: position + length) }
                position += length
            }
            guard !runs.isEmpty else { return nil }
            var output: [UInt8] = []
            output.reserveCapacity(bytes.count)
            var copied = 0
            for run in runs {
                output.append(contentsOf: bytes[copied..<run.lowerBound])
                output.append(contentsOf: "[REDACTED]".utf8)
                copied = run.upperBound
            }
            output.append(contentsOf: bytes[copied...])
            return String(decoding: output, as: UTF8.self)
        }
        return (clean ?? nil) ?? text
    }

    /// The JSON escape at `position` (a backslash): what it stands for and how many bytes it takes
    /// (`\n` 2, `\u0073` 6, a surrogate pair 12); nil when what follows is no escape.
    private static func escape(in bytes: UnsafeBufferPointer<UInt8>, at position: Int) -> (Unicode.Scalar, Int)? {
        guard position + 1 < bytes.count else { return nil }
        if let simple = simpleEscapes[Unicode.Scalar(bytes[position + 1])] { return (simple, 2) }
        func hex4(_ start: Int) -> UInt32? {
            guard start + 4 <= bytes.count else { return nil }
            return UInt32(String(decoding: bytes[start..<(start + 4)], as: UTF8.self), radix: 16)
        }
        guard bytes[position + 1] == UInt8(ascii: "u"), let high = hex4(position + 2) else { return nil }
        if (0xD800..<0xDC00).contains(high), position + 12 <= bytes.count,
            bytes[position + 6] == UInt8(ascii: "\\"), bytes[position + 7] == UInt8(ascii: "u"),
            let low = hex4(position + 8), (0xDC00..<0xE000).contains(low),
            let combined = Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
        {
            return (combined, 12)
        }
        return (Unicode.Scalar(high) ?? "\u{FFFD}", 6)
    }

    private static let simpleEscapes: [Unicode.Scalar: Unicode.Scalar] = [
        "/": "/", "\\": "\\", "\"": "\"", "n": "\n", "t": "\t", "r": "\r", "b": "\u{8}", "f": "\u{C}",
    ]
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
