import Foundation
import Postgres

/// The catalog's SQL: loads models and rules from `switchyard.models` and `switchyard.routes`,
/// and imports a document into them in one transaction.
///
/// Every change to either table sends a NOTIFY on `switchyard_catalog` (a trigger from
/// `sql/0003_catalog.sql`, so hand-written SQL announces itself too); workers listen there and
/// reload without a restart.
public struct CatalogStore: Sendable {
    /// The channel a catalog change is announced on; the payload names the table (`models`, `routes`).
    public static let channel = "switchyard_catalog"

    /// The pool every statement runs on.
    public let pool: PostgresPool

    /// A store over a pool (one connection per call; an import holds one for its transaction).
    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// What an import did (or would do, for a dry run).
    public struct ImportOutcome: Sendable {
        /// The differences between the catalog before and after.
        public var changes: CatalogChanges
        /// The catalog after the import.
        public var catalog: Catalog
        /// Things worth telling the operator that did not stop the import.
        public var warnings: [CatalogProblem]
    }

    // MARK: Loading

    /// The catalog as routing uses it: as stored now, with capability scores blended with quality
    /// feedback (`FeedbackBlend`; the stored rows are not changed).
    public func load() async throws -> Catalog {
        try await pool.withConnection { connection in
            try await Self.blendingFeedback(into: try await Self.load(on: connection), on: connection)
        }
    }

    /// The catalog as stored, without feedback: what `models export` writes, so that importing
    /// it back changes nothing.
    public func loadStored() async throws -> Catalog {
        try await pool.withConnection { try await Self.load(on: $0) }
    }

    static func load(on connection: PostgresConnection) async throws -> Catalog {
        let modelRows = try await connection.query(
            """
            SELECT name, provider, base_url, api_key_env, upstream_model, tier, price_per_1k_input,
                   price_per_1k_output, price_per_1k_cached_input, price_per_1k_cache_write,
                   price_windows::text AS price_windows, context_window,
                   capabilities::text AS capabilities, weight, max_concurrency, requests_per_minute,
                   tokens_per_minute, enabled, settings::text AS settings,
                   array_to_json(unsupported_features)::text AS unsupported_features
            FROM switchyard.models ORDER BY name
            """
        )
        let ruleRows = try await connection.query(
            """
            SELECT task_class, primary_model, array_to_json(fallbacks)::text AS fallbacks, strategy,
                   max_cost_per_1k, max_latency_ms, quality_floor, settings::text AS settings
            FROM switchyard.routes ORDER BY task_class
            """
        )
        return Catalog(
            models: try modelRows.map { try Self.named("model", $0, Self.model(row:)) },
            rules: try ruleRows.map { try Self.named("rule", $0, Self.rule(row:)) })
    }

    /// Reads a row, or says which model or rule could not be read (a number past ±1.8e308 that
    /// SQL wrote into its settings stopped every load, the worker saying only "number out of range").
    private static func named<T>(_ kind: String, _ row: PostgresRow, _ read: (PostgresRow) throws -> T) throws -> T {
        do {
            return try read(row)
        } catch {
            let name = (try? row[0].decode(String.self)) ?? "?"
            throw QueueError(
                .database, "\(kind) \(name) as stored cannot be read: \(error)",
                hint: "import the catalog again, or correct the row with SQL (switchyard.\(kind == "model" ? "models" : "routes"))")
        }
    }

    // MARK: Importing

