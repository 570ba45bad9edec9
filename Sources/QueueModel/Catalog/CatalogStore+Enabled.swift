import Foundation
import Postgres

extension CatalogStore {
    /// What `setEnabled` did.
    public struct EnabledOutcome: Sendable {
        /// The models whose `enabled` changed.
        public var changed: [String]
        /// The models that were so already.
        public var unchanged: [String]
        /// The catalog after the change.
        public var catalog: Catalog
        /// Rules that route nothing now, as an import warns of them (`unusableRules`).
        public var warnings: [CatalogProblem]
    }

    /// Takes models out of every plan, or puts them back (`dispatcher models disable|enable`):
    /// the import's `"enabled"` field, without editing and importing a document in the middle of
    /// an incident. Written as an import is: under its lock, only rows that differ, announced to
    /// the workers (`switchyard_catalog`), which reload.
    ///
    /// Disabling a rule's last enabled model is refused unless `force`: every job of that rule
    /// would then fail as unroutable (an import warns of it; a command typed to take out a
    /// misbehaving model should not fail a rule's whole queue by surprise).
    /// - Throws: `QueueError.invalidInput`, nothing written, for a name the catalog does not
    ///   have, or a rule left with no enabled model.
    public func setEnabled(_ names: [String], _ enabled: Bool, force: Bool = false) async throws -> EnabledOutcome {
        var seen: Set<String> = []
        let names = names.filter { seen.insert($0).inserted }
        return try await pool.withTransaction { connection in
            try await connection.query("SELECT FROM switchyard.locks WHERE name = 'catalog_import' FOR UPDATE")
            let existing = try await Self.load(on: connection)
            let unknown = names.filter { existing.model(named: $0) == nil }
            guard unknown.isEmpty else {
                throw QueueError(
                    .invalidInput,
                    "the catalog has no model " + unknown.map { "\"\($0)\"" }.joined(separator: ", ") + "; nothing was changed",
                    hint: existing.models.isEmpty
                        ? "The catalog is empty: import one first (dispatcher models import FILE)."
                        : "Its models: " + existing.models.map(\.name).joined(separator: ", ") + ".")
            }
            let named = Set(names)
            let catalog = Catalog(
                models: existing.models.map { model in
                    var model = model
                    if named.contains(model.name) { model.enabled = enabled }
                    return model
                },
                rules: existing.rules)
            if !enabled && !force {
                let stranded = catalog.rules.filter { rule in
                    let models = ([rule.primary] + rule.fallbacks).compactMap { catalog.model(named: $0) }
                    let before = models.compactMap { existing.model(named: $0.name) }
                    return !models.contains(where: \.enabled) && before.contains(where: \.enabled)
                }
                guard stranded.isEmpty else {
                    throw QueueError(
                        .invalidInput,
                        "disabling " + names.joined(separator: ", ") + " would leave rule"
                            + (stranded.count == 1 ? " " : "s ") + stranded.map(\.taskClass).joined(separator: ", ")
                            + " with no enabled model: every job of "
                            + (stranded.count == 1 ? "it" : "them") + " would fail as unroutable; nothing was changed",
                        hint: "Add or enable another model in the rule first, or pass --force to disable it anyway.")
                }
            }
            let changes = CatalogChanges(from: existing, to: catalog)
            if !changes.isEmpty { try await Self.write(changes, of: catalog, on: connection) }
            let changed = Set(changes.changedModels.map(\.name))
            return EnabledOutcome(
                changed: names.filter { changed.contains($0) },
                unchanged: names.filter { !changed.contains($0) },
                catalog: catalog,
                warnings: Self.unusableRules(in: try await Self.blendingFeedback(into: catalog, on: connection)))
        }
    }
}
