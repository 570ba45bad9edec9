import Foundation
import QueueModel
import Testing

@Suite("Catalog import document")
struct CatalogDocumentTests {
    static let seed = """
        {"routing_rules": {"simple_queries": {"primary": "gpt-3.5-turbo", "fallback": "claude-haiku", "max_cost_per_1k": 0.002},
         "complex_reasoning": {"primary": "gpt-4", "fallback": "claude-opus", "max_latency_ms": 5000}}}
        """

    static let seedModels: Set<String> = ["gpt-3.5-turbo", "claude-haiku", "gpt-4", "claude-opus"]

    private func problems(_ text: String, known: Set<String> = []) -> [String] {
        CatalogDocument.validate(Data(text.utf8), knownModels: known).problems.map(\.description)
    }

    @Test("the seed format users already write is accepted as-is, against models already in the database")
    func acceptsSeedFormat() throws {
        let document = try CatalogDocument(parsing: Data(Self.seed.utf8), knownModels: Self.seedModels)
        #expect(document.models == nil)
        let rules = try #require(document.rules)
        let simple = try #require(rules.first { $0.taskClass == "simple_queries" })
        #expect(simple.primary == "gpt-3.5-turbo")
        #expect(simple.fallbacks == ["claude-haiku"])
        #expect(simple.strategy == .ordered)
        #expect(simple.maxCostPer1K == Decimal(string: "0.002"))
        let complex = try #require(rules.first { $0.taskClass == "complex_reasoning" })
        #expect(complex.models == ["gpt-4", "claude-opus"])
        #expect(complex.maxLatencyMS == 5000)
    }