    /// Validates a document against the stored catalog and imports it, all in one transaction.
    ///
    /// Models and rules in the file are inserted or updated (only those that differ are written).
    /// With `.replace` (the default), a section the file has is the whole truth: models or rules it
    /// does not list are removed; a section it lacks is left alone. With `.merge` nothing is removed.
    /// An empty section that would remove every model or every rule is refused unless
    /// `allowEmpty`: `{"models": {}, "routing_rules": {}}` emptied a review's catalog with exit 0.
    /// - Parameters:
    ///   - data: the document's JSON text.
    ///   - dryRun: validate and compute the changes, write nothing.
    ///   - allowEmpty: let an empty section remove everything of its kind.
    /// - Returns: what changed, the resulting catalog, and warnings.
    /// - Throws: `QueueError.invalidInput` listing every problem (nothing is written).
    public func importDocument(
        _ data: Data, mode: CatalogImportMode = .replace, dryRun: Bool = false, allowEmpty: Bool = false
    ) async throws -> ImportOutcome {
        try await pool.withTransaction { connection in
            // One import at a time, so two operators importing at once cannot interleave their
            // diffs: a row only the schema's owner may lock (an advisory lock any role could hold, sql/0083).
            try await connection.query("SELECT FROM switchyard.locks WHERE name = 'catalog_import' FOR UPDATE")
            let existing = try await Self.load(on: connection)
            // Checked first: `{"models": {}}` alone was refused for each rule still naming a model
            // it would remove (24 lines), not for being empty.
            if !allowEmpty && mode == .replace, let members = (try? JSONNode(parsing: data))?.members {
                func isEmpty(_ names: Set<String>) -> Bool {
                    members.contains { member in
                        guard names.contains(member.key) else { return false }
                        if case .object(let items) = member.value { return items.isEmpty }
                        if case .array(let items) = member.value { return items.isEmpty }
                        return false
                    }
                }
                // The real names only: an empty `rules` or `model_list` (LiteLLM's) is told its
                // name first, not that it would empty the catalog (and to pass --allow-empty).
                try Self.refuseEmptying(existing, models: isEmpty(["models"]), rules: isEmpty(["routing_rules"]))
            }
            let validation = CatalogDocument.validate(data, importingInto: existing, mode: mode)
            guard let document = validation.document else {
                // With the rest, as the docs promise "every problem at once" (the zones were
                // checked only once all else passed: a file's GMT+8 came up on its second import).
                // A zone the document check refused already ("must be an IANA zone") is not told
                // a second time that Postgres does not know it.
                let zones = ((try? await Self.timeZoneProblems(at: Self.zonePaths(inDocument: data), on: connection)) ?? [])
                    .filter { zone in !validation.problems.contains { $0.path == zone.path } }
                throw CatalogDocument.error(listing: validation.problems + zones, warnings: validation.warnings)
            }
            let catalog = document.applied(to: existing, mode: mode)
            let changes = CatalogChanges(from: existing, to: catalog)
            if !allowEmpty {
                try Self.refuseEmptying(existing, models: catalog.models.isEmpty, rules: catalog.rules.isEmpty)
            }
            let zoneProblems = try await Self.timeZoneProblems(
                in: catalog.models.filter { changes.modelsToWrite.contains($0.name) }, on: connection)
            guard zoneProblems.isEmpty else { throw CatalogDocument.error(listing: zoneProblems, warnings: validation.warnings) }
            if !dryRun && !changes.isEmpty { try await Self.write(changes, of: catalog, on: connection) }
            let unserved = RuleMatcher(catalog: catalog).unservedClasses()
            // Judged as the workers will route: with the ratings blended in (a review's model the
            // ratings lifted past a floor was warned of as under it).
            var warnings = validation.warnings
                + Self.unusableRules(in: try await Self.blendingFeedback(into: catalog, on: connection))
            if !unserved.isEmpty {
                warnings.append(
                    CatalogProblem(
                        path: "routing_rules",
                        message: "no rule serves the classes \(unserved.joined(separator: ", ")) and there is no "
                            + "\"\(RuleMatcher.defaultRule)\" rule: jobs of those classes cannot be routed",
                        hint: "add a rule named \"\(RuleMatcher.defaultRule)\", or list the classes in a rule's "
                            + "\"classes\""
                    )
                )
            }
            return ImportOutcome(changes: changes, catalog: catalog, warnings: warnings)
        }
    }

