import Foundation

/// What an import does with models and rules the file does not mention.
public enum CatalogImportMode: String, Sendable, Hashable, CaseIterable {
    /// Each section the file has is the whole truth for its kind, as a LiteLLM `config.yaml` or a
    /// Portkey config is: models absent from a `models` section are removed, rules absent from a
    /// `routing_rules` section are removed. A section the file does not have is left alone, so
    /// importing a rules-only file never deletes models. The default.
    case replace
    /// Only adds and updates; nothing is removed (`dispatcher models import --merge`).
    case merge
}

/// A validated `dispatcher models import` document: a `models` section and/or a `routing_rules`
/// section.
///
/// The rules accept the format users already write, as-is:
///
/// ```json
/// { "routing_rules": {
///     "simple_queries": { "primary": "gpt-3.5-turbo", "fallback": "claude-haiku", "max_cost_per_1k": 0.002 } } }
/// ```
///
/// `fallback` may be a string or an ordered array (`fallbacks` is accepted too). Prices are read
/// from the JSON text into exact `Decimal`s. See `examples/catalog.json` for every field.
public struct CatalogDocument: Sendable, Hashable {
    /// The `models` section, or nil when the document has none (rules then name existing models).
    public var models: [ModelSpec]?
    /// The `routing_rules` section, or nil when the document has none.
    public var rules: [RouteRule]?
    /// Things worth telling the operator that do not stop the import.
    public var warnings: [CatalogProblem]

    /// The document's top-level sections.
    static let sections = ["models", "routing_rules"]

    /// A document with these sections (nil: the section is absent).
    public init(models: [ModelSpec]? = nil, rules: [RouteRule]? = nil, warnings: [CatalogProblem] = []) {
        self.models = models
        self.rules = rules
        self.warnings = warnings
    }

    /// The outcome of validating a document: the document when there is nothing to fix.
    public struct Validation: Sendable {
        /// The document, or nil when `problems` is not empty.
        public var document: CatalogDocument?
        /// Every problem found, in document order.
        public var problems: [CatalogProblem]
        /// Things worth telling the operator that do not stop the import.
        public var warnings: [CatalogProblem]
    }

    /// Parses and validates a document, collecting every problem.
    /// - Parameters:
    ///   - data: the file's bytes.
    ///   - knownModels: models that exist besides the document's own (those in the database, when
    ///     they will still exist after the import); rules may name these.
    ///   - replacedModels: models in the database that the document's "models" section replaces.
    public static func validate(
        _ data: Data, knownModels: Set<String> = [], replacedModels: Set<String> = []
    ) -> Validation {
        let root: JSONNode
        do {
            root = try JSONNode(parsing: data)
        } catch let error as QueueError {
            return Validation(
                document: nil, problems: [CatalogProblem(path: "", message: error.message, hint: error.hint)],
                warnings: [])
        } catch {
            return Validation(document: nil, problems: [CatalogProblem(path: "", message: "\(error)")], warnings: [])
        }
        var reader = CatalogReader()
        reader.replacedModels = replacedModels
        guard
            let sections = reader.members(
                root, at: "", allowed: sections, synonyms: ["rules": "routing_rules", "model_list": "models"])
        else {
            return Validation(document: nil, problems: reader.problems, warnings: [])
        }
        if sections.isEmpty && reader.problems.isEmpty {
            reader.problem(
                "", "the document has neither \"models\" nor \"routing_rules\"", hint: "add at least one of them")
        }
        let models = sections["models"].map { reader.models($0, at: "models") }
        let names = knownModels.union(reader.definedModelNames)
        let rules = sections["routing_rules"].map { reader.rules($0, at: "routing_rules", knownModels: names) }
        if reader.problems.isEmpty {
            return Validation(
                document: CatalogDocument(models: models, rules: rules, warnings: reader.warnings),
                problems: [], warnings: reader.warnings
            )
        }
        return Validation(document: nil, problems: reader.problems, warnings: reader.warnings)
    }

    /// Parses and validates a document.
    /// - Throws: `QueueError.invalidInput` listing every problem, one per line, each with its path.
    public init(parsing data: Data, knownModels: Set<String> = []) throws {
        let validation = Self.validate(data, knownModels: knownModels)
        guard let document = validation.document else {
            throw Self.error(listing: validation.problems, warnings: validation.warnings)
        }
        self = document
    }

