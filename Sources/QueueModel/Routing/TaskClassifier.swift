/// Decides a request's task class from its messages when the job carries none. Pure and
/// deterministic: the same messages always get the same class.
///
/// The job's own `task_class` always wins. Otherwise the first of these that matches decides,
/// looking at the last user message (the current ask) and, for size, the whole prompt. A job with
/// an affinity key whose messages hold an answer is read by its first user message with words in
/// it instead: each turn of a conversation resends the ones before, so its turns share a class, a
/// rule and a model (classed by each turn's ask, a walkthrough's 500 conversations of four turns
/// were each served by three or four models).
///
/// 1. `long_context`: the prompt is estimated at `longContextTokens` or more.
/// 2. `code`: a fenced code block, code-shaped text (`def f(`, `#include`, `=>`, a traceback), two
///    programming terms (`python`, `function`, `regex`, …), or one with a verb ("write a function").
///    Words that are also plain English (`swift`, `class`, `java`) count half.
/// 3. `multilingual`: at least 30% of the letters are outside the Latin script, or it asks to
///    translate.
/// 4. `creative`: asks to write, or names a form (story, poem, lyrics, haiku, slogan, …).
/// 5. `reasoning`: explain, why, analyze, compare, prove, step by step, or "how" asking how
///    something works ("how does", "how to"; not "how many", "how tall").
/// 6. `simple`: a short message (at most `shortMessageCharacters`).
/// 7. `general`: anything else.
public struct TaskClassifier: Sendable {
    /// Prompts estimated at this many tokens or more are `long_context`.
    public var longContextTokens: Int
    /// Messages up to this many characters, with no other cue, are `simple`.
    public var shortMessageCharacters: Int

    /// A classifier with these thresholds.
    public init(longContextTokens: Int = 8000, shortMessageCharacters: Int = 300) {
        self.longContextTokens = longContextTokens
        self.shortMessageCharacters = shortMessageCharacters
    }

    /// The class of a request.
    /// - Parameters:
    ///   - request: the chat-completions body.
    ///   - given: the job's `task_class`, which overrides the heuristics when set.
    ///   - estimate: the request's size, when the caller already has it.
    ///   - conversation: the job has an affinity key: read the first user message, not the last.
    public func classify(
        _ request: JSONValue, given: String? = nil, estimate: PromptEstimate? = nil, conversation: Bool = false
    ) -> TaskClassification {
        if let given = given?.trimmingCharacters(in: .whitespaces), !given.isEmpty {
            return TaskClassification(taskClass: TaskClass(given), source: .job, reason: "the job's task_class")
        }
        let estimate = estimate ?? PromptEstimate(request: request)
        if estimate.promptTokens >= longContextTokens {
            return heuristic(.longContext, "≈ \(estimate.promptTokens) prompt tokens ≥ \(longContextTokens)")
        }
        let texts = PromptEstimate.messageTexts(of: request)
        let users = texts.lazy.filter { $0.role == "user" }
        // A conversation under way (an answer in it): its first user message with words in it (a
        // first message of "" or an image alone classed a whole conversation simple).
        let opening =
            conversation && texts.contains(where: { $0.role == "assistant" })
            ? users.first(where: { !$0.text.allSatisfy(\.isWhitespace) }) : nil
        let fromFirst = opening != nil && users.dropFirst().first != nil
        let ask = (fromFirst ? opening?.text : users.last?.text) ?? texts.last?.text ?? ""
        let classification = classify(ask: ask)
        guard fromFirst else { return classification }
        return heuristic(
            classification.taskClass, classification.reason + ", in the first user message (the job has an affinity key)")
    }