    /// Refuses an import that would leave no models (or no rules) in a catalog that has some.
    private static func refuseEmptying(_ existing: Catalog, models: Bool, rules: Bool) throws {
        let emptied = [
            ("models", "models", existing.models.count, models), ("routing_rules", "rules", existing.rules.count, rules),
        ].filter { $0.2 > 0 && $0.3 }
        guard emptied.isEmpty else {
            throw CatalogDocument.error(
                listing: emptied.map { section, kind, count, _ in
                    CatalogProblem(
                        path: section,
                        message: "is empty, so importing it would remove all \(count) \(kind) of the catalog",
                        hint: "list the \(kind) to keep (dispatcher models export shows them), import with "
                            + "--merge to remove nothing, or pass --allow-empty to empty it on purpose")
                })
        }
    }

    /// Rules that route nothing as imported: every model disabled (each job fails `unroutable`),
    /// no enabled model reaching the rule's quality floor, or, under `hash`, every enabled model of
    /// weight 0 (no model owns a key, so nothing is pinned). Warnings, as the import takes them: a
    /// model may be disabled for a while on purpose.
    /// - Parameter routingOnly: only the rules whose jobs cannot be routed at all (not a `hash`
    ///   rule that pins nothing).
    static func unusableRules(in catalog: Catalog, routingOnly: Bool = false) -> [CatalogProblem] {
        catalog.rules.compactMap { rule in
            let models = ([rule.primary] + rule.fallbacks).compactMap { catalog.model(named: $0) }
            let enabled = models.filter(\.enabled)
            let path = "routing_rules.\(rule.taskClass)"
            if enabled.isEmpty {
                return CatalogProblem(
                    path: path,
                    message: "every model of the rule is disabled (\(models.map(\.name).joined(separator: ", "))): its jobs "
                        + "cannot be routed",
                    hint: "enable one of them (\"enabled\": true), or add an enabled model to the rule")
            }
            // For a class it may be scored by, no enabled model reaches the floor (with the ratings
            // blended in, as the workers score them): an on-call walkthrough's floor of 95 imported
            // without a word, and every job of the rule failed until the job-failure alert said
            // why; a review's rule of two classes failed every job of one. (The `default` rule
            // takes any class: not judged.)
            if let floor = rule.qualityFloor, floor > 0 {
                let scoring = RuleMatcher.scoringClasses(of: rule, in: catalog).sorted { $0.rawValue < $1.rawValue }
                var short: [(taskClass: TaskClass, best: (model: String, capability: String, score: Int)?)] = []
                for taskClass in scoring {
                    let scores = enabled.compactMap { model in taskClass.scoredCapability(of: model).map { (model.name, $0) } }
                    guard scores.allSatisfy({ $0.1.score < floor }) else { continue }
                    short.append((taskClass, scores.max { $0.1.score < $1.1.score }.map { ($0.0, $0.1.name, $0.1.score) }))
                }
                if let first = short.first {
                    let which = short.count == scoring.count
                        ? "" : " for its \(short.map(\.taskClass.rawValue).joined(separator: ", ")) jobs"
                    return CatalogProblem(
                        path: path,
                        message: "no enabled model of the rule reaches its quality_floor \(floor)\(which) ("
                            + (first.best.map { "the best: \($0.model), \($0.capability) \($0.score)" }
                                ?? "none has a score for it")
                            + "): \(which.isEmpty ? "its" : "those") jobs cannot be routed unless ratings raise one",
                        hint: "lower the quality_floor, or add a model that reaches it (dispatcher route --explain "
                            + "shows the scores with the ratings blended in)")
                }
            }
            if !routingOnly, rule.strategy == .hash, enabled.allSatisfy({ $0.weight == 0 }) {
                return CatalogProblem(
                    path: path,
                    message: "every enabled model of this hash rule has weight 0, so none owns a key: jobs are not "
                        + "pinned to a model by their affinity key",
                    hint: "give the models weights above 0 (a model's share of the keys)")
            }
            return nil
        }
    }

