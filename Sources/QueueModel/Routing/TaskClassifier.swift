/// Decides a request's task class from its messages when the job carries none. Pure and
/// deterministic: the same messages always get the same class.
///
/// The job's own `task_class` always wins. Otherwise the first of these that matches decides,
/// looking at the last user message (the current ask) and, for size, the whole prompt:
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
    public func classify(_ request: JSONValue, given: String? = nil, estimate: PromptEstimate? = nil)
        -> TaskClassification
    {
        if let given = given?.trimmingCharacters(in: .whitespaces), !given.isEmpty {
            return TaskClassification(taskClass: TaskClass(given), source: .job, reason: "the job's task_class")
        }
        let estimate = estimate ?? PromptEstimate(request: request)
        if estimate.promptTokens >= longContextTokens {
            return heuristic(.longContext, "≈ \(estimate.promptTokens) prompt tokens ≥ \(longContextTokens)")
        }
        let texts = PromptEstimate.messageTexts(of: request)
        let ask = texts.last { $0.role == "user" }?.text ?? texts.last?.text ?? ""
        let lowered = ask.lowercased()
        let words = Self.words(lowered)
        let vocabulary = Set(words)

        if ask.contains("```") { return heuristic(.code, "a fenced code block") }
        if let shape = Self.codeShapes.first(where: { lowered.contains($0) }) {
            return heuristic(.code, "code-shaped text (\(shape.trimmingCharacters(in: .whitespaces)))")
        }
        let strong = Self.programmingTerms.filter(vocabulary.contains)
        let weak = Self.ambiguousProgrammingTerms.filter(vocabulary.contains)
        let verb = Self.codeVerbs.first(where: vocabulary.contains)
        let terms = (strong + weak).sorted()
        if strong.count * 2 + weak.count >= 2 && (terms.count >= 2 || verb != nil) {
            let cue = (verb.map { ["\"\($0)\""] } ?? []) + terms.prefix(4)
            return heuristic(.code, "programming terms: \(cue.joined(separator: ", "))")
        }

        let (letters, nonLatin) = Self.letterCounts(ask)
        if letters >= 3, nonLatin * 10 >= letters * 3 {
            return heuristic(.multilingual, "\(nonLatin * 100 / letters)% of its letters are non-Latin")
        }
        if let word = ["translate", "translation", "translating"].first(where: vocabulary.contains) {
            return heuristic(.multilingual, "asks to \"\(word)\"")
        }
        if let word = Self.creativeTerms.first(where: vocabulary.contains) {
            return heuristic(.creative, "creative writing (\"\(word)\")")
        }
        if let word = Self.reasoningTerms.first(where: vocabulary.contains)
            ?? Self.reasoningPhrases.first(where: lowered.contains)
        {
            return heuristic(.reasoning, "asks to reason (\"\(word)\")")
        }
        if let how = Self.howQuestion(words) { return heuristic(.reasoning, "asks how something works (\"\(how)\")") }
        if ask.count <= shortMessageCharacters {
            return heuristic(.simple, "a short message (\(ask.count) characters ≤ \(shortMessageCharacters))")
        }
        return heuristic(.general, "no cue matched (\(ask.count) characters)")
    }

    private func heuristic(_ taskClass: TaskClass, _ reason: String) -> TaskClassification {
        TaskClassification(taskClass: taskClass, source: .heuristic, reason: reason)
    }

    // MARK: Cues

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

    /// "how does/do/can/would/should/to …" asks how something works; "how many/much/tall …" asks a fact.
    static func howQuestion(_ words: [String]) -> String? {
        let follows: Set<String> = ["does", "do", "did", "can", "could", "would", "should", "is", "are", "to", "might"]
        for (index, word) in words.enumerated() where word == "how" && index + 1 < words.count {
            if follows.contains(words[index + 1]) { return "how \(words[index + 1])" }
        }
        return nil
    }

    /// Lowercased words: runs of letters, digits, `_` and `-`.
    static func words(_ text: String) -> [String] {
        text.split { !($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }.map(String.init)
    }

    /// Letters in the text, and how many of them are outside the Latin script.
    static func letterCounts(_ text: String) -> (letters: Int, nonLatin: Int) {
        var letters = 0
        var nonLatin = 0
        for scalar in text.unicodeScalars where scalar.properties.isAlphabetic {
            letters += 1
            let value = scalar.value
            let latin =
                value < 0x250 || (0x1E00...0x1EFF).contains(value) || (0x2C60...0x2C7F).contains(value)
                || (0xA720...0xA7FF).contains(value) || (0xFF21...0xFF5A).contains(value)
            if !latin { nonLatin += 1 }
        }
        return (letters, nonLatin)
    }
}