    /// The class the heuristics give one message.
    private func classify(ask: String) -> TaskClassification {
        // Byte-level matching, lowercased in ASCII only: every cue is ASCII, and both Unicode
        // lowercasing and Foundation's `contains` (ICU-backed) cost more than the rest of a plan.
        let bytes = ask.utf8.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
        let words = Self.words(bytes)
        // One dictionary lookup per word decides; the cue lists are only searched again to word
        // the reason for the class chosen.
        var found: Cue = []
        var strongTerms: [String] = []
        var weakTerms: [String] = []
        for word in words {
            guard Self.mayBeCue(word), let cue = Self.cues[word] else { continue }
            found.formUnion(cue)
            if cue.contains(.strong), !strongTerms.contains(word) { strongTerms.append(word) }
            if cue.contains(.weak), !weakTerms.contains(word) { weakTerms.append(word) }
        }
        let vocabulary = words  // searched only to word a reason

        if Self.find(Self.fence, in: bytes) { return heuristic(.code, "a fenced code block") }
        if let shape = Self.first(of: Self.codeShapes, Self.codeShapePatterns, in: bytes) {
            return heuristic(.code, "code-shaped text (\(shape.trimmingCharacters(in: .whitespaces)))")
        }
        let termCount = strongTerms.count + weakTerms.count
        if strongTerms.count * 2 + weakTerms.count >= 2 && (termCount >= 2 || found.contains(.verb)) {
            let verb = Self.codeVerbs.first(where: vocabulary.contains)
            let cue = (verb.map { ["\"\($0)\""] } ?? []) + (strongTerms + weakTerms).sorted().prefix(4)
            return heuristic(.code, "programming terms: \(cue.joined(separator: ", "))")
        }

        let (letters, nonLatin) = Self.letterCounts(ask)
        if letters >= 3, nonLatin * 10 >= letters * 3 {
            return heuristic(.multilingual, "\(nonLatin * 100 / letters)% of its letters are non-Latin")
        }
        if found.contains(.translate), let word = Self.translateTerms.first(where: vocabulary.contains) {
            return heuristic(.multilingual, "asks to \"\(word)\"")
        }
        if found.contains(.creative), let word = Self.creativeTerms.first(where: vocabulary.contains) {
            return heuristic(.creative, "creative writing (\"\(word)\")")
        }
        if let word = (found.contains(.reasoning) ? Self.reasoningTerms.first(where: vocabulary.contains) : nil)
            ?? Self.first(of: Self.reasoningPhrases, Self.reasoningPhrasePatterns, in: bytes)
        {
            return heuristic(.reasoning, "asks to reason (\"\(word)\")")
        }
        if let how = Self.howQuestion(words) { return heuristic(.reasoning, "asks how something works (\"\(how)\")") }
        let length = ask.unicodeScalars.count
        if length <= shortMessageCharacters {
            return heuristic(
                .simple, "a short message (\(length) \(length == 1 ? "character" : "characters") ≤ \(shortMessageCharacters))")
        }
        return heuristic(.general, "no cue matched (\(length) characters)")
    }

    private func heuristic(_ taskClass: TaskClass, _ reason: String) -> TaskClassification {
        TaskClassification(taskClass: taskClass, source: .heuristic, reason: reason)
    }

    // MARK: Cues

    /// Which cue lists a word is in.
    struct Cue: OptionSet, Sendable {
        let rawValue: UInt8
        static let strong = Cue(rawValue: 1)
        static let weak = Cue(rawValue: 2)
        static let verb = Cue(rawValue: 4)
        static let translate = Cue(rawValue: 8)
        static let creative = Cue(rawValue: 16)
        static let reasoning = Cue(rawValue: 32)
    }

    static let translateTerms = ["translate", "translation", "translating"]

    /// Every cue word, with the lists it is in.
    static let cues: [String: Cue] = {
        var cues: [String: Cue] = [:]
        for (list, cue) in [
            (programmingTerms, Cue.strong), (ambiguousProgrammingTerms, .weak), (codeVerbs, .verb),
            (translateTerms, .translate), (creativeTerms, .creative), (reasoningTerms, .reasoning),
        ] {
            for word in list { cues[word, default: []].formUnion(cue) }
        }
        return cues
    }()

    /// Whether a word has the first byte and length of some cue word: most words do not, and
    /// this check costs far less than hashing the word for `cues`.
    static func mayBeCue(_ word: String) -> Bool {
        guard let first = word.utf8.first else { return false }
        return cueLengthsByFirstByte[Int(first)] & (1 << min(word.utf8.count, 63)) != 0
    }

    /// For each first byte, a bit per length (63 for 63 and over) of the cue words starting with it.
    static let cueLengthsByFirstByte: [UInt64] = {
        var lengths = [UInt64](repeating: 0, count: 256)
        for word in cues.keys {
            guard let first = word.utf8.first else { continue }
            lengths[Int(first)] |= 1 << min(word.utf8.count, 63)
        }
        return lengths
    }()

    /// The first of `needles` whose bytes (`patterns`, in the same order) occur in `bytes`.
    static func first(of needles: [String], _ patterns: [[UInt8]], in bytes: [UInt8]) -> String? {
        patterns.firstIndex { find($0, in: bytes) }.map { needles[$0] }
    }

    static let fence = Array("```".utf8)

    static let codeShapes = [
        "def ", "#include", "=>", "};", "fn main", "func ", "console.log", "print(", "import java", "select * from",
        "traceback (most recent call last)", "exception in thread", "segmentation fault", "npm install", "pip install",
        "git commit", "public static void", "</div>", "<?php",
    ]