    /// Price windows whose `time_zone` Postgres does not know, or reads differently from this
    /// program: the claim's gate reads a window in Postgres, the worker's planner in Foundation,
    /// and the two must agree on when it opens. Foundation takes names Postgres refuses
    /// ("GMT+0800") and reads others differently: abbreviations ("IST" is India's for one, Israel's
    /// for the other) and POSIX offsets ("GMT+8" is UTC+8 for one, UTC-8 for the other). So each
    /// zone must be one of Postgres's (`pg_timezone_names`) and have the same UTC offset in both,
    /// every six hours over the next 400 days.
    static func timeZoneProblems(in models: [ModelSpec], on connection: PostgresConnection) async throws
        -> [CatalogProblem]
    {
        try await timeZoneProblems(at: zonePaths(models.map { ($0.name, $0.priceWindows) }), on: connection)
    }

    /// The time zones an import document's price windows name, with where, read from the document
    /// as written (for a document whose other problems keep it from being read as a catalog).
    static func zonePaths(inDocument data: Data) -> [String: [String]] {
        guard let document = try? JSONValue(parsing: data), let models = document["models"]?.objectValue else { return [:] }
        return zonePaths(models.map { ($0.key, $0.value["price_windows"] ?? []) })
    }

    /// Each time zone the models' price windows name, with the paths that name it.
    private static func zonePaths(_ models: [(name: String, windows: JSONValue)]) -> [String: [String]] {
        var paths: [String: [String]] = [:]
        for (name, windows) in models {
            for (index, window) in (windows.arrayValue ?? []).enumerated() {
                guard let zone = window["time_zone"]?.stringValue else { continue }
                paths[zone, default: []].append("models.\(name).price_windows[\(index)].time_zone")
            }
        }
        return paths
    }

    /// The problems of each named zone (see `timeZoneProblems(in:on:)`), at its paths.
    static func timeZoneProblems(at paths: [String: [String]], on connection: PostgresConnection) async throws
        -> [CatalogProblem]
    {
        guard !paths.isEmpty else { return [] }
        let start = (Date().timeIntervalSince1970 / 3600).rounded(.down) * 3600
        let instants = (0..<1600).map { Date(timeIntervalSince1970: start + Double($0) * 21_600) }
        let rows = try await connection.query(
            """
            SELECT z.name, n.name IS NOT NULL AS known, i.ordinal::integer AS instant,
                   CASE WHEN n.name IS NOT NULL
                        THEN extract(epoch FROM (i.t AT TIME ZONE z.name) - (i.t AT TIME ZONE 'UTC'))::integer END
                       AS offset_seconds
            FROM unnest($1::text[]) AS z(name)
            LEFT JOIN (SELECT DISTINCT name FROM pg_catalog.pg_timezone_names) n ON n.name = z.name
            CROSS JOIN unnest($2::timestamptz[]) WITH ORDINALITY AS i(t, ordinal)
            ORDER BY z.name, i.ordinal
            """, [Array(paths.keys), instants])
        var problems: [String: (message: String, hint: String)] = [:]
        let hint = "use an IANA region name such as \"Asia/Shanghai\" or \"Europe/Paris\" "
            + "(SELECT name FROM pg_timezone_names lists them)"
        for row in rows {
            let zone = try row.decode("name", as: String.self)
            guard problems[zone] == nil else { continue }
            guard try row.decode("known", as: Bool.self) else {
                problems[zone] = ("\"\(zone)\" is not an IANA time zone Postgres knows", hint)
                continue
            }
            let instant = instants[try row.decode("instant", as: Int.self) - 1]
            let postgres = try row.decode("offset_seconds", as: Int.self)
            let foundation = TimeZone(identifier: zone)?.secondsFromGMT(for: instant)
            if foundation != postgres {
                problems[zone] = (
                    "\"\(zone)\" is read as UTC\(Self.offset(postgres)) by Postgres but as "
                        + "UTC\(foundation.map(Self.offset) ?? "?") by this program at \(instant.postgresText)",
                    hint
                )
            }
        }
        return paths.keys.sorted().flatMap { zone in
            problems[zone].map { problem in
                paths[zone, default: []].map { CatalogProblem(path: $0, message: problem.message, hint: problem.hint) }
            } ?? []
        }
    }