    @Test("the seed format without those models names every unknown model, with its path")
    func seedWithoutModels() {
        #expect(
            problems(Self.seed, known: ["gpt-4", "claude-opus", "claude-haiku"]) == [
                "routing_rules.simple_queries.primary: unknown model \"gpt-3.5-turbo\" — define it in the \"models\" "
                    + "section, or name a model the catalog has"
            ]
        )
        #expect(problems(Self.seed).count == 4)
    }

    @Test("fallback may be a string or an ordered array, and fallbacks is accepted too")
    func fallbackForms() throws {
        let text = """
            {"routing_rules": {
              "a": {"primary": "m1", "fallback": ["m3", "m2"]},
              "b": {"primary": "m1", "fallbacks": ["m2", "m3"]},
              "c": {"primary": "m1", "fallback": "m2"},
              "d": {"primary": "m1"}}}
            """
        let rules = try #require(try CatalogDocument(parsing: Data(text.utf8), knownModels: ["m1", "m2", "m3"]).rules)
        #expect(rules.map(\.fallbacks) == [["m3", "m2"], ["m2", "m3"], ["m2"], []])
    }

    @Test("prices are exact decimals read from the JSON text, to 10 places")
    func exactPrices() throws {
        let text = """
            {"models": {"m": {"provider": "openai", "price_per_1k_input": 0.0000000001, "price_per_1k_output": 1.2345678901,
             "capabilities": {"code": 90}, "settings": {"headers": {"X-Title": "switchyard"}}}},
             "routing_rules": {"r": {"primary": "m", "max_cost_per_1k": 2e-3}}}
            """
        let document = try CatalogDocument(parsing: Data(text.utf8))
        let model = try #require(document.models?.first)
        #expect(model.pricePer1KInput == Decimal(string: "0.0000000001"))
        #expect(model.pricePer1KOutput == Decimal(string: "1.2345678901"))
        #expect(model.pricePer1KOutput.description == "1.2345678901")
        #expect(model.capabilities == ["code": 90])
        #expect(model.settings == ["headers": ["X-Title": "switchyard"]])
        #expect(document.rules?.first?.maxCostPer1K == Decimal(string: "0.002"))
        // Eleven places would be rounded by the database: refused, with the reason.
        let tooFine = #"{"models": {"m": {"provider": "openai", "price_per_1k_input": 0.00000000001}}}"#
        #expect(
            problems(tooFine) == [
                "models.m.price_per_1k_input: 0.00000000001 has more than 10 digits after the decimal point — the catalog "
                    + "keeps prices to 10 places; round it"
            ])
        // Too large for a number at all: out of range, not "expected a number, got a number".
        let huge = #"{"models": {"m": {"provider": "openai", "price_per_1k_input": 1e400}}}"#
        #expect(problems(huge) == ["models.m.price_per_1k_input: 1e400 is out of range — use a number from 0 up to 9999999999"])
    }

    @Test("cache prices are optional exact decimals, checked like the other prices; LiteLLM's names get the fix")
    func cachePrices() throws {
        let text = """
            {"models": {"cached": {"provider": "anthropic", "price_per_1k_input": 0.003,
                                   "price_per_1k_cached_input": 0.0003, "price_per_1k_cache_write": 0.00375},
                        "plain": {"provider": "openai", "price_per_1k_input": 0.003}}}
            """
        let document = try CatalogDocument(parsing: Data(text.utf8))
        let cached = try #require(document.models?.first { $0.name == "cached" })
        #expect(cached.pricePer1KCachedInput == Decimal(string: "0.0003"))
        #expect(cached.pricePer1KCacheWrite == Decimal(string: "0.00375"))
        // Left out: nil, which prices cache reads and writes at the input price.
        let plain = try #require(document.models?.first { $0.name == "plain" })
        #expect(plain.pricePer1KCachedInput == nil && plain.pricePer1KCacheWrite == nil)

        let bad = """
            {"models": {"m": {"provider": "openai", "price_per_1k_cached_input": -0.001,
                              "price_per_1k_cache_write": 0.00000000001},
                        "n": {"provider": "openai", "price_per_1k_cached_input": "0.0003",
                              "cache_read_input_token_cost": 3e-7}}}
            """
        #expect(
            problems(bad) == [
                "models.m.price_per_1k_cached_input: -0.001 is out of range — use a number from 0 up to 9999999999",
                "models.m.price_per_1k_cache_write: 0.00000000001 has more than 10 digits after the decimal point — "
                    + "the catalog keeps prices to 10 places; round it",
                "models.n.cache_read_input_token_cost: unknown field — write \"price_per_1k_cached_input\" instead "
                    + "(per 1,000 tokens)",
                "models.n.price_per_1k_cached_input: expected a number, got a string — write it without quotes: "
                    + "0.0003",
            ])
    }

    @Test("a cached-input price above the input price is imported, with a warning that says so")
    func cachedAboveInputWarns() {
        let text = """
            {"models": {"swapped": {"provider": "anthropic", "price_per_1k_input": 0.0003,
                                    "price_per_1k_cached_input": 0.003},
                        "fine": {"provider": "openai", "price_per_1k_input": 0.0025, "price_per_1k_cached_input": 0.00125}}}
            """
        let validation = CatalogDocument.validate(Data(text.utf8), knownModels: [])
        #expect(validation.problems.isEmpty)
        #expect(
            validation.warnings.map(\.description) == [
                "models.swapped.price_per_1k_cached_input: 0.003 is above the input price (0.0003): cache reads would "
                    + "cost more than uncached input — cache reads are discounted (OpenAI: half, Anthropic: a tenth); "
                    + "a cache write's price goes in price_per_1k_cache_write"
            ])
    }

    /// A provider walkthrough's plain http:// base URL with a key imported without a word.
    @Test("a key sent over plain http to another machine is warned about; loopback and https are not")
    func plainHTTPKeyWarns() {
        let text = """
            {"models": {"far": {"provider": "openai", "base_url": "http://llm.internal:8000/v1", "api_key_env": "K"},
                        "near": {"provider": "openai", "base_url": "http://127.0.0.1:8000/v1", "api_key_env": "K"},
                        "safe": {"provider": "openai", "base_url": "https://llm.internal/v1", "api_key_env": "K"},
                        "keyless": {"provider": "openai", "base_url": "http://llm.internal:8000/v1"}}}
            """
        let validation = CatalogDocument.validate(Data(text.utf8), knownModels: [])
        #expect(validation.problems.isEmpty)
        #expect(
            validation.warnings.map(\.description) == [
                "models.far.base_url: sends the key in K unencrypted (http:// to llm.internal) — use https:// unless "
                    + "the network between the workers and llm.internal is private"
            ])
    }

    @Test("every problem is reported at once, each with its path and what to do")
    func everyProblemAtOnce() {
        let text = """
            {"models": {
               "gpt-4o": {"provider": "openia", "context_window": "big", "capabilities": {"code": 120}, "wieght": 2},
               "bad": {"provider": "openai", "base_url": "ftp://example.com", "enabled": "yes", "max_concurrency": 0}},
             "routing_rules": {
               "chat": {"primary": "gpt-4o-mini", "fallbacks": ["gpt-4o", "gpt-4o"], "strategy": "round-robin",
                        "quality_floor": 101, "max_latency_ms": 2.5, "timeout_ms": 100},
               "other": {"primary": "bad", "strategy": "latency-based-routing"}}}
            """
        #expect(
            problems(text) == [
                "models.gpt-4o.wieght: unknown field (did you mean \"weight\"?)",
                "models.gpt-4o.provider: unknown provider \"openia\" (did you mean \"openai\"?) — use one of openai, "
                    + "anthropic, simulated (openai covers any OpenAI-compatible endpoint)",
                "models.gpt-4o.capabilities.code: 120 is out of range — use a value from 0 to 100",
                "models.gpt-4o.context_window: expected a whole number, got a string",
                "models.bad.base_url: \"ftp://example.com\" is not an http(s) URL — write it like https://api.openai.com/v1",
                "models.bad.max_concurrency: 0 is out of range — use a value from 1 to 1000000",
                "models.bad.enabled: expected true or false, got a string",
                "routing_rules.chat.timeout_ms: unknown field — write \"max_latency_ms\" instead",
                "routing_rules.chat.primary: unknown model \"gpt-4o-mini\" — define it in the \"models\" section, or "
                    + "name a model the catalog has",
                "routing_rules.chat.fallbacks[1]: \"gpt-4o\" is already in this rule — list each model once",
                "routing_rules.chat.strategy: unknown strategy \"round-robin\" (did you mean \"round_robin\"?) — use one "
                    + "of ordered, round_robin, weighted, least_busy, lowest_latency, cheapest, best_quality, hash",
                "routing_rules.chat.max_latency_ms: expected a whole number, got 2.5",
                "routing_rules.chat.quality_floor: 101 is out of range — use a value from 0 to 100",
                "routing_rules.other.strategy: unknown strategy \"latency-based-routing\" (LiteLLM's; the nearest "
                    + "here is \"lowest_latency\") — use one of ordered, round_robin, weighted, least_busy, lowest_latency, "
                    + "cheapest, best_quality, hash",
            ]
        )
    }

    @Test("an API key where the env var's name belongs is refused, and the key is never repeated")
    func refusesKeys() {
        let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
        let text = """
            {"models": {"m": {"provider": "openai", "api_key_env": "\(key)", "settings": {"token": "\(key)"},
             "base_url": "https://user:\(key)@api.example.com/v1"}, "n": {"provider": "openai", "api_key": "OPENAI_API_KEY"}}}
            """
        let found = problems(text)
        #expect(found.count == 4)
        #expect(found.allSatisfy { !$0.contains(key) && !$0.contains("sk-proj") })
        #expect(found[0].hasPrefix("models.m.base_url: has credentials"))
        #expect(
            found[1].hasPrefix("models.m.api_key_env: looks like an API key, not the name of an environment variable"))
        #expect(found[2].hasPrefix("models.m.settings.token: looks like an API key or token"))
        #expect(found[3].hasPrefix("models.n.api_key: unknown field — write \"api_key_env\" instead (the NAME"), "\(found[3])")
        let valid = #"{"models": {"m": {"provider": "openai", "api_key_env": "OPENAI_API_KEY"}}}"#
        #expect(problems(valid).isEmpty)
    }

    /// A security review's admin named DATABASE_URL with its own server as base_url, and the
    /// workers sent it their database password.
    @Test("api_key_env may not name the worker's connection to Postgres; other names are the operator's to allow")
    func refusesWorkerConnection() {
        for variable in ["DATABASE_URL", "PGPASSWORD", "PGHOST"] {
            let text = #"{"models": {"m": {"provider": "openai", "api_key_env": "\#(variable)"}}}"#
            let found = problems(text)
            #expect(found == [
                "models.m.api_key_env: \(variable) is the worker's connection to Postgres, not a provider's key: a model "
                    + "would send it to its base_url — name the variable on the workers that holds this provider's key, "
                    + "e.g. OPENAI_API_KEY"
            ], "\(found)")
        }
        for variable in ["PGVECTOR_API_KEY", "DATABASE_URL_KEY", "OPENAI_API_KEY"] {
            #expect(problems(#"{"models": {"m": {"provider": "openai", "api_key_env": "\#(variable)"}}}"#).isEmpty)
        }
        #expect(KeyVariables(environment: [:]).refusal(of: "AWS_SECRET_ACCESS_KEY") == nil)
        let listed = KeyVariables(environment: ["SWITCHYARD_KEY_VARIABLES": "OPENAI_API_KEY, ANTHROPIC_API_KEY"])
        #expect(listed.refusal(of: "ANTHROPIC_API_KEY") == nil)
        #expect(listed.refusal(of: "AWS_SECRET_ACCESS_KEY")
            == "AWS_SECRET_ACCESS_KEY is not among the variables this worker's SWITCHYARD_KEY_VARIABLES allows")
        #expect(listed.refusal(of: "DATABASE_URL") != nil)
        #expect(listed.malformed.isEmpty)
        // Names apart with spaces, or no name at all: said at the worker's start.
        let spaced = KeyVariables(environment: ["SWITCHYARD_KEY_VARIABLES": "OPENAI_API_KEY FAKE_KEY,lower_ok,;,9LIVES"])
        #expect(spaced.malformed == ["OPENAI_API_KEY FAKE_KEY", ";", "9LIVES"])
    }

    /// Keys a shape check cannot tell from ids (a review got both stored): an Azure key, 32
    /// lower-case hex digits, in an `api-key` header; 30 mixed-case characters where the
    /// variable's name belongs.
    @Test("a header that carries credentials, and a key pasted as api_key_env, are refused without repeating them")
    func refusesCredentialHeaders() {
        let hex = "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
        let pasted = "zq8VX3mbN7pLw2RtQaK9uYe4HsDf6J"
        let text = """
            {"models": {"azure": {"provider": "openai", "base_url": "https://r.openai.azure.com/openai/v1",
               "settings": {"headers": {"api-key": "\(hex)", "X-Custom-Token": "PLAINsecretvalue", "HTTP-Referer": "https://example.com"}}},
             "pasted": {"provider": "openai", "api_key_env": "\(pasted)"},
             "bearer": {"provider": "openai", "settings": {"headers": {"Authorization": "Bearer sk-\(pasted)"}}},
             "nested": {"provider": "openai",
                        "settings": {"extra_body": {"settings": {"headers": {"Authorization": "Bearer sk-\(pasted)"}}}}}},
             "routing_rules": {"chat": {"primary": "bearer",
                                        "settings": {"headers": {"Authorization": "Bearer sk-\(pasted)"}}}}}
            """
        let found = problems(text)
        // One problem a header: a key-shaped value in a credentials header was reported twice. One
        // anywhere else is still refused for its shape (a review's rule and nested headers passed).
        #expect(found.count == 6, "\(found)")
        #expect(found.contains { $0.hasPrefix("models.nested.settings.extra_body.settings.headers.Authorization: looks like") })
        #expect(found.contains { $0.hasPrefix("routing_rules.chat.settings.headers.Authorization: looks like") })
        #expect(found.contains { $0.hasPrefix("models.bearer.settings.headers.Authorization: is a header that carries") })
        #expect(found.allSatisfy { !$0.contains(hex) && !$0.contains(pasted) && !$0.contains("PLAIN") })
        #expect(found.contains { $0.hasPrefix("models.azure.settings.headers.api-key: is a header that carries credentials") })
        #expect(found.contains { $0.hasPrefix("models.azure.settings.headers.X-Custom-Token: is a header that carries credentials") })
        #expect(found.contains { $0.hasPrefix("models.pasted.api_key_env: looks like an API key") })
        let names = #"{"models": {"a": {"provider": "openai", "api_key_env": "AZURE_OPENAI_API_KEY_2"}, "b": {"provider": "openai", "api_key_env": "OpenAIKey2024"}}}"#
        #expect(problems(names).isEmpty)
    }

    @Test("syntax errors name the line and column; duplicate keys and empty documents are refused")
    func syntaxAndShape() {
        #expect(
            problems("{\"routing_rules\": {\n  \"a\": {\"primary\": \"m\",}\n}}") == [
                "not valid JSON at line 2, column 24: expected a member name in double quotes — Fix the file's syntax (a "
                    + "JSON linter such as `python3 -m json.tool FILE` shows the spot)."
            ])
        #expect(
            problems(#"{"routing_rules": {"a": {"primary": "m", "primary": "m"}}}"#, known: ["m"]) == [
                "routing_rules.a.primary: appears twice — keep one of them"
            ])
        #expect(
            problems("{}") == ["the document has neither \"models\" nor \"routing_rules\" — add at least one of them"])
        #expect(problems(#"{"rules": {}}"#) == ["rules: unknown field — write \"routing_rules\" instead"])
        #expect(problems("[]") == ["expected an object, got an array"])
    }

    @Test("hash options only where they apply; a class goes to one rule")
    func ruleOptions() {
        let text = """
            {"routing_rules": {
              "a": {"primary": "m", "strategy": "ordered", "strategy_without_affinity": "least_busy", "load_epsilon": 0.25},
              "b": {"primary": "m", "strategy": "hash", "strategy_without_affinity": "hash", "classes": ["code", "a"]}}}
            """
        #expect(
            problems(text, known: ["m"]) == [
                "routing_rules.a.strategy_without_affinity: only applies when \"strategy\" is \"hash\" — remove it, or set "
                    + "strategy to hash",
                "routing_rules.b.strategy_without_affinity: cannot be \"hash\": it is for jobs that have no affinity key — "
                    + "use ordered, least_busy, cheapest, …",
                "routing_rules.b.classes[1]: class \"a\" is already served by rule \"a\" — a class goes to one rule; remove "
                    + "it from one of them",
            ])
        #expect(
            CatalogDocument.validate(Data(text.utf8), knownModels: ["m"]).warnings.map(\.description) == [
                "routing_rules.a.load_epsilon: only applies when \"strategy\" is \"hash\"; ignored — remove it, or set "
                    + "strategy to hash"
            ])
    }

    @Test("a rule's background ceiling is a price, as max_cost_per_1k is: the claim's SQL gate casts it")
    func backgroundCeiling() throws {
        let path = "routing_rules.r.settings.background_max_cost_per_1k"
        func rule(_ ceiling: String) -> String {
            #"{"routing_rules": {"r": {"primary": "m", "settings": {"background_max_cost_per_1k": \#(ceiling)}}}}"#
        }
        for (ceiling, message) in [
            (#""cheap""#, "expected a number, got a string"), ("true", "expected a number, got a boolean"),
            (#""0.002""#, "expected a number, got a string"), ("[0.002]", "expected a number, got an array"),
            ("-1", "-1 is out of range"), ("0.00000000001", "0.00000000001 has more than 10 digits"),
        ] {
            let found = problems(rule(ceiling), known: ["m"])
            #expect(found.count == 1, "\(ceiling): \(found)")
            #expect(found.first?.hasPrefix("\(path): \(message)") == true, "\(ceiling): \(found)")
            #expect(found.first?.contains(" — ") == true, "says what to do: \(found)")
        }
        let document = try CatalogDocument(parsing: Data(rule("0.0015").utf8), knownModels: ["m"])
        #expect(document.rules?.first?.settings["background_max_cost_per_1k"]?.doubleValue == 0.0015)
        #expect(problems(rule("0"), known: ["m"]).isEmpty)
        #expect(problems(rule("null"), known: ["m"]).isEmpty)
    }

    @Test("a price written as a quoted number is refused with the fix: the same number without quotes")
    func quotedPrice() {
        let found = problems(
            #"{"models": {"m": {"provider": "simulated", "price_per_1k_input": "0.002"}}}"#, known: [])
        #expect(found == [#"models.m.price_per_1k_input: expected a number, got a string — write it without quotes: 0.002"#])
    }

    @Test("an unknown key in a simulated model's settings is a warning, with the key it was likely meant to be")
    func unknownSimulatedSettings() {
        let text = """
            {"models": {"m": {"provider": "simulated", "settings": {"latency_p50": 100, "error_rate": 0.1, "colour": 1}},
                        "o": {"provider": "openai", "settings": {"headers": {"X-Title": "switchyard"}}}}}
            """
        let validation = CatalogDocument.validate(Data(text.utf8))
        #expect(validation.problems.isEmpty)
        #expect(
            validation.warnings.map(\.description) == [
                "models.m.settings.latency_p50: unknown simulated setting, ignored (did you mean \"latency_p50_ms\"?)",
                "models.m.settings.colour: unknown simulated setting, ignored — remove it; a simulated model reads mode, "
                    + "latency_p50_ms, latency_p95_ms, error_rate, rate_limit_rate, retry_after_ms, seed, "
                    + "output_tokens_min, output_tokens_max, outages, outage_file, outage_fault",
            ])
        #expect(validation.document?.models?.first?.settings["latency_p50"] == 100)
    }

    /// A review's import took keep_cache_control on an Anthropic model without a word.
    @Test("an openai or anthropic model's setting that only another provider reads, or a near miss, is a warning")
    func settingsOfAnotherProvider() {
        let text = """
            {"models": {"c": {"provider": "anthropic", "settings": {"keep_cache_control": false, "default_max_token": 5}},
                        "o": {"provider": "openai", "settings": {"default_max_tokens": 100, "team": "search"}}}}
            """
        let validation = CatalogDocument.validate(Data(text.utf8))
        #expect(validation.problems.isEmpty)
        #expect(
            validation.warnings.map(\.description) == [
                "models.c.settings.keep_cache_control: only openai models read it; this anthropic model ignores it — "
                    + "remove it, or set it on the model it was meant for",
                "models.c.settings.default_max_token: not a setting the anthropic adapter reads, ignored "
                    + "(did you mean \"default_max_tokens\"?)",
                "models.o.settings.default_max_tokens: only anthropic models read it; this openai model ignores it — "
                    + "remove it, or set it on the model it was meant for",
            ], "\(validation.warnings.map(\.description))")
    }

    /// A review's note: a user's own setting `def` was told "did you mean default_max_tokens".
    @Test("a prefix suggests a name only when it is most of that name")
    func prefixSuggestions() {
        #expect(CatalogProblem.suggestion(for: "cheap", among: ["cheapest", "ordered"]) == "cheapest")
        #expect(CatalogProblem.suggestion(for: "latency_p50", among: ["latency_p50_ms"]) == "latency_p50_ms")
        #expect(CatalogProblem.suggestion(for: "def", among: ["default_max_tokens"]) == nil)
        #expect(CatalogProblem.suggestion(for: "default", among: ["default_max_tokens"]) == nil)
        #expect(CatalogProblem.suggestion(for: "default_max", among: ["default_max_tokens"]) == "default_max_tokens")
    }

    /// A walkthrough's file with a problem and a warning saw the warning only once the problem
    /// was fixed (a third import).
    @Test("a refused document's error lists its warnings too")
    func warningsWithProblems() {
        let text = """
            {"models": {"m": {"provider": "simulated", "rpm": 4, "settings": {"latency_p50": 100}}}}
            """
        let error = #expect(throws: QueueError.self) { try CatalogDocument(parsing: Data(text.utf8)) }
        #expect(error?.message.contains("models.m.rpm: unknown field") == true, "\(String(describing: error))")
        #expect(error?.message.contains("and 1 warning (taken as they are):\n  models.m.settings.latency_p50: unknown simulated setting")
            == true, "\(String(describing: error))")
    }

    @Test("a setting an adapter reads, of the wrong type, is refused naming the model, the key and the type")
    func settingsOfTheWrongType() {
        let text = """
            {"models": {
              "claude": {"provider": "anthropic", "settings": {"default_max_tokens": "4096", "colour": [1]}},
              "router": {"provider": "openai",
                         "settings": {"headers": ["HTTP-Referer: x"], "insecure_skip_tls_verify": 1}},
              "sim": {"provider": "simulated", "settings": {"error_rate": "0.1", "outages": null}}}}
            """
        #expect(
            problems(text) == [
                "models.claude.settings.default_max_tokens: must be a positive whole number, got a string — write it "
                    + "without quotes, e.g. \"default_max_tokens\": 4096",
                "models.router.settings.headers: must be an object whose values are strings, got an array — write it "
                    + "as, e.g., \"headers\": {\"HTTP-Referer\": \"https://example.com\"}",
                "models.router.settings.insecure_skip_tls_verify: must be true or false, got a number — write it as, "
                    + "e.g., \"insecure_skip_tls_verify\": true",
                "models.sim.settings.error_rate: must be a number, got a string — write it without quotes, e.g. "
                    + "\"error_rate\": 0.02",
            ])
        // In an array of models the path does not name the model: the message does.
        let array = #"{"models": [{"name": "claude", "provider": "anthropic", "settings": {"default_max_tokens": 0}}]}"#
        #expect(
            problems(array) == [
                "models[0].settings.default_max_tokens: model \"claude\": must be a positive whole number, got a "
                    + "number — write it as, e.g., \"default_max_tokens\": 4096"
            ])
        // Keys no adapter reads are still kept (an openai model's settings are not warned of).
        let fine = #"{"models": {"o": {"provider": "openai", "settings": {"default_max_tokens": "x", "note": 1}}}}"#
        #expect(problems(fine).isEmpty)
    }

    @Test("a window that starts and ends at the same time is a whole day: said in a warning")
    func sameStartAndEnd() {
        let text = """
            {"models": {"m": {"provider": "simulated", "price_windows": [
                {"start": "10:00", "end": "10:00", "multiplier": 0.5}, {"start": "00:00", "end": "24:00", "multiplier": 0.9}]}}}
            """
        let validation = CatalogDocument.validate(Data(text.utf8))
        #expect(validation.problems.isEmpty)
        #expect(
            validation.warnings.map(\.description) == [
                "models.m.price_windows[0]: starts and ends at 10:00: it lasts the whole day — write \"00:00\" to "
                    + "\"24:00\" for a whole day, or the end you meant"
            ])
    }

    /// An operator's walkthrough imported each of these without a word.
    @Test("a window naming a day twice, a multiplier the other two override, or a free window is said in a warning")
    func suspectWindows() {
        let text = """
            {"models": {"m": {"provider": "simulated", "price_windows": [
                {"start": "22:00", "end": "06:00", "multiplier": 0.5, "days": ["mon", "Monday", "tue"]},
                {"start": "01:00", "end": "02:00", "multiplier": 0.5, "input_multiplier": 0.4, "output_multiplier": 0.6},
                {"start": "03:00", "end": "04:00", "multiplier": 0},
                {"start": "07:00", "end": "08:00", "multiplier": 0.5, "input_multiplier": 0, "output_multiplier": 0},
                {"start": "05:00", "end": "06:00", "multiplier": 0.7, "days": ["sat", "sun"]}]}}}
            """
        let validation = CatalogDocument.validate(Data(text.utf8))
        #expect(validation.problems.isEmpty)
        #expect(
            validation.warnings.map(\.description) == [
                "models.m.price_windows[0].days: names mon twice — name each day once; did you mean another day?",
                "models.m.price_windows[1].multiplier: is not used: input_multiplier and output_multiplier are both given "
                    + "— remove it, or one of the other two",
                "models.m.price_windows[2]: has a multiplier of 0: the model costs nothing in this window — if it is "
                    + "free then, keep it; a discount is a fraction like 0.5",
                "models.m.price_windows[3].multiplier: is not used: input_multiplier and output_multiplier are both given "
                    + "— remove it, or one of the other two",
                "models.m.price_windows[3]: has a multiplier of 0: the model costs nothing in this window — if it is "
                    + "free then, keep it; a discount is a fraction like 0.5",
            ])
    }

    @Test("supports names what a model cannot take; an unknown name or a LiteLLM field is a problem with the fix")
    func supports() throws {
        let text = """
            {"models": {"m": {"provider": "simulated", "supports": {"tools": false, "images": true, "json_output": false}}}}
            """
        let document = try CatalogDocument(parsing: Data(text.utf8))
        #expect(document.models?.first?.unsupported == [.tools, .jsonOutput])
        let exported = Catalog(models: document.models ?? [], rules: []).document
        #expect(exported["models"]?["m"]?["supports"] == ["tools": false, "json_output": false])
        let bad = """
            {"models": {"m": {"provider": "simulated", "supports": {"vision": false, "tools": "no"}},
                        "n": {"provider": "simulated", "supports_vision": false}}}
            """
        #expect(CatalogDocument.validate(Data(bad.utf8)).problems.map(\.description) == [
            "models.m.supports.vision: unknown feature (Switchyard calls it \"images\") — use tools, images, json_output",
            "models.m.supports.tools: expected true or false, got a string",
            "models.n.supports_vision: unknown field — write \"supports.images\" instead",
        ])
    }

    @Test("two models whose names differ only in case are said in a warning")
    func namesDifferingInCase() {
        let text = """
            {"models": {"oa-mini": {"provider": "simulated"}, "OA-MINI": {"provider": "simulated"}}}
            """
        let validation = CatalogDocument.validate(Data(text.utf8))
        #expect(validation.problems.isEmpty)
        #expect(
            validation.warnings.map(\.description) == [
                "models.OA-MINI: model \"OA-MINI\" differs from \"oa-mini\" only in case: they are two models — "
                    + "rename one, or keep one definition"
            ])
    }

    @Test("a time zone that is not one is a problem of the window's time_zone")
    func badZonePath() {
        let text = """
            {"models": {"m": {"provider": "simulated", "price_windows": [
                {"start": "22:00", "end": "06:00", "multiplier": 0.5, "time_zone": "Mars/Olympus"}]}}}
            """
        #expect(CatalogDocument.validate(Data(text.utf8)).problems.map(\.path) == ["models.m.price_windows[0].time_zone"])
    }

    @Test("replace makes each section the whole truth; merge only adds and updates; absent sections stay")
    func applyModes() throws {
        let existing = Catalog(
            models: [RoutingFixtures.model("old"), RoutingFixtures.model("kept")],
            rules: [RouteRule(taskClass: "legacy", primary: "kept")]
        )
        let text = #"{"models": {"new": {"provider": "simulated"}, "kept": {"provider": "simulated"}}}"#
        let document = try CatalogDocument(parsing: Data(text.utf8))
        let replaced = document.applied(to: existing, mode: .replace)
        #expect(replaced.models.map(\.name) == ["kept", "new"])
        #expect(replaced.rules.map(\.taskClass) == ["legacy"])
        let merged = document.applied(to: existing, mode: .merge)
        #expect(merged.models.map(\.name) == ["kept", "new", "old"])
    }

    @Test("an import that would strand a rule kept from the database is refused, naming the rule")
    func strandedRule() {
        let existing = Catalog(
            models: [RoutingFixtures.model("old")], rules: [RouteRule(taskClass: "legacy", primary: "old")])
        let text = Data(#"{"models": {"new": {"provider": "simulated"}}}"#.utf8)
        let replace = CatalogDocument.validate(text, importingInto: existing, mode: .replace)
        #expect(replace.document == nil)
        #expect(
            replace.problems.map(\.description) == [
                "models: removes model \"old\", which rule \"legacy\" (in the database, not in this file) still names — keep "
                    + "\"old\" in the models section, add routing_rules for \"legacy\", or import with --merge"
            ])
        #expect(CatalogDocument.validate(text, importingInto: existing, mode: .merge).problems.isEmpty)
        // A rules-only file may name the database's models.
        let rules = Data(#"{"routing_rules": {"legacy": {"primary": "old"}, "extra": {"primary": "old"}}}"#.utf8)
        #expect(CatalogDocument.validate(rules, importingInto: existing, mode: .replace).problems.isEmpty)
    }

    @Test("the example catalog is valid and serves every built-in class")
    func exampleCatalog() throws {
        let document = try CatalogDocument(parsing: RoutingFixtures.exampleCatalogData)
        #expect((8...12).contains(document.models?.count ?? 0))
        #expect(document.models?.allSatisfy { $0.provider == .simulated } == true)
        let catalog = document.applied(to: .empty)
        #expect(RuleMatcher(catalog: catalog).unservedClasses().isEmpty)
        #expect(catalog.rule(named: "simple_queries")?.fallbacks == ["claude-haiku"])
        #expect(Set(catalog.models.map(\.tier)) == ["premium", "standard", "cheap", "open_source"])
    }
}

