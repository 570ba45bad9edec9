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
    /// Disabling what a rule routes by is refused unless `force` (its last enabled model, or the
    /// last that reaches its quality floor): every job of that rule would then fail as unroutable
    /// (an import warns of it; a command typed to take out a misbehaving model should not fail a
    /// rule's whole queue by surprise).
    /// - Throws: `QueueError.invalidInput`, nothing written, for a name the catalog does not
    ///   have, or a rule left unable to route its jobs.
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
            let blended = try await Self.blendingFeedback(into: catalog, on: connection)
            if !enabled && !force {
                // Rules that routed their jobs before and would not after: every model disabled,
                // or none left that reaches the rule's quality floor (a review's code rule kept
                // an enabled model under its floor, and every job failed).
                let routed = Set(Self.unusableRules(
                    in: try await Self.blendingFeedback(into: existing, on: connection), routingOnly: true).map(\.path))
                let stranded = Self.unusableRules(in: blended, routingOnly: true).filter { !routed.contains($0.path) }
                guard stranded.isEmpty else {
                    let rules = stranded.map { $0.path.replacingOccurrences(of: "routing_rules.", with: "") }
                    let why = stranded.count == 1
                        ? stranded[0].message
                        : zip(rules, stranded).map { "\($0): \($1.message)" }.joined(separator: "; ")
                    throw QueueError(
                        .invalidInput,
                        "disabling " + names.joined(separator: ", ") + " would leave rule" + (rules.count == 1 ? " " : "s ")
                            + rules.joined(separator: ", ") + " unable to route "
                            + (rules.count == 1 ? "its" : "their") + " jobs, which would fail: \(why); nothing was changed",
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
                warnings: Self.unusableRules(in: blended))
        }
    }
}