    /// "+08:00", "-03:30".
    private static func offset(_ seconds: Int) -> String {
        let minutes = abs(seconds) / 60
        return (seconds < 0 ? "-" : "+") + String(format: "%02d:%02d", minutes / 60, minutes % 60)
    }

    /// Writes a change set: rules that go are deleted first, models that go last, so no moment of
    /// the transaction has a rule naming a missing model (not that anyone could see it).
    static func write(_ changes: CatalogChanges, of catalog: Catalog, on connection: PostgresConnection) async throws {
        if !changes.removedRules.isEmpty {
            try await connection.query(
                "DELETE FROM switchyard.routes WHERE task_class = ANY($1::text[])", [changes.removedRules])
        }
        let modelsToWrite = changes.modelsToWrite
        for model in catalog.models where modelsToWrite.contains(model.name) {
            try await connection.query(upsertModel, try binds(for: model))
        }
        let rulesToWrite = changes.rulesToWrite
        for rule in catalog.rules where rulesToWrite.contains(rule.taskClass) {
            try await connection.query(
                upsertRule,
                [
                    rule.taskClass, rule.primary, rule.fallbacks, rule.strategy.rawValue, rule.maxCostPer1K,
                    rule.maxLatencyMS, rule.qualityFloor, PostgresJSON(text: rule.settings.jsonText),
                ]
            )
        }
        if !changes.removedModels.isEmpty {
            try await connection.query(
                "DELETE FROM switchyard.models WHERE name = ANY($1::text[])", [changes.removedModels])
            // Its breaker goes with it: a soak's model removed from the catalog stayed in status
            // (and its breaker state in model_health) for good.
            try await connection.query(
                "DELETE FROM switchyard.model_health WHERE model = ANY($1::text[])", [changes.removedModels])
        }
    }

    private static let upsertModel = """
        INSERT INTO switchyard.models (
            name, provider, base_url, api_key_env, upstream_model, tier, price_per_1k_input, price_per_1k_output,
            price_windows, context_window, capabilities, weight, max_concurrency, requests_per_minute,
            tokens_per_minute, enabled, settings, price_per_1k_cached_input, price_per_1k_cache_write,
            unsupported_features, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8::numeric, $9::jsonb, $10, $11::jsonb, $12, $13, $14, $15, $16,
                $17::jsonb, $18::numeric, $19::numeric, $20::text[], now())
        ON CONFLICT (name) DO UPDATE SET
            provider = EXCLUDED.provider, base_url = EXCLUDED.base_url, api_key_env = EXCLUDED.api_key_env,
            upstream_model = EXCLUDED.upstream_model, tier = EXCLUDED.tier,
            price_per_1k_input = EXCLUDED.price_per_1k_input, price_per_1k_output = EXCLUDED.price_per_1k_output,
            price_per_1k_cached_input = EXCLUDED.price_per_1k_cached_input,
            price_per_1k_cache_write = EXCLUDED.price_per_1k_cache_write,
            price_windows = EXCLUDED.price_windows, context_window = EXCLUDED.context_window,
            capabilities = EXCLUDED.capabilities, weight = EXCLUDED.weight,
            max_concurrency = EXCLUDED.max_concurrency, requests_per_minute = EXCLUDED.requests_per_minute,
            tokens_per_minute = EXCLUDED.tokens_per_minute, enabled = EXCLUDED.enabled,
            settings = EXCLUDED.settings, unsupported_features = EXCLUDED.unsupported_features, updated_at = now()
        """

    private static let upsertRule = """
        INSERT INTO switchyard.routes (
            task_class, primary_model, fallbacks, strategy, max_cost_per_1k, max_latency_ms, quality_floor, settings,
            updated_at)
        VALUES ($1, $2, $3::text[], $4, $5::numeric, $6, $7, $8::jsonb, now())
        ON CONFLICT (task_class) DO UPDATE SET
            primary_model = EXCLUDED.primary_model, fallbacks = EXCLUDED.fallbacks, strategy = EXCLUDED.strategy,
            max_cost_per_1k = EXCLUDED.max_cost_per_1k, max_latency_ms = EXCLUDED.max_latency_ms,
            quality_floor = EXCLUDED.quality_floor, settings = EXCLUDED.settings, updated_at = now()
        """

