import Foundation
import Postgres
import QueueModel
import Testing

@Suite("Catalog store against a real server")
struct CatalogStoreTests {
    static var exampleURL: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appending(path: "examples/catalog.json")
    }

    static var example: Data { FileManager.default.contents(atPath: exampleURL.path) ?? Data() }

    @Test("an import round-trips exactly: prices to 10 places, JSON settings, rule options")
    func roundTrip() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            let outcome = try await store.importDocument(Self.example)
            #expect(outcome.changes.addedModels.count == 12)
            #expect(
                outcome.changes.addedRules == [
                    "code", "complex_reasoning", "creative", "default", "long_context", "multilingual",
                    "simple_queries",
                ])
            let loaded = try await store.load()
            #expect(loaded == (try CatalogDocument(parsing: Self.example).applied(to: .empty)))
            #expect(loaded.model(named: "gpt-4o-mini")?.pricePer1KInput == Decimal(string: "0.00015"))
            #expect(loaded.rule(named: "default")?.strategyWithoutAffinity == .leastBusy)

            let fine =
                #"{"models": {"fine": {"provider": "simulated", "price_per_1k_input": 0.0000000001, "price_per_1k_output": 1234.5678901234}}}"#
            _ = try await store.importDocument(Data(fine.utf8), mode: .merge)
            let stored = try await store.load().model(named: "fine")
            #expect(stored?.pricePer1KInput == Decimal(string: "0.0000000001"))
            #expect(stored?.pricePer1KOutput == Decimal(string: "1234.5678901234"))

            // The same file again changes nothing and writes nothing.
            let again = try await store.importDocument(Self.example, mode: .merge)
            #expect(again.changes.isEmpty)
            #expect(again.changes.rendered() == "no changes: the catalog already matches the file")
        }
    }

    @Test("an exported catalog imports back unchanged, into the same database or an empty one")
    func exportRoundTrip() async throws {
        let extra = #"""
            {"models": {
               "fine": {"provider": "simulated", "price_per_1k_input": 0.0000000001, "price_per_1k_output": 1234.5678901234,
                        "enabled": false, "settings": {"mode": "instant"}, "supports": {"tools": false, "images": false},
                        "price_windows": [{"days": ["sat", "sun"], "start": "22:00", "end": "06:00",
                                           "time_zone": "Europe/Paris", "input_multiplier": 0.5, "output_multiplier": 2}]}},
             "routing_rules": {"fine": {"primary": "fine", "classes": ["tiny"], "description": "the fine one",
                                        "settings": {"background_max_cost_per_1k": 0.0001}}}}
            """#
        let exported = try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(Self.example)
            _ = try await store.importDocument(Data(extra.utf8), mode: .merge)
            let catalog = try await store.load()
            let document = catalog.document.jsonText
            let again = try await store.importDocument(Data(document.utf8))
            #expect(again.changes.isEmpty, "\(again.changes.rendered())")
            return (catalog, document)
        }
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(Data(exported.1.utf8))
            #expect(try await store.load() == exported.0)
        }
    }

    @Test("the change summary names added, changed (with fields) and removed models and rules")
    func changeSummary() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(Data(Self.small(price: "0.001", fallbacks: #"["b"]"#, extra: true).utf8))
            try await pool.query("INSERT INTO switchyard.model_health (model, state) VALUES ('extra', 'open'), ('a', 'open')")
            let outcome = try await store.importDocument(
                Data(Self.small(price: "0.002", fallbacks: #"["c", "b"]"#, extra: false).utf8))
            let changes = outcome.changes
            #expect(changes.addedModels == ["c"])
            #expect(changes.changedModels == [.init(name: "a", fields: ["tier", "price_per_1k_input"])])
            #expect(changes.removedModels == ["extra"])
            #expect(changes.addedRules.isEmpty)
            #expect(changes.changedRules == [.init(name: "r", fields: ["fallbacks", "strategy"])])
            #expect(changes.removedRules == ["extra_rule"])
            #expect(
                changes.rendered().split(separator: "\n") == [
                    "+ model c", "~ model a: tier, price_per_1k_input", "- model extra",
                    "~ rule r: fallbacks, strategy",
                    "- rule extra_rule", "models: 1 added, 1 changed, 1 removed; rules: 0 added, 1 changed, 1 removed",
                ])
            #expect(try await store.load().models.map(\.name) == ["a", "b", "c"])
            // A removed model's breaker goes with it (a soak's stayed in status for good); the others stay.
            #expect(try await pool.query("SELECT string_agg(model, ',' ORDER BY model) FROM switchyard.model_health")
                .scalar(String.self) == "a")
        }
    }

    @Test("merge removes nothing; a rules-only file leaves the models alone; dry runs write nothing")
    func modes() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(Data(Self.small(price: "0.001", fallbacks: #"["b"]"#, extra: true).utf8))
            let merged = try await store.importDocument(
                Data(#"{"models": {"z": {"provider": "simulated"}}}"#.utf8), mode: .merge
            )
            #expect(merged.changes.addedModels == ["z"] && merged.changes.removedModels.isEmpty)

            let seedRules = #"{"routing_rules": {"r": {"primary": "a", "fallback": "z"}}}"#
            let rulesOnly = try await store.importDocument(Data(seedRules.utf8))
            #expect(rulesOnly.changes.removedModels.isEmpty)
            #expect(rulesOnly.changes.removedRules == ["extra_rule"])

            let dry = try await store.importDocument(
                Data(#"{"models": {"a": {"provider": "simulated"}, "z": {"provider": "simulated"}}}"#.utf8),
                dryRun: true)
            #expect(dry.changes.removedModels == ["b", "extra"])
            #expect(try await store.load().models.count == 4)
        }
    }

    /// A review emptied its catalog by accident with exit 0: `{"models": {}, "routing_rules": {}}`.
    @Test("an empty section that would remove every model or rule is refused, naming the count, unless allowed")
    func emptySections() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(Data(Self.small(price: "0.001", fallbacks: #"["b"]"#, extra: true).utf8))
            let before = try await store.load()
            let empty = Data(#"{"models": {}, "routing_rules": {}}"#.utf8)
            let error = try await #require(throws: QueueError.self) { try await store.importDocument(empty) }
            #expect(error.message.contains("models: is empty, so importing it would remove all \(before.models.count) models"), "\(error)")
            #expect(error.message.contains("routing_rules: is empty, so importing it would remove all \(before.rules.count) rules"), "\(error)")
            #expect(try await store.load() == before)
            let rulesEmpty = try await #require(throws: QueueError.self) {
                try await store.importDocument(Data(#"{"routing_rules": {}}"#.utf8), dryRun: true)
            }
            #expect(rulesEmpty.message.contains("routing_rules: is empty"))
            // LiteLLM's name for the section, empty: told its name, not to pass --allow-empty.
            let misnamed = try await #require(throws: QueueError.self) {
                try await store.importDocument(Data(#"{"rules": {}}"#.utf8), dryRun: true)
            }
            #expect(misnamed.message.contains(#"rules: unknown field — write "routing_rules" instead"#), "\(misnamed)")
            #expect(!misnamed.message.contains("allow-empty"), "\(misnamed)")
            // Said first, alone: not as each rule that still names a model it would remove.
            let modelsEmpty = try await #require(throws: QueueError.self) {
                try await store.importDocument(Data(#"{"models": {}}"#.utf8))
            }
            #expect(modelsEmpty.message.contains("models: is empty, so importing it would remove all"), "\(modelsEmpty)")
            #expect(!modelsEmpty.message.contains("still names"), "\(modelsEmpty)")

            let emptied = try await store.importDocument(empty, allowEmpty: true)
            #expect(emptied.catalog.models.isEmpty && emptied.catalog.rules.isEmpty)
            // Nothing to remove: an empty section into an empty catalog is no change, not a refusal.
            #expect(try await store.importDocument(empty).changes.isEmpty)
        }
    }

    /// A review imported rules that could route nothing with no word from import.
    @Test("import warns of a rule whose models are all disabled, under its quality floor, or all of weight 0 under hash")
    func unusableRules() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let document = """
                {"models": {"a": {"provider": "simulated", "enabled": false}, "b": {"provider": "simulated", "enabled": false},
                            "c": {"provider": "simulated", "weight": 0}, "d": {"provider": "simulated", "weight": 0},
                            "e": {"provider": "simulated"}},
                 "routing_rules": {"default": {"primary": "e"}, "off": {"primary": "a", "fallback": "b"},
                                   "flat": {"primary": "c", "fallback": ["d", "a"], "strategy": "hash"},
                                   "creative": {"primary": "f", "fallback": ["g"], "quality_floor": 95},
                                   "complex_reasoning": {"primary": "f", "quality_floor": 60},
                                   "translate": {"primary": "f", "classes": ["multilingual", "factual"], "quality_floor": 99}}}
                """.replacingOccurrences(
                    of: #""e": {"provider": "simulated"}}"#,
                    with: #""e": {"provider": "simulated"}, "f": {"provider": "simulated", "capabilities": {"creative": 80, "reasoning": 70}},"#
                        + #" "g": {"provider": "simulated", "capabilities": {"creative": 90}}}"#)
            let outcome = try await CatalogStore(pool: pool).importDocument(Data(document.utf8), dryRun: true)
            let warnings = outcome.warnings.map(\.description)
            #expect(warnings.contains { $0.hasPrefix("routing_rules.off: every model of the rule is disabled (a, b)") }, "\(warnings)")
            #expect(warnings.contains { $0.hasPrefix("routing_rules.flat: every enabled model of this hash rule has weight 0") }, "\(warnings)")
            // An on-call walkthrough's floor of 95 imported without a word; a floor a model meets is fine.
            #expect(warnings.contains {
                $0.hasPrefix("routing_rules.creative: no enabled model of the rule reaches its quality_floor 95 (the best: g, creative 90)")
            }, "\(warnings)")
            // Scored by several classes, none of which any model reaches (a review's rule of two went unwarned).
            #expect(warnings.contains {
                $0.hasPrefix("routing_rules.translate: no enabled model of the rule reaches its quality_floor 99")
            }, "\(warnings)")
            #expect(warnings.count == 4, "\(warnings)")
            // One class of two out of reach: those jobs, said so (a review's went unwarned).
            let split = """
                {"models": {"small": {"provider": "simulated", "capabilities": {"code": 90, "creative": 60}}},
                 "routing_rules": {"default": {"primary": "small"},
                                   "coding": {"primary": "small", "classes": ["code", "creative"], "quality_floor": 85}}}
                """
            let half = try await CatalogStore(pool: pool).importDocument(Data(split.utf8), dryRun: true).warnings
            #expect(half.map(\.description).contains {
                $0.hasPrefix("routing_rules.coding: no enabled model of the rule reaches its quality_floor 85 for its "
                    + "creative jobs (the best: small, creative 60): those jobs cannot be routed")
            }, "\(half)")
            // Ratings lift g to the floor, as the workers blend them: no warning (a review's was warned of).
            let now = try await ResultRow.databaseNow(pool)
            try await ResultRow.insert(
                (0..<20).map { ResultRow(job: Int64($0 + 1), taskClass: "creative", model: "g", latencyMS: 300,
                                         finishedAt: now.addingTimeInterval(-Double($0)), trail: [ResultRow.call("g", latencyMS: 300)]) },
                into: pool)
            for job in 1...20 { try await FeedbackStore(pool: pool).rate(job: Int64(job), score: 100) }
            let rated = try await CatalogStore(pool: pool).importDocument(Data(document.utf8), dryRun: true)
            #expect(!rated.warnings.map(\.description).contains { $0.hasPrefix("routing_rules.creative:") },
                    "\(rated.warnings)")
        }
    }

    @Test("a merge cannot give a class to a second rule: the rule in the database already serves it")
    func mergeKeepsOneRulePerClass() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(
                Data(#"{"models": {"a": {"provider": "simulated"}}, "routing_rules": {"r": {"primary": "a", "classes": ["general"]}}}"#.utf8))
            for file in [
                #"{"routing_rules": {"zz": {"primary": "a", "classes": ["general"]}}}"#,
                #"{"routing_rules": {"general": {"primary": "a"}}}"#,
            ] {
                let error = try await #require(throws: QueueError.self) {
                    try await store.importDocument(Data(file.utf8), mode: .merge)
                }
                #expect(error.message.contains(#"class "general" is already served by rule "r" (in the database"#), "\(error)")
            }
            #expect(try await store.load().rules.map(\.taskClass) == ["r"])
            // The same file that moves the class off rule "r" imports.
            _ = try await store.importDocument(
                Data(#"{"routing_rules": {"r": {"primary": "a"}, "zz": {"primary": "a", "classes": ["general"]}}}"#.utf8),
                mode: .merge)
            #expect(Set(try await store.load().rules.map(\.taskClass)) == ["r", "zz"])
        }
    }

    @Test("an invalid document lists every problem and writes nothing; the seed format needs its models")
    func invalid() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            let seed = """
                {"routing_rules": {"simple_queries": {"primary": "gpt-3.5-turbo", "fallback": "claude-haiku", "max_cost_per_1k": 0.002},
                 "complex_reasoning": {"primary": "gpt-4", "fallback": "claude-opus", "max_latency_ms": 5000}}}
                """
            let error = try await #require(throws: QueueError.self) { try await store.importDocument(Data(seed.utf8)) }
            #expect(error.code == .invalidInput)
            #expect(error.message.hasPrefix("the catalog document has 4 problems:"))
            #expect(error.message.contains("routing_rules.complex_reasoning.fallback: unknown model \"claude-opus\""))
            #expect(error.hint == "Fix every problem above and import again; nothing was changed.")
            #expect(try await store.load() == .empty)
            // Once the models exist, the same seed file imports as-is.
            _ = try await store.importDocument(Self.example)
            let outcome = try await store.importDocument(Data(seed.utf8), mode: .merge)
            #expect(outcome.changes.isEmpty)
            // A models section replaces the database's models: a rule naming one the file leaves
            // out was told to "name a model the catalog has", which it was.
            let partial = #"{"models": {"m": {"provider": "simulated"}}, "routing_rules": {"r": {"primary": "m", "fallback": "claude-haiku"}}}"#
            let replaced = try await #require(throws: QueueError.self) { try await store.importDocument(Data(partial.utf8)) }
            #expect(replaced.message.contains(
                #"routing_rules.r.fallback: model "claude-haiku" is in the database but not in this file's "models" section"#)
                && replaced.message.contains("add \"claude-haiku\" to the file's models section, or import with --merge"),
                "\(replaced.message)")
        }
    }

    @Test("whole numbers the import accepts fit their integer columns; one more is a catalog problem")
    func integerLimits() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            func model(tokensPerMinute: String) -> Data {
                Data(
                    """
                    {"models": {"m": {"provider": "simulated", "context_window": 100000000, "max_concurrency": 1000000,
                                      "requests_per_minute": 100000000, "tokens_per_minute": \(tokensPerMinute)}},
                     "routing_rules": {"r": {"primary": "m", "max_latency_ms": 3600000, "quality_floor": 100}}}
                    """.utf8)
            }
            _ = try await store.importDocument(model(tokensPerMinute: "2147483647"))
            let stored = try await store.load()
            #expect(stored.model(named: "m")?.tokensPerMinute == 2_147_483_647)
            #expect(stored.model(named: "m")?.contextWindow == 100_000_000)

            let error = try await #require(throws: QueueError.self) {
                try await store.importDocument(model(tokensPerMinute: "2147483648"))
            }
            #expect(error.code == .invalidInput)
            #expect(
                error.message.contains(
                    "models.m.tokens_per_minute: 2147483648 tokens per minute is out of range — use a value from 1 to "
                        + "2147483647"),
                "\(error)")
            #expect(try await store.load() == stored)
        }
    }

    @Test("every catalog change is announced once per table on switchyard_catalog")
    func notifies() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            let events = try await pool.listen(on: [CatalogStore.channel])
            _ = try await store.importDocument(Self.example)
            // A marker sent after the import: everything the import announced arrives before it.
            try await pool.query("SELECT pg_notify($1, 'marker')", [CatalogStore.channel])
            var payloads: [String] = []
            for await event in events {
                guard case .notification(let notification) = event else { continue }
                if notification.payload == "marker" { break }
                payloads.append(notification.payload)
            }
            #expect(payloads.sorted() == ["models", "routes"])
        }
    }

    @Test("the database refuses what the import refuses, even from hand-written SQL")
    func constraints() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Self.example)
            let key = try await #require(throws: PostgresError.self) {
                try await pool.query(
                    "UPDATE switchyard.models SET api_key_env = $1 WHERE name = 'gpt-4'", ["sk-live-abcdef123456"])
            }
            #expect(key.sqlState == .checkViolation)
            let strategy = try await #require(throws: PostgresError.self) {
                try await pool.query("UPDATE switchyard.routes SET strategy = 'random' WHERE task_class = 'code'")
            }
            #expect(strategy.sqlState == .checkViolation)
        }
    }

    @Test("a row SQL made unreadable (a number past ±1.8e308 in settings) is named when the catalog cannot load")
    func unreadableRowIsNamed() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Self.example)
            try await pool.query(#"UPDATE switchyard.models SET settings = '{"top": 1e400}' WHERE name = 'gpt-4'"#)
            let error = await #expect(throws: QueueError.self) { try await CatalogStore(pool: pool).load() }
            #expect(error?.message.hasPrefix("model gpt-4 as stored cannot be read") == true, "\(String(describing: error))")
            #expect(error?.hint?.contains("switchyard.models") == true)
        }
    }

    @Test("cache prices are stored, exported and imported back unchanged; a change is listed; SQL cannot store < 0")
    func cachePrices() async throws {
        func document(cachedInput: String) -> Data {
            Data(
                """
                {"models": {
                   "claude": {"provider": "anthropic", "price_per_1k_input": 0.003, "price_per_1k_output": 0.015,
                              "price_per_1k_cached_input": \(cachedInput), "price_per_1k_cache_write": 0.00375},
                   "plain": {"provider": "openai", "price_per_1k_input": 0.0025}}}
                """.utf8)
        }
        let exported = try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(document(cachedInput: "0.0003"))
            let catalog = try await store.load()
            #expect(catalog.model(named: "claude")?.pricePer1KCachedInput == Decimal(string: "0.0003"))
            #expect(catalog.model(named: "claude")?.pricePer1KCacheWrite == Decimal(string: "0.00375"))
            #expect(catalog.model(named: "plain")?.pricePer1KCachedInput == nil)
            #expect(catalog.model(named: "plain")?.pricePer1KCacheWrite == nil)
            // Exported, they are in the document; left out, they stay out (the input price).
            let text = catalog.document.jsonText
            let claude = catalog.document["models"]?["claude"]
            #expect(claude?["price_per_1k_cache_write"] == .number(Decimal(string: "0.00375")!))
            #expect(catalog.document["models"]?["plain"]?["price_per_1k_cached_input"] == nil)
            let again = try await store.importDocument(Data(text.utf8))
            #expect(again.changes.isEmpty, "\(again.changes.rendered())")

            let changed = try await store.importDocument(document(cachedInput: "0.0006"))
            #expect(changed.changes.changedModels == [.init(name: "claude", fields: ["price_per_1k_cached_input"])])
            #expect(changed.changes.rendered().hasPrefix("~ model claude: price_per_1k_cached_input"))

            for column in ["price_per_1k_cached_input", "price_per_1k_cache_write"] {
                let negative = try await #require(throws: PostgresError.self) {
                    try await pool.query("UPDATE switchyard.models SET \(column) = -0.001 WHERE name = 'claude'")
                }
                #expect(negative.sqlState == .checkViolation, "\(column)")
            }
            return (try await store.load(), text)
        }
        // Into an empty database: the same catalog (its first version, as exported).
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(Data(exported.1.utf8))
            let loaded = try await store.load()
            #expect(loaded.model(named: "claude")?.pricePer1KCachedInput == Decimal(string: "0.0003"))
            #expect(loaded.models.map(\.name) == exported.0.models.map(\.name))
            #expect(loaded.model(named: "plain") == exported.0.model(named: "plain"))
        }
    }

    @Test("health comes from model_health, and an open breaker keeps the router away")
    func health() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = CatalogStore(pool: pool)
            _ = try await store.importDocument(Self.example)
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, opened_at, consecutive_failures, latency_ewma_ms, latency_p95_ms)
                VALUES ('gpt-4', 'open', now(), 5, 4100, 9000), ('claude-opus', 'closed', NULL, 0, 2100.5, 5200),
                       ('gpt-3.5', 'open', now() - interval '1 hour', 5, NULL, NULL)
                """
            )
            let health = try await store.health()
            #expect(health["gpt-4"]?.breaker == .open)
            // Open past its cool-down: a probe may go, as the workers and `status` see it.
            #expect(health["gpt-3.5"]?.breaker == .halfOpen)
            #expect(health["claude-opus"]?.latencyEWMAMS == 2100.5)
            let state = try await store.routingState()
            let plan = Router(catalog: try await store.load()).plan(
                for: RoutingRequest(body: ["messages": [["role": "user", "content": "Why is the sky blue?"]]]),
                state: state
            )
            #expect(plan.attempts.map(\.model.name) == ["claude-opus"])
        }
    }

    /// A catalog of a few models and a rule, with knobs for the change-summary tests.
    static func small(price: String, fallbacks: String, extra: Bool) -> String {
        let tier = price == "0.001" ? "cheap" : "standard"
        let extraModel = extra ? #", "extra": {"provider": "simulated"}"# : #", "c": {"provider": "simulated"}"#
        let extraRule = extra ? #", "extra_rule": {"primary": "extra"}"# : ""
        let strategy = extra ? "ordered" : "least_busy"
        return """
            {"models": {"a": {"provider": "simulated", "tier": "\(tier)", "price_per_1k_input": \(price)},
                        "b": {"provider": "simulated"}\(extraModel)},
             "routing_rules": {"r": {"primary": "a", "fallbacks": \(fallbacks), "strategy": "\(strategy)"}\(extraRule)}}
            """
    }
}
