import Foundation

/// Reads a catalog document's JSON into models and rules, collecting every problem instead of
/// stopping at the first, so one import run lists everything there is to fix.
struct CatalogReader {
    private(set) var problems: [CatalogProblem] = []
    private(set) var warnings: [CatalogProblem] = []
    /// Every model name the document defines, valid or not, so a rule naming a model that has
    /// its own problems is not also reported as naming an unknown model.
    var definedModelNames: Set<String> = []
    /// Models the database has that the document's "models" section replaces (an import without
    /// --merge): a rule naming one is told so, not that the catalog lacks it.
    var replacedModels: Set<String> = []

    mutating func problem(_ path: String, _ message: String, hint: String? = nil) {
        problems.append(CatalogProblem(path: path, message: message, hint: hint))
    }

    /// Reports a value that holds a credential (a model's credentials header), in place of the
    /// shape check's "looks like an API key" at the same path: a walkthrough's "Authorization":
    /// "Bearer …" was reported twice, one mistake counted as two. (Every other path keeps the
    /// shape check's report.)
    mutating func credentialProblem(_ path: String, _ message: String, hint: String) {
        problems.removeAll { $0.path == path && $0.message.hasPrefix(Self.secretShapeMessage) }
        problem(path, message, hint: hint)
    }

    static let secretShapeMessage = "looks like an API key or token"

    mutating func warning(_ path: String, _ message: String, hint: String? = nil) {
        warnings.append(CatalogProblem(path: path, message: message, hint: hint))
    }

    // MARK: Objects

    /// The members of an object, after reporting duplicated and unknown keys.
    /// - Parameters:
    ///   - allowed: the keys this object may have, in the order the documentation lists them.
    ///   - synonyms: keys users write by habit (from LiteLLM or Portkey configs), with the key we
    ///     use instead; a synonym is reported with that key as the fix.
    mutating func members(
        _ node: JSONNode, at path: String, allowed: [String], synonyms: [String: String] = [:]
    ) -> [String: JSONNode]? {
        guard let members = node.members else {
            problem(path, "expected an object, got \(node.typeName)")
            return nil
        }
        var result: [String: JSONNode] = [:]
        for member in members {
            let memberPath = Self.join(path, member.key)
            if result[member.key] != nil {
                problem(memberPath, "appears twice", hint: "keep one of them")
                continue
            }
            guard allowed.contains(member.key) else {
                if let replacement = synonyms[member.key] {
                    // The name in quotes, a note after it: `write "api_key_env" instead (the NAME …)`.
                    let name = replacement.prefix { $0 != " " }
                    let note = replacement.dropFirst(name.count).trimmingCharacters(in: .whitespaces)
                    problem(memberPath, "unknown field", hint: "write \"\(name)\" instead" + (note.isEmpty ? "" : " \(note)"))
                } else {
                    let suggestion = CatalogProblem.suggestion(for: member.key, among: allowed)
                    problem(
                        memberPath, "unknown field" + (suggestion.map { " (did you mean \"\($0)\"?)" } ?? ""),
                        hint: suggestion == nil
                            ? "remove it; the fields here are \(allowed.joined(separator: ", "))" : nil
                    )
                }
                continue
            }
            result[member.key] = member.value
        }
        return result
    }

    // MARK: Typed values

    /// A non-empty string, or nil (with a problem when present but not a string).
    mutating func string(_ node: JSONNode?, at path: String, required: Bool = false) -> String? {
        guard let node, node != .null else {
            if required { problem(path, "is required", hint: "add it") }
            return nil
        }
        guard let text = node.stringValue else {
            problem(path, "expected a string, got \(node.typeName)")
            return nil
        }
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else {
            problem(path, "must not be empty")
            return nil
        }
        return text
    }

