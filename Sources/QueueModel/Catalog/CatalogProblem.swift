/// One thing wrong (or worth a warning) in a catalog document, at a path such as
/// `routing_rules.simple_queries.primary`.
public struct CatalogProblem: Sendable, Hashable, CustomStringConvertible {
    /// Where in the document: dot-separated member names, `[n]` for array elements.
    public var path: String
    /// What is wrong.
    public var message: String
    /// What to do about it.
    public var hint: String?

    /// A problem at `path`.
    public init(path: String, message: String, hint: String? = nil) {
        self.path = path
        self.message = message
        self.hint = hint
    }

    /// `{"path", "message", "hint"}` (no hint: null), for `models import --json`.
    public var json: JSONValue {
        ["path": .string(path), "message": .string(message), "hint": hint.map(JSONValue.string) ?? .null]
    }

    /// `path: message (hint)`, one line.
    public var description: String {
        let location = path.isEmpty ? "" : "\(path): "
        return location + message + (hint.map { " — \($0)" } ?? "")
    }

    /// The nearest candidate to a misspelt name, when one is close enough to be a likely typo.
    public static func suggestion(for name: String, among candidates: some Sequence<String>) -> String? {
        let lowered = name.lowercased()
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            var distance = editDistance(lowered, candidate.lowercased())
            // A prefix of a name ("cheap" for "cheapest") is as good a hint as a typo, when it is
            // most of the name ("def" is no hint of "default_max_tokens").
            if lowered.count >= 3, lowered.count * 2 >= candidate.count, candidate.lowercased().hasPrefix(lowered) {
                distance = min(distance, 1)
            }
            if distance < (best?.distance ?? .max) { best = (candidate, distance) }
        }
        guard let best else { return nil }
        // Short names tolerate one edit, longer ones about a third of their length.
        let allowed = max(1, min(3, max(name.count, best.candidate.count) / 3))
        return best.distance <= allowed ? best.candidate : nil
    }

    /// A " (did you mean …?)" clause, or nothing.
    public static func didYouMean(_ name: String, among candidates: some Sequence<String>) -> String {
        suggestion(for: name, among: candidates).map { " (did you mean \"\($0)\"?)" } ?? ""
    }

    /// Levenshtein distance, with a transposition of neighbours counting as one edit.
    static func editDistance(_ left: String, _ right: String) -> Int {
        let a = Array(left)
        let b = Array(right)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previousPrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], previousPrevious[j - 2] + 1)
                }
            }
            (previousPrevious, previous, current) = (previous, current, previousPrevious)
        }
        return previous[b.count]
    }
}
