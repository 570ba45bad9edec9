import QueueModel
import Testing

@Suite("Command-line arguments")
struct ArgumentsTests {
    @Test("options, flags, positionals and --")
    func parses() throws {
        let arguments = try Arguments(
            ["submit", "--priority", "background", "--class=code", "--wait", "-h", "--json=false", "--", "--literal"],
            command: "dispatcher submit", options: ["priority", "class"], flags: ["wait", "json"]
        )
        #expect(arguments.positionals == ["submit", "--literal"])
        #expect(arguments.value("priority") == "background")
        #expect(arguments.value("class") == "code")
        #expect(arguments.flag("wait"))
        #expect(arguments.flag("help"))
        #expect(!arguments.flag("json"))
    }

    @Test("an unknown option or a missing value names the command's --help")
    func errors() {
        let unknown = #expect(throws: QueueError.self) {
            try Arguments(["--prio", "x"], command: "dispatcher submit", options: ["priority"])
        }
        #expect(unknown?.message == "unknown option --prio for `dispatcher submit` (did you mean --priority?)")
        #expect(unknown?.hint?.contains("dispatcher submit --help") == true)
        let unlike = #expect(throws: QueueError.self) {
            try Arguments(["--colour"], command: "dispatcher status", options: ["database-url"], flags: ["json"])
        }
        #expect(unlike?.message == "unknown option --colour for `dispatcher status`")
        let missing = #expect(throws: QueueError.self) {
            try Arguments(["--priority"], command: "dispatcher submit", options: ["priority"])
        }
        #expect(missing?.message == "--priority needs a value")
    }

    @Test("durations", arguments: [("250ms", 250), ("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("1.5", 1500)])
    func durations(text: String, milliseconds: Int64) {
        #expect(Arguments.parseDuration(text) == .milliseconds(milliseconds))
    }

    @Test("a positive duration shorter than a millisecond is refused, not read as zero")
    func tooShort() throws {
        let arguments = try Arguments(["--window", "0.0001s", "--grace", "0s"], command: "c", options: ["window", "grace"])
        let error = #expect(throws: QueueError.self) { try arguments.duration("window", default: .seconds(1)) }
        #expect(error?.message == "--window 0.0001s is shorter than a millisecond, the shortest duration an option takes")
        #expect(try arguments.duration("grace", default: .seconds(1)) == .zero)
    }

    @Test("bad numbers and durations say what was expected")
    func badValues() throws {
        let arguments = try Arguments(["--n", "x", "--t", "soon"], command: "c", options: ["n", "t"])
        let number = #expect(throws: QueueError.self) { try arguments.integer("n", default: 1, range: 1...10) }
        #expect(number?.message.contains("between 1 and 10") == true)
        let duration = #expect(throws: QueueError.self) { try arguments.duration("t", default: .seconds(1)) }
        #expect(duration?.message.contains("like 500ms") == true)
    }

    @Test("a duration too long for a date or a timer is refused, not a crash",
          arguments: ["9999999999999999d", "99999999999999999s", "1e300", "inf", "infinity", "nan", "36501d", "-1s"])
    func tooLong(text: String) throws {
        #expect(Arguments.parseDuration(text) == nil)
        let arguments = try Arguments(["--timeout", text], command: "c", options: ["timeout"])
        let error = #expect(throws: QueueError.self) { try arguments.duration("timeout", default: .seconds(1)) }
        #expect(error?.message.contains("at most 36500d") == true)
    }

    @Test("a duration a hint suggests is one the parser takes back", arguments: [
        (Duration.milliseconds(250), "250ms"), (.seconds(75), "75s"), (.seconds(210 * 60), "210m"), (.seconds(7200), "2h"),
        (.seconds(3 * 86_400), "3d"), (.milliseconds(1500), "1500ms"),
    ])
    func formatted(duration: Duration, text: String) {
        #expect(Arguments.format(duration) == text)
        #expect(Arguments.parseDuration(text) == duration)
    }

    @Test("the longest duration is taken; an option can ask for a shortest")
    func durationBounds() throws {
        #expect(Arguments.parseDuration("36500d") == .seconds(36_500 * 86_400))
        let arguments = try Arguments(["--poll-interval", "0s"], command: "c", options: ["poll-interval"])
        let error = #expect(throws: QueueError.self) {
            try arguments.duration("poll-interval", default: .seconds(1), minimum: .milliseconds(10))
        }
        #expect(error?.message == "--poll-interval must be at least 10ms (got \"0s\")")
        #expect(try arguments.duration("poll-interval", default: .seconds(1)) == .zero)
    }

    @Test("a command that takes options only refuses a stray word, and suggests the option it looks like")
    func strayWord() {
        #expect(throws: QueueError.self) {
            try Arguments(["status"], command: "dispatcher migrate", flags: ["status"], takesWords: false)
        }
        do {
            _ = try Arguments(["status"], command: "dispatcher migrate", flags: ["status"], takesWords: false)
        } catch let error as QueueError {
            #expect(error.message.contains("takes no arguments besides its options (got \"status\")"))
            #expect(error.hint == "Did you mean --status?")
        } catch {
            Issue.record("unexpected error \(error)")
        }
        #expect((try? Arguments(["--status"], command: "dispatcher migrate", flags: ["status"], takesWords: false)) != nil)
    }
}