    /// A whole number within `range`.
    mutating func integer(_ node: JSONNode?, at path: String, range: ClosedRange<Int>, unit: String = "") -> Int? {
        guard let node, node != .null else { return nil }
        guard case .number = node else {
            problem(path, "expected a whole number, got \(node.typeName)")
            return nil
        }
        guard let value = node.intValue else {
            problem(path, "expected a whole number, got \(Self.literal(node))")
            return nil
        }
        guard range.contains(value) else {
            problem(
                path, "\(value)\(unit) is out of range",
                hint: "use a value from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    /// An exact decimal, at least `minimum`, with at most `places` digits after the point.
    mutating func decimal(_ node: JSONNode?, at path: String, minimum: Decimal = 0, places: Int = 10) -> Decimal? {
        guard let node, node != .null else { return nil }
        guard let value = node.decimalValue else {
            if case .string(let text) = node, Double(text) != nil {
                problem(path, "expected a number, got a string", hint: "write it without quotes: \(text)")
            } else if case .number(let text) = node {
                problem(path, "\(text) is out of range", hint: "use a number from \(minimum) up to 9999999999")
            } else {
                problem(path, "expected a number, got \(node.typeName)")
            }
            return nil
        }
        guard value >= minimum, value < 10_000_000_000 else {
            problem(
                path, "\(Self.literal(node)) is out of range", hint: "use a number from \(minimum) up to 9999999999")
            return nil
        }
        guard value.rounded(places) == value else {
            problem(
                path, "\(Self.literal(node)) has more than \(places) digits after the decimal point",
                hint: "the catalog keeps prices to \(places) places; round it"
            )
            return nil
        }
        return value
    }

    /// A number within `range` (for weights and ratios, where a `Double` is exact enough).
    mutating func double(_ node: JSONNode?, at path: String, range: ClosedRange<Double>) -> Double? {
        guard let node, node != .null else { return nil }
        guard case .number(let text) = node, let value = Double(text) else {
            problem(path, "expected a number, got \(node.typeName)")
            return nil
        }
        guard range.contains(value) else {
            problem(
                path, "\(text) is out of range", hint: "use a number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    mutating func bool(_ node: JSONNode?, at path: String) -> Bool? {
        guard let node, node != .null else { return nil }
        guard case .bool(let value) = node else {
            problem(path, "expected true or false, got \(node.typeName)")
            return nil
        }
        return value
    }

    /// JSON kept as given, which must be of the kind `expected` names ("an object", "an array").
    mutating func json(_ node: JSONNode?, at path: String, expected: String) -> JSONValue? {
        guard let node, node != .null else { return nil }
        guard node.typeName == expected else {
            problem(path, "expected \(expected), got \(node.typeName)")
            return nil
        }
        refuseSecrets(in: node, at: path)
        return node.jsonValue
    }

    /// A string or an array of strings, as a list.
    mutating func stringList(_ node: JSONNode?, at path: String) -> [String]? {
        guard let node, node != .null else { return nil }
        if case .string = node { return string(node, at: path).map { [$0] } }
        guard case .array(let elements) = node else {
            problem(path, "expected a string or an array of strings, got \(node.typeName)")
            return nil
        }
        var list: [String] = []
        for (index, element) in elements.enumerated() {
            if let text = string(element, at: "\(path)[\(index)]", required: true) { list.append(text) }
        }
        return list
    }

    // MARK: Secrets

    /// Reports string values that look like API keys. Keys must never reach the database
    /// (DESIGN.md invariant 4), and the message never repeats the value.
    mutating func refuseSecrets(in node: JSONNode, at path: String) {
        switch node {
        case .string(let text) where Self.looksLikeSecret(text):
            problem(
                path, "\(Self.secretShapeMessage) (the value is not shown)",
                hint: "keys never go into the catalog: put the key in an environment variable on the workers and "
                    + "name that variable in api_key_env"
            )
        case .array(let elements):
            for (index, element) in elements.enumerated() { refuseSecrets(in: element, at: "\(path)[\(index)]") }
        case .object(let members):
            for member in members { refuseSecrets(in: member.value, at: Self.join(path, member.key)) }
        default:
            break
        }
    }

    /// True for text shaped like a provider key or bearer token.
    static func looksLikeSecret(_ text: String) -> Bool {
        let prefixes = [
            "sk-", "sk_", "pk-", "rk-", "sess-", "AIza", "xai-", "gsk_", "hf_", "ghp_", "github_pat_", "glpat-",
        ]
        if prefixes.contains(where: { text.hasPrefix($0) }) && text.count >= 12 { return true }
        if text.lowercased().hasPrefix("bearer ") { return true }
        if text.hasPrefix("eyJ") && text.count >= 30 { return true }  // a JWT
        // A long run of mixed letters and digits with no word separators reads as a random key.
        let isKeyAlphabet = text.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "-"
        }
        let hasDigits = text.contains(where: \.isNumber)
        let hasLower = text.contains(where: \.isLowercase)
        let hasUpper = text.contains(where: \.isUppercase)
        return text.count >= 32 && isKeyAlphabet && hasDigits && hasLower && hasUpper
    }

    // MARK: Paths

    static func join(_ path: String, _ key: String) -> String {
        let simple = !key.isEmpty && key.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
        let component = simple ? key : "\"\(key)\""
        return path.isEmpty ? component : "\(path).\(component)"
    }

    static func literal(_ node: JSONNode) -> String {
        switch node {
        case .number(let text): text
        case .string(let text): "\"\(text)\""
        default: node.typeName
        }
    }
}
