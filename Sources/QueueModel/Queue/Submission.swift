import Foundation

/// A job to submit: the request and the options of `switchyard.submit`.
public struct Submission: Sendable, Hashable {
    /// The OpenAI chat-completions request (`{"messages": [...]}`).
    public var request: JSONValue
    public var priority: Priority
    public var taskClass: String?
    public var affinityKey: String?
    public var runAt: Date?
    public var deadline: Date?
    public var maxAttempts: Int?
    public var idempotencyKey: String?
    public var tenant: String?
    public var metadata: JSONValue

    public init(
        request: JSONValue, priority: Priority = .interactive, taskClass: String? = nil, affinityKey: String? = nil,
        runAt: Date? = nil, deadline: Date? = nil, maxAttempts: Int? = nil, idempotencyKey: String? = nil,
        tenant: String? = nil, metadata: JSONValue = [:]
    ) {
        self.request = request
        self.priority = priority
        self.taskClass = taskClass
        self.affinityKey = affinityKey
        self.runAt = runAt
        self.deadline = deadline
        self.maxAttempts = maxAttempts
        self.idempotencyKey = idempotencyKey
        self.tenant = tenant
        self.metadata = metadata
    }

    /// A one-message chat request.
    public static func prompt(_ text: String, system: String? = nil) -> JSONValue {
        var messages: [JSONValue] = []
        if let system { messages.append(["role": "system", "content": .string(system)]) }
        messages.append(["role": "user", "content": .string(text)])
        return ["messages": .array(messages)]
    }

    /// Reads one line of a JSONL submission file: either a bare request (`{"messages": …}`) or an
    /// envelope (`{"request": {…}, "priority": "background", "affinity_key": …}`), with
    /// `defaults` for whatever the line leaves out.
    /// - Throws: `QueueError.invalidInput` saying what is wrong with the line (a NUL character
    ///   anywhere included: Postgres cannot store it, and libpq would cut a parameter short at it).
    public static func parse(line: String, defaults: Submission) throws -> Submission {
        let value = try JSONValue(parsing: line)
        guard case .object(let object) = value else {
            throw QueueError(.invalidInput, "a line must be a JSON object, got \(value.typeName)")
        }
        try InputScreen.checkStrings(value, path: object["request"] == nil ? "request" : "")
        guard let request = object["request"] else {
            var submission = defaults
            submission.request = value
            return submission
        }
        var submission = defaults
        submission.request = request
        let known: Set<String> = [
            "request", "priority", "task_class", "affinity_key", "run_at", "deadline", "max_attempts",
            "idempotency_key", "tenant", "metadata",
        ]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw QueueError(
                .invalidInput, "unknown field \"\(unknown)\"\(CatalogProblem.didYouMean(unknown, among: known))",
                hint: "An envelope line may have: \(known.sorted().joined(separator: ", "))."
            )
        }
        func text(_ key: String) throws -> String? {
            guard let field = object[key], !field.isNull else { return nil }
            guard let string = field.stringValue else {
                throw QueueError(.invalidInput, "\(key) must be a string, got \(field.typeName)")
            }
            return string
        }
        // As the --run-at and --deadline flags read them: a time, or a duration from now ("15m").
        func date(_ key: String) throws -> Date? {
            guard let string = try text(key) else { return nil }
            if let parsed = ISO8601Parsing.date(string) { return parsed }
            if let duration = Arguments.parseDuration(string.hasPrefix("+") ? String(string.dropFirst()) : string) {
                return Date().addingTimeInterval(duration.seconds)
            }
            throw QueueError(
                .invalidInput,
                "\(key) must be an ISO 8601 time like 2026-11-26T21:00:00Z or a duration from now like 15m "
                    + "(got \"\(string)\")")
        }
        if let priority = try text("priority") {
            guard let parsed = Priority(rawValue: priority) else {
                throw QueueError(.invalidInput, "priority must be interactive or background (got \"\(priority)\")")
            }
            submission.priority = parsed
        }
        submission.taskClass = try text("task_class") ?? defaults.taskClass
        submission.affinityKey = try text("affinity_key") ?? defaults.affinityKey
        submission.idempotencyKey = try text("idempotency_key")
        submission.tenant = try text("tenant") ?? defaults.tenant
        submission.runAt = try date("run_at") ?? defaults.runAt
        submission.deadline = try date("deadline") ?? defaults.deadline
        if let attempts = object["max_attempts"], !attempts.isNull {
            guard let number = attempts.intValue else {
                throw QueueError(.invalidInput, "max_attempts must be a whole number, got \(attempts.typeName)")
            }
            submission.maxAttempts = number
        }
        if let metadata = object["metadata"], !metadata.isNull { submission.metadata = metadata }
        return submission
    }
}

/// ISO 8601 parsing for command-line and JSONL times, with or without fractional seconds.
/// A date that does not exist (February 30, 24:00, a 60th second) is nil: Foundation's parser
/// would roll it over into the next month, day or minute.
public enum ISO8601Parsing {
    public static func date(_ text: String) -> Date? {
        guard fieldsExist(text) else { return nil }
        if let date = try? Date(text, strategy: .iso8601) { return date }
        let fractional = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return try? fractional.parse(text)
    }

    /// Whether the `YYYY-MM-DDTHH:MM:SS` fields at the start of the text name a real moment.
    static func fieldsExist(_ text: String) -> Bool {
        let digits = Array(text.utf8.prefix(19))
        func number(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= digits.count else { return nil }
            var value = 0
            for byte in digits[range] {
                guard (0x30...0x39).contains(byte) else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10) else { return true }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard (1...12).contains(month), (1...days[month - 1]).contains(day) else { return false }
        if let hour = number(11..<13), hour > 23 { return false }
        if let minute = number(14..<16), minute > 59 { return false }
        if let second = number(17..<19), second > 59 { return false }
        return true
    }
}