    /// One error listing every problem, for a person to fix all of them in one pass, and the
    /// warnings the document would also get (they came only once the problems were fixed: a
    /// third import for a file with both).
    public static func error(listing problems: [CatalogProblem], warnings: [CatalogProblem] = []) -> QueueError {
        let count = problems.count == 1 ? "1 problem" : "\(problems.count) problems"
        var message = "the catalog document has \(count):\n" + problems.map { "  \($0)" }.joined(separator: "\n")
        if !warnings.isEmpty {
            message += "\nand \(warnings.count == 1 ? "1 warning" : "\(warnings.count) warnings") (taken as they are):\n"
                + warnings.map { "  \($0)" }.joined(separator: "\n")
        }
        return QueueError(
            .invalidInput, message, hint: "Fix every problem above and import again; nothing was changed.",
            details: [
                // Warnings as `models import --json` gives an accepted document's: one line each.
                "problems": .array(problems.map(\.json)), "warnings": .array(warnings.map { .string($0.description) }),
            ])
    }

    /// The catalog after importing this document into `existing`.
    public func applied(to existing: Catalog, mode: CatalogImportMode = .replace) -> Catalog {
        func merge<T>(_ current: [T], _ incoming: [T]?, name: KeyPath<T, String>) -> [T] {
            guard let incoming else { return current }
            if mode == .replace { return incoming }
            let replaced = Set(incoming.map { $0[keyPath: name] })
            return current.filter { !replaced.contains($0[keyPath: name]) } + incoming
        }
        return Catalog(
            models: merge(existing.models, models, name: \.name),
            rules: merge(existing.rules, rules, name: \.taskClass)
        )
    }

    /// Validates a document for importing into `existing`: rules may name the existing models that
    /// survive the import, and rules the import keeps from `existing` must not lose their models.
    public static func validate(_ data: Data, importingInto existing: Catalog, mode: CatalogImportMode) -> Validation {
        let hasModels = (try? JSONNode(parsing: data))?.members?.contains { $0.key == "models" } ?? false
        let replacing = hasModels && mode == .replace
        var validation = validate(
            data, knownModels: replacing ? [] : existing.modelNames, replacedModels: replacing ? existing.modelNames : [])
        guard let document = validation.document else { return validation }
        let fileRules = Set(document.rules?.map(\.taskClass) ?? [])
        let kept = document.applied(to: existing, mode: mode)
        let names = kept.modelNames
        var orphans: [CatalogProblem] = []
        for rule in kept.rules where !fileRules.contains(rule.taskClass) {
            for model in rule.models where !names.contains(model) {
                orphans.append(
                    CatalogProblem(
                        path: "models",
                        message:
                            "removes model \"\(model)\", which rule \"\(rule.taskClass)\" (in the database, not in "
                            + "this file) still names",
                        hint: "keep \"\(model)\" in the models section, add routing_rules for \"\(rule.taskClass)\", "
                            + "or import with --merge"
                    )
                )
            }
        }
        // A class goes to one rule, across the file and the rules the import keeps (the file
        // checks its own): with two, the router would follow one and the other would be dead.
        var servedBy: [String: String] = [:]
        for rule in kept.rules where !fileRules.contains(rule.taskClass) {
            for taskClass in [rule.taskClass] + rule.servedClasses { servedBy[taskClass] = rule.taskClass }
        }
        for rule in kept.rules where fileRules.contains(rule.taskClass) {
            for taskClass in [rule.taskClass] + rule.servedClasses {
                guard let other = servedBy[taskClass] else { continue }
                orphans.append(
                    CatalogProblem(
                        path: "routing_rules.\(rule.taskClass)",
                        message: "class \"\(taskClass)\" is already served by rule \"\(other)\" (in the database, "
                            + "not in this file)",
                        hint: "a class goes to one rule: remove it here, or give rule \"\(other)\" in this file "
                            + "without it"
                    )
                )
            }
        }
        if !orphans.isEmpty {
            validation.problems = orphans
            validation.document = nil
        }
        return validation
    }
}
