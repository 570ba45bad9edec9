/// The kind of work a request is, which picks its routing rule: `code`, `creative`, `reasoning`,
/// `long_context`, `multilingual`, `simple`, `general`, or any name a job gives.
public struct TaskClass: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible,
    ExpressibleByStringLiteral
{
    /// The class name, as in `task_class`.
    public var rawValue: String

    /// A class by name.
    public init(rawValue: String) { self.rawValue = rawValue }
    /// A class by name.
    public init(_ rawValue: String) { self.rawValue = rawValue }
    /// A class by name.
    public init(stringLiteral value: String) { self.rawValue = value }

    /// The class name.
    public var description: String { rawValue }

    /// A short factual question.
    public static let simple: TaskClass = "simple"
    /// Explanation, analysis, comparison, step-by-step thinking.
    public static let reasoning: TaskClass = "reasoning"
    /// Code blocks and programming.
    public static let code: TaskClass = "code"
    /// Stories, poems, lyrics, marketing copy.
    public static let creative: TaskClass = "creative"
    /// A prompt too long for small context windows.
    public static let longContext: TaskClass = "long_context"
    /// Mostly non-Latin script, or translation.
    public static let multilingual: TaskClass = "multilingual"
    /// Nothing more specific matched.
    public static let general: TaskClass = "general"

    /// The classes the classifier produces.
    public static let builtIn: [TaskClass] = [
        .simple, .reasoning, .code, .creative, .longContext, .multilingual, .general,
    ]

    /// The capability scores that measure a model for this class, best first: the class's own
    /// name, then the nearest general score (`simple` → `factual`; `long_context` and `general`
    /// → `reasoning`).
    public var capabilityNames: [String] {
        switch self {
        case .simple: ["simple", "factual"]
        case .longContext: ["long_context", "reasoning"]
        case .general: ["general", "reasoning"]
        default: [rawValue]
        }
    }

    /// The model's score (0–100) for this class, or nil when it has none.
    public func score(of model: ModelSpec) -> Int? {
        scoredCapability(of: model)?.score
    }

    /// The capability that scored the model for this class, and the score.
    public func scoredCapability(of model: ModelSpec) -> (name: String, score: Int)? {
        for name in capabilityNames {
            if let score = model.capabilities[name] { return (name, score) }
        }
        return nil
    }
}

/// A request's task class and how it was decided.
public struct TaskClassification: Sendable, Hashable {
    /// Where the class came from.
    public enum Source: String, Sendable, Hashable {
        /// The job carried `task_class`, which always wins.
        case job
        /// The classifier's rules and heuristics over the messages.
        case heuristic
    }

    /// The class.
    public var taskClass: TaskClass
    /// Whether the job gave it or the classifier chose it.
    public var source: Source
    /// Why, for people: `a fenced code block`, `asks "why"`, `≈ 9,120 prompt tokens ≥ 8,000`.
    public var reason: String

    /// A classification.
    public init(taskClass: TaskClass, source: Source, reason: String) {
        self.taskClass = taskClass
        self.source = source
        self.reason = reason
    }
}