    private static func binds(for model: ModelSpec) throws -> [(any PostgresEncodable)?] {
        let capabilities = JSONValue.object(model.capabilities.mapValues { .number(Double($0)) })
        return [
            model.name, model.provider.rawValue, model.baseURL, model.apiKeyEnv, model.upstreamModel, model.tier,
            model.pricePer1KInput, model.pricePer1KOutput, PostgresJSON(text: model.priceWindows.jsonText),
            model.contextWindow, PostgresJSON(text: capabilities.jsonText), model.weight, model.maxConcurrency,
            model.requestsPerMinute, model.tokensPerMinute, model.enabled, PostgresJSON(text: model.settings.jsonText),
            model.pricePer1KCachedInput, model.pricePer1KCacheWrite, model.unsupported.sorted().map(\.rawValue),
        ]
    }

    // MARK: Rows

    static func model(row: PostgresRow) throws -> ModelSpec {
        let name = try row.decode("name", as: String.self)
        let providerText = try row.decode("provider", as: String.self)
        guard let provider = ProviderKind(rawValue: providerText) else {
            throw QueueError(
                .database, "model \(name) has unknown provider \(providerText)", hint: "re-import the catalog")
        }
        let scores = try JSONValue(parsing: try row.decode("capabilities", as: String.self)).objectValue ?? [:]
        return ModelSpec(
            name: name, provider: provider, baseURL: try row.decode("base_url", as: String?.self),
            apiKeyEnv: try row.decode("api_key_env", as: String?.self),
            upstreamModel: try row.decode("upstream_model", as: String?.self), tier: try row.decode("tier"),
            pricePer1KInput: try row.decode("price_per_1k_input"),
            pricePer1KOutput: try row.decode("price_per_1k_output"),
            pricePer1KCachedInput: try row.decode("price_per_1k_cached_input", as: Decimal?.self),
            pricePer1KCacheWrite: try row.decode("price_per_1k_cache_write", as: Decimal?.self),
            priceWindows: try JSONValue(parsing: try row.decode("price_windows", as: String.self)),
            contextWindow: try row.decode("context_window"), capabilities: scores.compactMapValues(\.intValue),
            weight: try row.decode("weight"), maxConcurrency: try row.decode("max_concurrency", as: Int?.self),
            requestsPerMinute: try row.decode("requests_per_minute", as: Int?.self),
            tokensPerMinute: try row.decode("tokens_per_minute", as: Int?.self), enabled: try row.decode("enabled"),
            settings: try JSONValue(parsing: try row.decode("settings", as: String.self)),
            // A name this binary does not know (stored by a newer one) is left out: the model is
            // tried, and refuses the request at the call if it cannot take it.
            unsupported: Set(
                (try JSONValue(parsing: try row.decode("unsupported_features", as: String.self)).arrayValue ?? [])
                    .compactMap { $0.stringValue.flatMap(ModelFeature.init(rawValue:)) })
        )
    }

    static func rule(row: PostgresRow) throws -> RouteRule {
        let name = try row.decode("task_class", as: String.self)
        let strategyText = try row.decode("strategy", as: String.self)
        guard let strategy = RoutingStrategy(rawValue: strategyText) else {
            throw QueueError(
                .database, "rule \(name) has unknown strategy \(strategyText)", hint: "re-import the catalog")
        }
        let fallbacks = try JSONValue(parsing: try row.decode("fallbacks", as: String.self)).arrayValue ?? []
        return RouteRule(
            taskClass: name, primary: try row.decode("primary_model"), fallbacks: fallbacks.compactMap(\.stringValue),
            strategy: strategy, maxCostPer1K: try row.decode("max_cost_per_1k", as: Decimal?.self),
            maxLatencyMS: try row.decode("max_latency_ms", as: Int?.self),
            qualityFloor: try row.decode("quality_floor", as: Int?.self),
            settings: try JSONValue(parsing: try row.decode("settings", as: String.self))
        )
    }
}