    /// Words that mean programming on their own.
    static let programmingTerms = [
        "code", "function", "compile", "compiler", "debug", "python", "javascript", "typescript", "golang", "kotlin",
        "sql", "regex", "api", "json", "yaml", "refactor", "segfault", "unittest", "html", "css", "kubernetes",
        "docker", "bash", "npm", "stacktrace", "recursion", "programming", "endpoint",
    ]

    /// Words that mean programming only in company ("swift reply", "class trip").
    static let ambiguousProgrammingTerms = [
        "swift", "rust", "java", "class", "method", "loop", "array", "variable", "query", "database", "bug",
        "script", "exception", "pointer", "syntax", "runtime", "framework", "react", "git", "algorithm", "struct",
    ]

    /// Verbs that, with one programming term, ask for code ("write a function", "fix this bug").
    static let codeVerbs = ["write", "implement", "fix", "debug", "refactor", "optimize", "convert", "port"]

    static let creativeTerms = [
        "write", "story", "stories", "poem", "poems", "poetry", "haiku", "limerick", "sonnet", "lyrics", "song",
        "fiction", "novel", "screenplay", "slogan", "tagline", "rhyme", "fairy", "fable", "creative", "imagine",
    ]

    static let reasoningTerms = [
        "explain", "why", "analyze", "analyse", "compare", "contrast", "prove", "derive", "evaluate", "reason",
        "solve", "calculate", "tradeoffs", "trade-offs",
    ]

    static let reasoningPhrases = ["step by step", "pros and cons", "what would happen"]

    // The cue phrases as bytes, made once: converting them per request allocated an array each.
    static let codeShapePatterns = codeShapes.map { Array($0.utf8) }
    static let reasoningPhrasePatterns = reasoningPhrases.map { Array($0.utf8) }

    /// Words after "how" that ask how something works.
    static let howFollowers: Set<String> = [
        "does", "do", "did", "can", "could", "would", "should", "is", "are", "to", "might",
    ]

    /// "how does/do/can/would/should/to …" asks how something works; "how many/much/tall …" asks a fact.
    static func howQuestion(_ words: [String]) -> String? {
        for (index, word) in words.enumerated() where word == "how" && index + 1 < words.count {
            if howFollowers.contains(words[index + 1]) { return "how \(words[index + 1])" }
        }
        return nil
    }

    /// Lowercased words: runs of letters, digits, `_` and `-` (any non-ASCII byte counts as a
    /// letter, so words in other scripts stay whole).
    static func words(_ bytes: [UInt8]) -> [String] {
        var words: [String] = []
        var start: Int?
        for index in 0...bytes.count {
            let isWordByte: Bool
            if index < bytes.count {
                let byte = bytes[index]
                isWordByte = byte >= 0x80 || (byte >= 97 && byte <= 122) || (byte >= 65 && byte <= 90)
                    || (byte >= 48 && byte <= 57) || byte == 95 || byte == 45
            } else {
                isWordByte = false
            }
            if isWordByte {
                if start == nil { start = index }
            } else if let first = start {
                words.append(String(decoding: bytes[first..<index], as: UTF8.self))
                start = nil
            }
        }
        return words
    }

    /// Whether a byte pattern (an ASCII cue) occurs in the bytes.
    static func find(_ pattern: [UInt8], in bytes: [UInt8]) -> Bool {
        guard let first = pattern.first, pattern.count <= bytes.count else { return false }
        var index = 0
        let last = bytes.count - pattern.count
        while index <= last {
            if bytes[index] == first {
                var matched = 1
                while matched < pattern.count && bytes[index + matched] == pattern[matched] { matched += 1 }
                if matched == pattern.count { return true }
            }
            index += 1
        }
        return false
    }

    /// Letters in the text, and how many of them are outside the Latin script.
    static func letterCounts(_ text: String) -> (letters: Int, nonLatin: Int) {
        var letters = 0
        var nonLatin = 0
        for scalar in text.unicodeScalars {
            let value = scalar.value
            if value < 0x80 {
                // ASCII: a letter or not, no table lookup.
                if (value >= 97 && value <= 122) || (value >= 65 && value <= 90) { letters += 1 }
                continue
            }
            guard scalar.properties.isAlphabetic else { continue }
            letters += 1
            let latin =
                value < 0x250 || (0x1E00...0x1EFF).contains(value) || (0x2C60...0x2C7F).contains(value)
                || (0xA720...0xA7FF).contains(value) || (0xFF21...0xFF5A).contains(value)
            if !latin { nonLatin += 1 }
        }
        return (letters, nonLatin)
    }
}