@Suite("Catalog JSON parsing")
struct CatalogJSONTests {
    private func problems(_ text: String) -> [String] {
        CatalogDocument.validate(Data(text.utf8), knownModels: ["m"]).problems.map(\.message)
    }

    @Test("strict JSON: leading zeros, trailing text, bad escapes and unclosed strings are refused")
    func strict() {
        #expect(
            problems(#"{"models": {"x": {"provider": "simulated", "weight": 01}}}"#).first?.contains("leading zeros")
                == true)
        #expect(problems(#"{"routing_rules": {}} x"#).first?.contains("unexpected text after the end") == true)
        #expect(problems(#"{"routing_rules": {"a\q": {}}}"#).first?.contains("unknown escape") == true)
        #expect(problems(#"{"routing_rules": {"a"#).first?.contains("not closed") == true)
    }

    @Test("escapes, surrogate pairs and a byte order mark decode")
    func escapes() throws {
        let text =
            "\u{FEFF}" + #"{"routing_rules": {"r": {"primary": "m", "description": "caf\u00e9 \ud83d\ude80 \"q\""}}}"#
        let rule = try #require(try CatalogDocument(parsing: Data(text.utf8), knownModels: ["m"]).rules?.first)
        #expect(rule.settings["description"] == "café 🚀 \"q\"")
    }
}
