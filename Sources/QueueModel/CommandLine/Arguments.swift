/// Command-line arguments parsed against the options a command declares.
///
/// Accepts `--name value`, `--name=value`, boolean `--flag`, options declared repeatable given
/// more than once, and `--` to end options. An undeclared option is an error that names the
/// command's `--help`; so is another given twice (`--prompt a --prompt b` would drop one).
public struct Arguments: Sendable {
    public private(set) var positionals: [String] = []
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []

    /// - Parameters:
    ///   - arguments: the words after the command name.
    ///   - command: the command, for error messages (`dispatcher submit`).
    ///   - options: names of options that take a value.
    ///   - flags: names of boolean options.
    ///   - takesWords: false for a command that takes options only: a stray word is an error
    ///     (`dispatcher migrate status` must not migrate when `--status` was meant).
    ///   - repeatable: the options that may be given more than once (read with `values`).
    public init(
        _ arguments: [String], command: String, options: Set<String> = [], flags: Set<String> = [],
        takesWords: Bool = true, repeatable: Set<String> = []
    ) throws {
        var index = 0
        while index < arguments.count {
            let word = arguments[index]
            index += 1
            if word == "--" {
                positionals += arguments[index...]
                break
            }
            if word == "-h" {
                self.flags.insert("help")
                continue
            }
            guard word.hasPrefix("--"), word.count > 2 else {
                positionals.append(word)
                continue
            }
            var name = String(word.dropFirst(2))
            var inlineValue: String?
            if let equals = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            if flags.contains(name) || name == "help" {
                if let inlineValue, !["true", "false"].contains(inlineValue) {
                    throw QueueError(.invalidInput, "--\(name) takes no value (got \"\(inlineValue)\")",
                                     hint: "Run `\(command) --help`.")
                }
                if inlineValue != "false" { self.flags.insert(name) }
            } else if options.contains(name) {
                let value: String
                if let inlineValue {
                    value = inlineValue
                } else {
                    guard index < arguments.count else {
                        throw QueueError(.invalidInput, "--\(name) needs a value", hint: "Run `\(command) --help`.")
                    }
                    value = arguments[index]
                    index += 1
                }
                if let earlier = values[name]?.first, !repeatable.contains(name) {
                    throw QueueError(
                        .invalidInput, "--\(name) is given twice (\"\(earlier)\", then \"\(value)\"); nothing was done",
                        hint: "Give it once.")
                }
                values[name, default: []].append(value)
            } else {
                // A misspelt option is named back, as git and cargo do.
                let near = CatalogProblem.suggestion(for: name, among: options.union(flags))
                throw QueueError(
                    .invalidInput,
                    "unknown option --\(name) for `\(command)`" + (near.map { " (did you mean --\($0)?)" } ?? ""),
                    hint: "Run `\(command) --help` to see its options."
                )
            }
        }
        if !takesWords, let word = positionals.first {
            throw QueueError(
                .invalidInput, "`\(command)` takes no arguments besides its options (got \"\(word)\"); nothing was done",
                hint: options.union(flags).contains(word)
                    ? "Did you mean --\(word)?" : "Run `\(command) --help` to see its options."
            )
        }
    }

    /// The value given for an option (the last, for a repeatable one).
    public func value(_ name: String) -> String? { values[name]?.last }

    /// Every value given for a repeatable option, in order.
    public func values(_ name: String) -> [String] { values[name] ?? [] }

    /// Whether a boolean option was given.
    public func flag(_ name: String) -> Bool { flags.contains(name) }

    /// An option parsed as an integer within bounds.
    public func integer(_ name: String, default defaultValue: Int, range: ClosedRange<Int> = Int.min...Int.max) throws -> Int {
        guard let text = value(name) else { return defaultValue }
        guard let number = Int(text), range.contains(number) else {
            throw QueueError(
                .invalidInput, "--\(name) must be a whole number between \(range.lowerBound) and \(range.upperBound) (got \"\(text)\")"
            )
        }
        return number
    }

    /// An option parsed as a duration: `250ms`, `30s`, `5m`, `2h`, `7d`, or plain seconds, from
    /// `minimum` up to `longestDurationDays`.
    public func duration(_ name: String, default defaultValue: Duration, minimum: Duration = .zero) throws -> Duration {
        guard let text = value(name) else { return defaultValue }
        guard let duration = Self.parseDuration(text) else {
            throw QueueError(
                .invalidInput,
                "--\(name) must be a duration like 500ms, 30s, 5m, 2h or 7d, at most \(Self.longestDurationDays)d (got \"\(text)\")")
        }
        // Durations are whole milliseconds: a positive one shorter than that would read as zero.
        if duration == .zero, let number = Double(text.trimmingCharacters(in: .letters)), number > 0 {
            throw QueueError(
                .invalidInput, "--\(name) \(text) is shorter than a millisecond, the shortest duration an option takes",
                hint: "write it in milliseconds, e.g. 1ms, or 0s for none")
        }
        guard duration >= minimum else {
            throw QueueError(
                .invalidInput, "--\(name) must be at least \(Self.format(minimum)) (got \"\(text)\")")
        }
        return duration
    }

    /// The longest duration an option takes, in days (a hundred years): past it, dates and
    /// timers overflow, and nobody means it.
    public static let longestDurationDays = 36_500

    /// Parses `250ms`, `30s`, `5m`, `2h`, `7d`, or a plain number of seconds, up to
    /// `longestDurationDays`; nil for anything else.
    public static func parseDuration(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        let (number, unit): (Double?, Double) =
            units.first { text.hasSuffix($0.0) }.map { (Double(text.dropLast($0.0.count)), $0.1) } ?? (Double(text), 1)
        guard let number, number >= 0, number * unit <= Double(longestDurationDays) * 86_400 else { return nil }
        return .milliseconds(Int64((number * unit * 1000).rounded()))
    }

    /// A duration as an option takes it back, in its largest whole unit: `250ms`, `75s`, `210m`, `2h`.
    public static func format(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        for (suffix, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
        where milliseconds >= size && milliseconds % size == 0 {
            return "\(milliseconds / size)\(suffix)"
        }
        return "\(milliseconds)ms"
    }
}
