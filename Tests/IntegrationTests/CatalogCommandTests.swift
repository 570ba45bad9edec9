import Foundation
import Postgres
import QueueModel
import Testing

@testable import Dispatcher

/// The `dispatcher models` and `dispatcher route` commands, run as real child processes.
@Suite("Catalog and route commands")
struct CatalogCommandTests {
    private func dispatcher(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let binary = WorkerProcess.binary("dispatcher")
        return try await BlockingWork.run { try ChildProcess.run(binary, arguments) }
    }

    /// Runs `body` with the path of a file holding `text`, removed afterwards.
    private func withFile<T>(_ text: String, _ body: (String) async throws -> T) async throws -> T {
        let file = FileManager.default.temporaryDirectory.appending(path: "catalog-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(text.utf8).write(to: file)
        return try await body(file.path)
    }

    @Test("route --explain prices a model by its window open now, as a worker does, and marks it off-peak")
    func explainOffPeak() async throws {
        let text = """
            {"models": {"halved": {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002,
                                   "price_windows": [{"start": "00:00", "end": "00:00", "multiplier": 0.5}]}},
             "routing_rules": {"default": {"primary": "halved"}}}
            """
        try await withFile(text) { path in
            let (status, output) = try await dispatcher(["route", "--explain", "--catalog", path, "--prompt", "hello"])
            #expect(status == 0, "\(output)")
            #expect(output.contains("$0.001/1K off-peak"), "\(output)")
            // Keys as submission takes them: blank is none (a walkthrough's '   ' got a home model), and
            // one over 500 characters is refused.
            for key in ["", "   "] {
                let (status, words) = try await dispatcher(
                    ["route", "--explain", "--json", "--catalog", path, "--prompt", "hello", "--affinity", key])
                #expect(status == 0 && !words.contains("affinity key \""), "\(words)")
            }
            let (refused, words) = try await dispatcher(
                ["route", "--explain", "--catalog", path, "--prompt", "hello", "--affinity", String(repeating: "k", count: 501)])
            #expect(refused == 2 && words.contains("error: affinity key is 501 characters"), "\(words)")
        }
        // A request naming a model the catalog lacks is refused, as submission refuses it (a
        // walkthrough's plan for one read as if it could run).
        try await withFile(text) { catalog in
            try await withFile(#"{"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}"#) { request in
                let (status, output) = try await dispatcher(["route", "--explain", "--catalog", catalog, "--file", request])
                #expect(status == 2 && output.contains("error: request.model names a model the catalog lacks: 'gpt-5'"), "\(output)")
            }
        }
    }

    /// A failover walkthrough's writes against a standby said "cannot execute INSERT in a read-only
    /// transaction" and no more, and a bulk submit called its refused batch "may or may not have gone in".
    @Test("a write the database refuses as read-only says to run it against the primary; a refused batch is not in doubt")
    func readOnlyDatabase() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let database = try await pool.query("SELECT current_database() AS name").first!.decode("name", as: String.self)
            try await pool.query("ALTER DATABASE \(database) SET default_transaction_read_only = on")
            let url = pool.configuration.effectiveConnectionString
            let (status, output) = try await dispatcher(["submit", "--prompt", "hi", "--database-url", url])
            #expect(status == 1 && output.contains("hint: the database takes no writes"), "\(output)")
            let lines = #"{"request":{"messages":[{"role":"user","content":"a"}]}}"# + "\n"
                + #"{"request":{"messages":[{"role":"user","content":"b"}]}}"# + "\n"
            try await withFile(lines) { path in
                let (bulk, words) = try await dispatcher(["submit", "--file", path, "--json", "--database-url", url])
                #expect(bulk == 1, "\(words)")
                #expect(words.contains("the database refused lines 1–2 whole") && words.contains("against the primary"), "\(words)")
                #expect(words.contains(#""in_flight_lines":[]"#) && !words.contains("may or may not"), "\(words)")
            }
            try await pool.query("ALTER DATABASE \(database) RESET default_transaction_read_only")
        }
    }

    @Test("models prices names an open window off-peak or surcharged, and none open list price")
    func pricesNameWindows() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let catalog = """
                {"models": {
                   "cheap":  {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002,
                              "price_windows": [{"start": "00:00", "end": "24:00", "multiplier": 0.5}]},
                   "dear":   {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002,
                              "price_windows": [{"start": "00:00", "end": "24:00", "multiplier": 3}]},
                   "night":  {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002,
                              "price_windows": [{"start": "22:00", "end": "06:00", "multiplier": 0.5}]},
                   "flat":   {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.002}},
                 "routing_rules": {"default": {"primary": "flat"}}}
                """
            _ = try await CatalogStore(pool: pool).importDocument(Data(catalog.utf8))
            let url = pool.configuration.effectiveConnectionString
            let (status, output) = try await dispatcher(
                ["models", "prices", "--at", "2026-11-26T12:00:00Z", "--database-url", url])
            #expect(status == 0, "\(output)")
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.hasPrefix("cheap") && $0.contains("off-peak ×0.5/×0.5") }, "\(output)")
            #expect(lines.contains { $0.hasPrefix("dear") && $0.contains("surcharged ×3/×3") && !$0.contains("peak") },
                    "\(output)")
            // Outside its windows, a model is at its list price: "peak" said so of a surcharge's model too.
            #expect(lines.contains { $0.hasPrefix("night") && $0.contains("list price") }, "\(output)")
            #expect(!output.contains(" peak "), "\(output)")
            let json = try await dispatcher(["models", "prices", "--json", "--database-url", url])
            let models = try JSONValue(parsing: json.output)["models"]?.arrayValue ?? []
            let dear = try #require(models.first { $0["model"] == "dear" })
            #expect(dear["surcharged"] == true && dear["off_peak"] == false)
        }
    }

    @Test("another process maps every affinity key to the same model as this one (invariant 5)")
    func hashingAgreesAcrossProcesses() async throws {
        let keys = (0..<300).map { "conversation-\($0)" }
        let path = CatalogStoreTests.exampleURL.path
        let arguments =
            ["route", "--explain", "--json", "--catalog", path, "--class", "general", "--prompt", "hello"]
            + keys.flatMap { ["--affinity", $0] }
        let (status, output) = try await dispatcher(arguments)
        #expect(status == 0, "\(output)")
        let entries = try #require(try JSONValue(parsing: output).arrayValue)
        let catalog = try CatalogDocument(parsing: CatalogStoreTests.example).applied(to: .empty)
        let router = Router(catalog: catalog)
        // Priced as route --explain prices them: a window open now (the example has some).
        var state = RoutingState()
        for (model, price) in PriceSchedule.offPeakPrices(catalog.models.map(PriceSchedule.init), at: Date()) {
            state[model].averagePricePer1K = price
        }
        var owners: Set<String> = []
        for (key, entry) in zip(keys, entries) {
            let theirs = entry["plan"]?["attempts"]?.arrayValue?.compactMap { $0["model"]?.stringValue }
            let request = RoutingRequest(
                body: ["messages": [["role": "user", "content": "hello"]]], taskClass: "general", affinityKey: key
            )
            let ours = router.plan(for: request, state: state).attempts.map(\.model.name)
            #expect(entry["affinity_key"]?.stringValue == key)
            #expect(theirs == ours, "key \(key)")
            owners.insert(ours[0])
        }
        #expect(owners.count == 4)
    }

    @Test("models import prints what changed, models list shows the catalog, route --explain reads the database")
    func importListExplain() async throws {
        try await TestDatabase.withMigrated { configuration in
            let url = WorkerProcess.databaseURL(configuration)
            let path = CatalogStoreTests.exampleURL.path
            let imported = try await dispatcher(["models", "import", path, "--database-url", url])
            #expect(imported.status == 0, "\(imported.output)")
            #expect(imported.output.contains("+ model claude-haiku"))
            #expect(
                imported.output.contains("models: 12 added, 0 changed, 0 removed; rules: 7 added, 0 changed, 0 removed")
            )

            let listed = try await dispatcher(["models", "list", "--json", "--database-url", url])
            #expect(listed.status == 0, "\(listed.output)")
            let catalog = try JSONValue(parsing: listed.output)
            #expect(catalog["models"]?.arrayValue?.count == 12)
            #expect(catalog["models"]?[0]?["health"]?["breaker"] == "closed")
            // No cache prices in the example: null, the input price.
            #expect(catalog["models"]?[0]?["price_per_1k_cached_input"] == .null)
            // What a model cannot take (a review found it in `models export` alone).
            let deepseek = catalog["models"]?.arrayValue?.first { $0["name"] == "deepseek-v3" }
            #expect(deepseek?["unsupported"] == ["images"], "\(String(describing: deepseek))")
            #expect(catalog["models"]?.arrayValue?.first { $0["name"] == "gpt-4o" }?["unsupported"] == [])

            // A breaker opened by the error rate says so, not "1 failures in a row".
            let pool = PostgresPool(configuration)
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, reason, opened_at, consecutive_failures)
                VALUES ('claude-haiku', 'open', 'error rate 12.0% over the last 50 requests (limit 2.0%)', now(), 1)
                """)
            await pool.close()
            let text = try await dispatcher(["models", "list", "--database-url", url])
            #expect(text.output.contains("simple_queries"))
            // No model in the example sets a cache price: no cache columns.
            #expect(!text.output.contains("CACHED $/1K"))
            #expect(text.output.contains("TAKES NO"), "\(text.output)")
            let deepseekRow = try #require(text.output.split(separator: "\n").first { $0.hasPrefix("deepseek-v3 ") })
            #expect(deepseekRow.contains(" images "), "\(deepseekRow)")
            #expect(text.output.contains("OPEN (error rate 12.0% over the last 50 requests (limit 2.0%))"), "\(text.output)")
            let relisted = try JSONValue(
                parsing: try await dispatcher(["models", "list", "--json", "--database-url", url]).output)
            let haiku = relisted["models"]?.arrayValue?.first { $0["name"] == "claude-haiku" }
            #expect(haiku?["health"]?["reason"] == "error rate 12.0% over the last 50 requests (limit 2.0%)")
            // A best_quality rule's jobs go to the best-scored model, not the listed primary
            // (deepseek-v3): the order they are tried in, not the listed one with arrows.
            let code = try #require(text.output.split(separator: "\n").first { $0.hasPrefix("code ") }, "\(text.output)")
            #expect(code.contains("best_quality (code score)"), "\(code)")
            // llama-3.1-70b's code score (78) is under the rule's floor (80): it is never tried.
            #expect(code.contains("claude-sonnet → deepseek-v3 → gpt-4o → qwen-2.5-72b (never: llama-3.1-70b, code 78 < floor 80)"), "\(code)")
            let creative = try #require(text.output.split(separator: "\n").first { $0.hasPrefix("creative ") })
            #expect(creative.contains("  claude-sonnet, gpt-4o, llama-3.1-70b  "), "\(creative)")
            #expect(text.output.contains("a, b: as listed, ordered for each job by the strategy"))
            let rules = catalog["rules"]?.arrayValue ?? []
            #expect(rules.first { $0["name"] == "code" }?["order"]?[0] == "claude-sonnet")
            #expect(rules.first { $0["name"] == "simple_queries" }?["order"] == ["gpt-3.5-turbo", "claude-haiku"])
            #expect(rules.first { $0["name"] == "creative" }?["order"] == .null)
            #expect(rules.first { $0["name"] == "code" }?["order"]?.arrayValue?.count == 4)

            let (exported, exportedOutput) = try await dispatcher(
                ["models", "export", "--file", FileManager.default.temporaryDirectory.path, "--database-url", url])
            #expect(exported == 2 && exportedOutput.contains(": Is a directory"), "\(exportedOutput)")

            let explained = try await dispatcher(
                ["route", "--explain", "--prompt", "Write a haiku about autumn", "--database-url", url]
            )
            #expect(explained.status == 0, "\(explained.output)")
            #expect(explained.output.contains("class     creative — heuristic: creative writing (\"write\")"))
            #expect(explained.output.contains("rule      creative — the rule named \"creative\""))
            #expect(!explained.output.contains("policy"))

            // A background request within the background ceiling, as a worker would plan it: the
            // plan without it named models the worker would not call.
            #expect(try await dispatcher(["background", "ceiling", "0.0005", "--database-url", url]).status == 0)
            let background = try await dispatcher(
                ["route", "--explain", "--prompt", "Write a haiku about autumn", "--priority", "background",
                 "--database-url", url])
            #expect(background.status == 0, "\(background.output)")
            #expect(background.output.contains(
                "plan      none: no model of its rule is within the background ceiling of $0.0005/1K"), "\(background.output)")
            #expect(background.output.contains("transient; it waits for a model within them"), "\(background.output)")
            #expect(background.output.contains(
                "policy    background ceiling $0.0005/1K: put back without spending an attempt, until a model fits"),
                "\(background.output)")
            let json = try await dispatcher(
                ["route", "--explain", "--json", "--prompt", "Write a haiku about autumn", "--priority", "background",
                 "--database-url", url])
            let plan = try JSONValue(parsing: json.output)
            #expect(plan["attempts"]?.arrayValue?.isEmpty == true)
            #expect(plan["background"]?["limits"] == "ceiling $0.0005/1K")
            // Paused: it waits, whatever the price (a cost walkthrough was told "runs now").
            #expect(try await dispatcher(["background", "pause", "--database-url", url]).status == 0)
            let paused = try await dispatcher(
                ["route", "--explain", "--prompt", "Write a haiku about autumn", "--priority", "background",
                 "--database-url", url])
            #expect(paused.output.contains(
                "policy    background paused, ceiling $0.0005/1K: waits until dispatcher background resume"),
                "\(paused.output)")
            // The plan it will have on resume, within the ceiling (a verification pass saw a model over it).
            #expect(paused.output.contains("is over the cost ceiling $0.0005/1K") && !paused.output.contains("kept:"),
                    "\(paused.output)")
            #expect(try await dispatcher(["background", "resume", "--database-url", url]).status == 0)
            #expect(try await dispatcher(["background", "ceiling", "none", "--database-url", url]).status == 0)
            // Alone, the status (it printed the help and exited 2).
            let alone = try await dispatcher(["background", "--database-url", url])
            #expect(alone.status == 0 && alone.output.contains("pace:"), "\(alone.output)")
            let cleared = try await dispatcher(
                ["route", "--explain", "--prompt", "Write a haiku about autumn", "--priority", "background",
                 "--database-url", url])
            #expect(!cleared.output.contains("policy") && !cleared.output.contains("plan      none"), "\(cleared.output)")
        }
    }

    @Test("models disable takes models out of every plan and enable puts them back; a rule's last one needs --force")
    func disableAndEnable() async throws {
        try await TestDatabase.withMigrated { configuration in
            let url = WorkerProcess.databaseURL(configuration)
            #expect(try await dispatcher(["models", "import", CatalogStoreTests.exampleURL.path, "--database-url", url]).status == 0)
            let pool = PostgresPool(configuration)
            defer { Task { await pool.close() } }
            func enabled(_ model: String) async throws -> Bool {
                try await pool.query("SELECT enabled FROM switchyard.models WHERE name = $1", [model]).scalar(Bool.self)
            }
            let notifications = try await pool.listen(on: [CatalogStore.channel])

            let disabled = try await dispatcher(["models", "disable", "gpt-4", "--database-url", url])
            #expect(disabled.status == 0, "\(disabled.output)")
            #expect(disabled.output.contains("gpt-4: disabled; workers pass it over as they reload the catalog"))
            #expect(try await enabled("gpt-4") == false)
            let cue = await firstNotification(notifications)
            #expect(cue != nil)  // the workers' cue to reload
            let plan = Router(catalog: try await CatalogStore(pool: pool).load())
                .plan(for: RoutingRequest(body: ["messages": [["role": "user", "content": "hi"]]], taskClass: "complex_reasoning"),
                      state: RoutingState())
            #expect(plan.attempts.map(\.model.name) == ["claude-opus"])
            // models list marks it in every rule's row, those that order per job too (a review read
            // a disabled model in the default rule's list as one it used).
            #expect(try await dispatcher(["models", "disable", "llama-3.1-70b", "--database-url", url]).status == 0)
            let listed = try await dispatcher(["models", "list", "--database-url", url]).output
            let defaultRow = listed.split(separator: "\n").first { $0.hasPrefix("default ") }.map(String.init) ?? ""
            #expect(defaultRow.contains("gpt-4o-mini, claude-haiku, gpt-3.5-turbo (never: llama-3.1-70b, disabled)"),
                    "\(listed)")
            #expect(try await dispatcher(["models", "enable", "llama-3.1-70b", "--database-url", url]).status == 0)

            // The rule's last enabled model: refused, nothing written; with --force, done and warned of.
            let refused = try await dispatcher(["models", "disable", "claude-opus", "gpt-4", "--database-url", url])
            #expect(refused.status == 2)
            #expect(refused.output.contains(
                "disabling claude-opus, gpt-4 would leave rule complex_reasoning unable to route its jobs, which would "
                    + "fail: every model of the rule is disabled (gpt-4, claude-opus): its jobs cannot be routed; nothing "
                    + "was changed"), "\(refused.output)")
            #expect(refused.output.contains("pass --force"))
            #expect(try await enabled("claude-opus"))
            // The same said on stdout as JSON for a script.
            let refusedJSON = try await dispatcher(["models", "disable", "claude-opus", "gpt-4", "--json", "--database-url", url])
            #expect(refusedJSON.status == 2)
            let output = refusedJSON.output
            let problems = try JSONValue(parsing: String(output[output.firstIndex(of: "{")!...output.lastIndex(of: "}")!]))
            #expect(problems["changed"] == [] && problems["problems"]?[0]?["message"]?.stringValue?.hasPrefix(
                "disabling claude-opus, gpt-4 would leave rule complex_reasoning") == true, "\(refusedJSON.output)")
            // Nor the last model that reaches a rule's quality floor: code's floor is 80, and only
            // llama-3.1-70b (code 78) would be left of deepseek-v3, claude-sonnet, gpt-4o, qwen-2.5-72b.
            let floor = try await dispatcher(
                ["models", "disable", "deepseek-v3", "claude-sonnet", "gpt-4o", "qwen-2.5-72b", "--database-url", url])
            #expect(floor.status == 2)
            #expect(floor.output.contains("would leave rules code, multilingual unable to route their jobs"),
                    "\(floor.output)")
            #expect(floor.output.contains("code: no enabled model of the rule reaches its quality_floor 80"), "\(floor.output)")
            #expect(try await enabled("deepseek-v3"))
            let forced = try await dispatcher(["models", "disable", "claude-opus", "gpt-4", "--force", "--json", "--database-url", url])
            #expect(forced.status == 0, "\(forced.output)")
            let json = try JSONValue(parsing: String(forced.output[forced.output.firstIndex(of: "{")!...]))
            #expect(json["changed"] == ["claude-opus"] && json["unchanged"] == ["gpt-4"] && json["enabled"] == false)
            #expect(json["warnings"]?[0]?.stringValue?.hasPrefix(
                "routing_rules.complex_reasoning: every model of the rule is disabled (gpt-4, claude-opus)") == true)
            let none = try await dispatcher(["models", "list", "--database-url", url]).output
            #expect(none.contains("none (never: gpt-4, disabled; claude-opus, disabled)"), "\(none)")

            // Unknown names: refused whole, with the catalog's names.
            let unknown = try await dispatcher(["models", "disable", "gpt-5", "gpt-4o", "--database-url", url])
            #expect(unknown.status == 2)
            #expect(unknown.output.contains("the catalog has no model \"gpt-5\"; nothing was changed"), "\(unknown.output)")
            #expect(unknown.output.contains("Its models: claude-haiku, claude-opus,"))
            #expect(try await enabled("gpt-4o"))

            // Back in: one whose breaker is open says it is passed over until its probes answer.
            try await pool.query(
                """
                INSERT INTO switchyard.model_health (model, state, opened_at, reason)
                VALUES ('gpt-4', 'open', now(), '5 failures in a row')
                """)
            let back = try await dispatcher(["models", "enable", "gpt-4", "claude-opus", "gpt-4o", "--database-url", url])
            #expect(back.status == 0, "\(back.output)")
            #expect(back.output.contains(
                "gpt-4: enabled; its breaker is open (5 failures in a row), so plans pass it over until it half-opens and its probes answer"),
                "\(back.output)")
            #expect(back.output.contains("claude-opus: enabled; workers plan with it as they reload the catalog"))
            #expect(back.output.contains("gpt-4o: already enabled"))
            // Already enabled, and still out for its health: said too.
            let again = try await dispatcher(["models", "enable", "gpt-4", "--database-url", url])
            #expect(again.output.contains("gpt-4: already enabled; its breaker is open (5 failures in a row)"), "\(again.output)")
            try await pool.query("UPDATE switchyard.models SET enabled = false WHERE name = 'gpt-4'")
            let backJSON = try JSONValue(parsing: try await dispatcher(["models", "enable", "gpt-4", "--json", "--database-url", url]).output)
            #expect(backJSON["breakers"]?["gpt-4"]?["state"] == "open" && backJSON["breakers"]?["gpt-4"]?["reason"] == "5 failures in a row",
                    "\(backJSON)")
            let both = (try await enabled("gpt-4"), try await enabled("claude-opus"))
            #expect(both == (true, true))
            #expect(try await dispatcher(["models", "enable", "--force", "gpt-4", "--database-url", url]).status == 2)
        }
    }

    @Test("models import warns of a simulated setting it does not know, on stderr and in --json")
    func unknownSimulatedSettingWarning() async throws {
        try await TestDatabase.withMigrated { configuration in
            let url = WorkerProcess.databaseURL(configuration)
            let text = """
                {"models": {"m": {"provider": "simulated", "settings": {"latency_p50": 100}}},
                 "routing_rules": {"default": {"primary": "m"}}}
                """
            let warning =
                "models.m.settings.latency_p50: unknown simulated setting, ignored (did you mean \"latency_p50_ms\"?)"
            try await withFile(text) { path in
                let dryRun = try await dispatcher(["models", "import", path, "--dry-run", "--database-url", url])
                #expect(dryRun.status == 0, "\(dryRun.output)")
                #expect(dryRun.output.contains("warning: \(warning)"), "\(dryRun.output)")
                let json = try await dispatcher(["models", "import", path, "--json", "--database-url", url])
                #expect(json.status == 0, "\(json.output)")
                #expect(try JSONValue(parsing: json.output)["warnings"] == [.string(warning)], "\(json.output)")
            }
        }
    }

    @Test("an invalid file exits 2 and lists every problem; nothing is written")
    func invalidImport() async throws {
        try await TestDatabase.withMigrated { configuration in
            let url = WorkerProcess.databaseURL(configuration)
            let text = """
                {"models": {"m": {"provider": "simulated", "wieght": 2}},
                 "routing_rules": {"r": {"primary": "n", "strategy": "cheap"}}}
                """
            let result = try await withFile(text) { path in
                try await dispatcher(["models", "import", path, "--database-url", url])
            }
            #expect(result.status == 2)
            #expect(result.output.contains("the catalog document has 3 problems:"))
            #expect(result.output.contains("models.m.wieght: unknown field (did you mean \"weight\"?)"))
            #expect(result.output.contains("routing_rules.r.primary: unknown model \"n\""))
            #expect(
                result.output.contains(
                    "routing_rules.r.strategy: unknown strategy \"cheap\" (did you mean \"cheapest\"?)"))
            // With --json, the problems for a script on stdout (they were on stderr only, as text).
            let json = try await withFile(text) { path in
                try await BlockingWork.run {
                    try ChildProcess.run(
                        "/bin/sh",
                        ["-c", "'\(WorkerProcess.binary("dispatcher"))' models import '\(path)' --json --database-url '\(url)' 2>/dev/null"])
                }
            }
            #expect(json.status == 2)
            let outcome = try JSONValue(parsing: json.output)
            #expect(outcome["imported"] == false && outcome["dry_run"] == false, "\(json.output)")
            #expect(outcome["problems"]?.arrayValue?.compactMap { $0["path"]?.stringValue }
                        == ["models.m.wieght", "routing_rules.r.primary", "routing_rules.r.strategy"], "\(json.output)")
            #expect(outcome["problems"]?[0]?["message"] == "unknown field (did you mean \"weight\"?)", "\(json.output)")
            let pool = PostgresPool(configuration, options: .init(maxConnections: 1))
            #expect(try await pool.query("SELECT count(*) FROM switchyard.models").scalar(Int.self) == 0)
            await pool.close()
        }
    }

    @Test("a time zone that is not one is one problem, not a second one from Postgres")
    func unknownZoneOnce() async throws {
        try await TestDatabase.withMigrated { configuration in
            let url = WorkerProcess.databaseURL(configuration)
            let text = """
                {"models": {"m": {"provider": "simulated", "price_windows": [
                    {"start": "22:00", "end": "06:00", "multiplier": 0.5, "time_zone": "Mars/Olympus"}]}},
                 "routing_rules": {"default": {"primary": "m"}}}
                """
            let result = try await withFile(text) { path in
                try await dispatcher(["models", "import", path, "--database-url", url])
            }
            #expect(result.status == 2)
            #expect(result.output.contains("the catalog document has 1 problem:"), "\(result.output)")
        }
    }

    @Test("simulate and demo refuse a database that already has Switchyard data: exit 2, nothing changed")
    func scratchCommandsRefuseUsedDatabase() async throws {
        try await TestDatabase.withMigratedPool { pool in
            let store = QueueStore(pool: pool)
            let real = try await store.submit(Submission(request: ["messages": [["role": "user", "content": "mine"]]]))
            let url = pool.configuration.effectiveConnectionString
            for command in [["simulate", "--jobs", "50"], ["demo", "--jobs", "50"]] {
                let (status, output) = try await dispatcher(command + ["--database-url", url])
                #expect(status == 2, "\(command): \(output)")
                #expect(output.contains("already has Switchyard jobs, results or a model catalog"), "\(output)")
                #expect(output.contains("DATABASE_URL unset"), "\(output)")
                // Refused before the simulation runs, not after.
                #expect(!output.contains("simulating"), "\(output)")
            }
            #expect(try await store.status(of: real) == "queued")
            #expect(try await pool.query("SELECT count(*) FROM switchyard.results").scalar(Int.self) == 0)
            #expect(try await pool.query("SELECT count(*) FROM switchyard.models").scalar(Int.self) == 0)
        }
    }

    @Test("on a database without the schema, a command says to run dispatcher migrate")
    func unmigratedDatabase() async throws {
        try await TestDatabase.withEmpty { configuration in
            let (status, output) = try await dispatcher(
                ["submit", "--prompt", "hi", "--database-url", configuration.effectiveConnectionString])
            #expect(status == 1, "\(output)")
            #expect(output.contains("run `dispatcher migrate`"), "\(output)")
        }
    }

    @Test("migrate names a tenant mapping to a role that does not exist (made before roles were checked)")
    func migrateWarnsOfOrphanMappings() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            try await Migrator(migrations: Array(Migration.all.prefix(40))).migrate(pool)
            try await pool.query("INSERT INTO switchyard.tenant_roles (role, tenant) VALUES ('llm_gateway_gone', '*')")
            await pool.close()
            let (status, output) = try await dispatcher(["migrate", "--database-url", configuration.effectiveConnectionString])
            #expect(status == 0, "\(output)")
            #expect(output.contains(
                "warning: switchyard.tenant_roles maps role llm_gateway_gone to tenant '*', and no such role exists"),
                "\(output)")
        }
    }

    @Test("on a database a release behind, background settings are refused before anything is written")
    func backgroundOnOlderSchema() async throws {
        try await TestDatabase.withEmpty { configuration in
            let pool = PostgresPool(configuration)
            try await Migrator(migrations: Array(Migration.all.prefix(18))).migrate(pool)
            let (status, output) = try await dispatcher(
                ["background", "drain", "--until", "2h", "--database-url", configuration.effectiveConnectionString])
            #expect(status == 1, "\(output)")
            // The release's schema, in case an older `dispatcher` first on PATH says "up to date".
            #expect(output.contains("this binary needs version \(Migration.all.count)")
                        && output.contains("Run `dispatcher migrate` of this release (schema \(Migration.all.count),"),
                    "\(output)")
            #expect(!output.contains("draining"), "\(output)")
            let drain = try await pool.query(
                "SELECT value FROM switchyard.settings WHERE name = 'background_drain_until'").scalar(String.self)
            #expect(drain == "")
            // The catalog commands too (they said "column … does not exist", with no hint).
            for command in [["models", "list"], ["route", "--explain", "--prompt", "hi"], ["prune", "--older-than", "30d"]] {
                let (status, output) = try await dispatcher(
                    command + ["--database-url", configuration.effectiveConnectionString])
                #expect(status == 1 && output.contains("Run `dispatcher migrate`"), "\(command): \(output)")
            }
            await pool.close()
        }
    }

    @Test("both binaries print their version, which names the schema; an option before the command says where it goes")
    func versionAndOptionPlace() async throws {
        let (status, output) = try await dispatcher(["--version"])
        #expect(status == 0 && output == "dispatcher \(SwitchyardVersion.current)\n", "\(output)")
        #expect(SwitchyardVersion.current.hasSuffix("+schema.\(Migration.all.count)"))
        let worker = WorkerProcess.binary("worker")
        let (workerStatus, workerOutput) = try await BlockingWork.run { try ChildProcess.run(worker, ["--version"]) }
        #expect(workerStatus == 0 && workerOutput == "worker \(SwitchyardVersion.current)\n", "\(workerOutput)")
        let (misplaced, hint) = try await dispatcher(["--database-url", "host=/nowhere", "status"])
        #expect(misplaced == 2 && hint.contains("--database-url comes after a command"), "\(hint)")
    }

    @Test("a JSONL file with no jobs in it is an error, not \"submitted 0\"")
    func emptySubmission() async throws {
        try await TestDatabase.withMigrated { configuration in
            try await withFile("\n  \n") { path in
                let (status, output) = try await dispatcher(
                    ["submit", "--file", path, "--database-url", configuration.effectiveConnectionString])
                #expect(status == 2, "\(output)")
                #expect(output.contains("nothing to submit"), "\(output)")
                #expect(!output.contains("submitted 0"), "\(output)")
            }
        }
    }

    @Test("a JSONL file saved with a byte order mark is read; a repeated idempotency key is counted as one job")
    func byteOrderMarkAndRepeats() async throws {
        try await TestDatabase.withMigrated { configuration in
            let lines = [
                #"{"messages":[{"role":"user","content":"a"}]}"#,
                #"{"request":{"messages":[{"role":"user","content":"b"}]},"idempotency_key":"k1"}"#,
                #"{"request":{"messages":[{"role":"user","content":"b"}]},"idempotency_key":"k1"}"#,
            ]
            try await withFile("\u{FEFF}" + lines.joined(separator: "\n") + "\n") { path in
                let (status, output) = try await dispatcher(
                    ["submit", "--file", path, "--database-url", configuration.effectiveConnectionString])
                #expect(status == 0, "\(output)")
                #expect(output.contains("submitted 3, rejected 0 (2 new jobs: 1 line repeats"), "\(output)")
                // The ids, for dispatcher wait (a walkthrough's run printed counts alone).
                #expect(output.split(separator: "\n").contains { $0.hasPrefix("ids ") && $0.split(separator: " ").count == 3 }, "\(output)")
                // Run again: the keyed lines name the job from the first run (a review's re-run said
                // "submitted 2" with nothing made); the line without a key makes a new job.
                let (again, againOutput) = try await dispatcher(
                    ["submit", "--file", path, "--database-url", configuration.effectiveConnectionString])
                #expect(again == 0, "\(againOutput)")
                #expect(
                    againOutput.contains(
                        "submitted 3, rejected 0 (1 new job: 1 line repeats an earlier line's idempotency key, and "
                            + "names its job; 1 key names a job submitted before)"), "\(againOutput)")
                let (_, json) = try await dispatcher(
                    ["submit", "--file", path, "--json", "--database-url", configuration.effectiveConnectionString])
                let summary = try JSONValue(parsing: json)
                #expect(summary["new_jobs"] == 1 && summary["jobs"] == 2 && summary["submitted"] == 3, "\(json)")
            }
            // One job with a key: a repeat says its job is from before (its id alone read as new).
            let url = configuration.effectiveConnectionString
            let (_, first) = try await dispatcher(["submit", "--prompt", "d", "--idempotency-key", "k2", "--json", "--database-url", url])
            #expect(try JSONValue(parsing: first)["new"] == true, "\(first)")
            let (repeatStatus, repeated) = try await dispatcher(["submit", "--prompt", "d", "--idempotency-key", "k2", "--database-url", url])
            #expect(repeatStatus == 0 && repeated.contains("is from before: its idempotency key named it"), "\(repeated)")
            // The key with another request is that line's error, not a repeat of job k1's.
            try await withFile(#"{"request":{"messages":[{"role":"user","content":"c"}]},"idempotency_key":"k1"}"# + "\n") { path in
                let (status, output) = try await dispatcher(
                    ["submit", "--file", path, "--database-url", configuration.effectiveConnectionString])
                #expect(status == 2 && output.contains("line 1: idempotency_key 'k1' already names job"), "\(output)")
            }
        }
    }

    /// A walkthrough's `--class nosuchclass` went to the default rule unsaid.
    @Test("a class no rule serves is submitted with a warning that the default rule routes it")
    func unservedClass() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(#"{"models": {"m": {"provider": "simulated"}}, "routing_rules": {"default": {"primary": "m"}, "code": {"primary": "m"}}}"#.utf8))
            let url = pool.configuration.effectiveConnectionString
            let (status, output) = try await dispatcher(["submit", "--prompt", "hi", "--class", "cdoe", "--database-url", url])
            #expect(status == 0 && output.contains("warning: no rule serves class 'cdoe': the default rule routes it"), "\(output)")
            for served in ["code", "general"] {
                let (_, quiet) = try await dispatcher(["submit", "--prompt", "hi", "--class", served, "--database-url", url])
                #expect(!quiet.contains("warning"), "\(quiet)")
            }
        }
    }

    @Test("submit flags that cannot work together or do not parse are refused before the database is asked")
    func submitFlagErrors() async throws {
        let unreachable = "host=/nonexistent-socket-dir"
        let (early, tooEarly) = try await dispatcher(
            ["submit", "--prompt", "hi", "--deadline", "10m", "--run-at", "1h", "--database-url", unreachable])
        #expect(early == 2 && tooEarly.contains("--deadline") && tooEarly.contains("must come after --run-at"), "\(tooEarly)")
        let (bad, badJSON) = try await dispatcher(
            ["submit", "--prompt", "hi", "--metadata", "{bad", "--database-url", unreachable])
        #expect(bad == 2 && badJSON.contains("--metadata: not valid JSON"), "\(badJSON)")
        let (lone, loneTimeout) = try await dispatcher(
            ["submit", "--prompt", "hi", "--timeout", "5m", "--database-url", unreachable])
        #expect(lone == 2 && loneTimeout.contains("--timeout applies to --wait"), "\(loneTimeout)")
        // Refused after the insert, it left a job behind.
        let (waiting, badTimeout) = try await dispatcher(
            ["submit", "--prompt", "hi", "--wait", "--timeout", "abc", "--database-url", unreachable])
        #expect(waiting == 2 && badTimeout.contains("--timeout must be a duration"), "\(badTimeout)")
        let (many, manyWait) = try await dispatcher(
            ["submit", "--file", "jobs.jsonl", "--wait", "--database-url", unreachable])
        #expect(many == 2 && manyWait.contains("--wait waits for one job"), "\(manyWait)")
        // One key for many lines would have made every line after the first a repeat of it.
        let (keyed, keyedFile) = try await dispatcher(
            ["submit", "--file", "jobs.jsonl", "--idempotency-key", "k", "--database-url", unreachable])
        #expect(keyed == 2 && keyedFile.contains("--idempotency-key names one job"), "\(keyedFile)")
        let (twice, twicePrompt) = try await dispatcher(
            ["submit", "--prompt", "a", "--prompt", "b", "--database-url", unreachable])
        #expect(twice == 2 && twicePrompt.contains("--prompt is given twice (\"a\", then \"b\")"), "\(twicePrompt)")
        let (typo, typoOutput) = try await dispatcher(["--verison"])
        #expect(typo == 2 && typoOutput.contains("unknown option --verison (did you mean --version?)"), "\(typoOutput)")
        let (help, helpOutput) = try await dispatcher(["help", "submit"])
        #expect(help == 0 && helpOutput.hasPrefix("usage: dispatcher submit"), "\(helpOutput)")
        let (tiers, tiersNone) = try await dispatcher(["simulate", "--tiers", "none"])
        #expect(tiers == 2 && tiersNone.contains("--tiers none would allow only a tier named \"none\""), "\(tiersNone)")
        let (simulated, negative) = try await dispatcher(["simulate", "--ceiling", "-1"])
        #expect(simulated == 2 && negative.contains("--ceiling must be a price like 0.002"), "\(negative)")
        // Found after the run, the figures of a long benchmark were lost.
        let directory = FileManager.default.temporaryDirectory.path
        let (bench, benchJSON) = try await dispatcher(["bench", "routing", "--json", directory])
        #expect(bench == 2 && benchJSON.contains("cannot write \(directory): Is a directory; nothing was run"), "\(benchJSON)")
        let (cancel, cancelJSON) = try await dispatcher(["cancel", "1", "--json", "--database-url", unreachable])
        #expect(cancel == 2 && cancelJSON.contains("unknown option --json"), "\(cancelJSON)")
        // A models command's option given to another was taken and ignored (export --dry-run wrote
        // its file; list --file wrote none).
        for (words, expected) in [
            (["models", "export", "--dry-run", "--file", "x.json"], "--dry-run is for dispatcher models import, not export"),
            (["models", "list", "--file", "x.json"], "--file is for dispatcher models export, not list"),
            (["models", "prices", "--merge"], "--merge is for dispatcher models import, not prices"),
            (["models", "import", "c.json", "--at", "8h"], "--at is for dispatcher models prices, not import"),
        ] {
            let (status, output) = try await dispatcher(words + ["--database-url", unreachable])
            #expect(status == 2 && output.contains(expected) && output.contains("nothing was done"), "\(words): \(output)")
        }
        #expect(!FileManager.default.fileExists(atPath: "x.json"))
    }

    @Test("background ceiling: a price with trailing junk is refused; a tier no model has is warned about")
    func backgroundCeilingInput() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(CatalogStoreTests.example)
            let url = pool.configuration.effectiveConnectionString
            let (junk, junkOutput) = try await dispatcher(["background", "ceiling", "0.001abc", "--database-url", url])
            #expect(junk == 2 && junkOutput.contains("the ceiling must be a price"), "\(junkOutput)")
            let (none, noneOutput) = try await dispatcher(["background", "ceiling", "none", "--tiers", "none", "--database-url", url])
            #expect(none == 2 && noneOutput.contains("--tiers none would allow only a tier named \"none\""), "\(noneOutput)")
            // Every tier named unknown: no background job could run, so refused, nothing changed (a cost
            // walkthrough's typo closed the gate for all background work, with a warning).
            let (status, output) = try await dispatcher(
                ["background", "ceiling", "0.002", "--tiers", "chaep", "--database-url", url])
            #expect(status == 2, "\(output)")
            #expect(output.contains(#"no model in the catalog has tier "chaep" (did you mean "cheap"?): no background job could run; nothing was changed"#), "\(output)")
            #expect(try await pool.query(
                "SELECT count(*) FROM switchyard.settings WHERE name IN ('background_tiers', 'background_max_cost_per_1k') AND value <> ''"
            ).scalar(Int.self) == 0)
            // One of several unknown: taken, with a warning.
            let (partly, partlyOutput) = try await dispatcher(
                ["background", "ceiling", "0.001", "--tiers", "cheap,chaep", "--database-url", url])
            #expect(partly == 0, "\(partlyOutput)")
            #expect(partlyOutput.contains(#"warning: no model in the catalog has tier "chaep" (did you mean "cheap"?)"#), "\(partlyOutput)")
            let (two, twoOutput) = try await dispatcher(["background", "ceiling", "0.001", "0.002", "--database-url", url])
            #expect(two == 2 && twoOutput.contains("ceiling takes one price (got 0.001 0.002)"), "\(twoOutput)")
            // status --json: the figures, the ceiling and tiers with them.
            let (json, jsonOutput) = try await dispatcher(["background", "status", "--json", "--database-url", url])
            #expect(json == 0, "\(jsonOutput)")
            let figures = try JSONValue(parsing: jsonOutput)
            #expect(figures["max_cost_per_1k"] == "0.001" && figures["tiers"] == ["chaep", "cheap"], "\(jsonOutput)")
            // More decimal places than a price has, as the catalog's: refused the same way.
            let (fine, fineOutput) = try await dispatcher(["background", "ceiling", "0.00000000001", "--database-url", url])
            #expect(fine == 2 && fineOutput.contains("at most 10 decimal places"), "\(fineOutput)")
            // Tiers are stored without the spaces around them.
            let (spaced, spacedOutput) = try await dispatcher(
                ["background", "ceiling", "0.001", "--tiers", "cheap, premium", "--database-url", url])
            #expect(spaced == 0 && !spacedOutput.contains("warning"), "\(spacedOutput)")
            #expect(
                try await pool.query("SELECT value FROM switchyard.settings WHERE name = 'background_tiers'")
                    .scalar(String.self) == "cheap,premium")
            // A word where none belongs, and a drain past the longest duration, say what is wrong.
            let (extra, extraOutput) = try await dispatcher(["background", "pause", "now", "--database-url", url])
            #expect(extra == 2 && extraOutput.contains("takes no words after it"), "\(extraOutput)")
            let (far, farOutput) = try await dispatcher(["background", "drain", "--until", "99999d", "--database-url", url])
            #expect(far == 2 && farOutput.contains("at most 36500d"), "\(farOutput)")
            // An option of another action is refused, not ignored (pause --until 1h paused for good).
            let (until, untilOutput) = try await dispatcher(["background", "pause", "--until", "1h", "--database-url", url])
            #expect(until == 2 && untilOutput.contains("--until is for dispatcher background drain"), "\(untilOutput)")
            let (tiers, tiersOutput) = try await dispatcher(
                ["background", "drain", "--until", "1m", "--tiers", "cheap", "--database-url", url])
            #expect(tiers == 2 && tiersOutput.contains("--tiers is for dispatcher background ceiling"), "\(tiersOutput)")
            #expect(try await pool.query(
                "SELECT count(*) FROM switchyard.settings WHERE name IN ('background_paused', 'background_drain_until') AND value NOT IN ('', 'false')"
            ).scalar(Int.self) == 0)
            // The same for the other commands' options of one mode.
            let (since, sinceOutput) = try await dispatcher(["report", "--html", "-", "--since", "1h", "--database-url", url])
            #expect(since == 2 && sinceOutput.contains("--since is for report savings"), "\(sinceOutput)")
            let (list, listOutput) = try await dispatcher(["feedback", "--list", "5", "--database-url", url])
            #expect(list == 2 && listOutput.contains("--list takes no job"), "\(listOutput)")
        }
    }
    /// A review's `best_quality` rules named `complex_reasoning` and `simple_queries` were listed
    /// by a capability named after the rule, which no model has: the listed order, while the router
    /// scored them by `reasoning` and `simple`/`factual`, and put another model first.
    @Test("models list orders a best_quality rule by the class the router scores its jobs by")
    func fixedPlanScoringClass() throws {
        var document = try JSONValue(parsing: String(decoding: CatalogStoreTests.example, as: UTF8.self))
        for name in ["complex_reasoning", "simple_queries", "default"] {
            document["routing_rules"]?[name]?["strategy"] = "best_quality"
        }
        document["routing_rules"]?["default"]?["strategy_without_affinity"] = nil
        let parsed = try CatalogDocument(parsing: Data(document.jsonText.utf8))
        let catalog = Catalog(models: parsed.models ?? [], rules: parsed.rules ?? [])
        func plan(_ name: String) -> CatalogListing.FixedPlan? {
            catalog.rules.first { $0.taskClass == name }.flatMap { CatalogListing.fixedPlan(of: $0, in: catalog) }
        }
        #expect(plan("complex_reasoning")?.scoring == .reasoning)
        #expect(plan("complex_reasoning")?.order == ["claude-opus", "gpt-4"])  // reasoning 92 against 90
        #expect(plan("simple_queries")?.scoring == .simple)
        #expect(plan("simple_queries")?.order.first == "claude-haiku")
        // The default rule takes every class no other rule does: no one order.
        #expect(plan("default") == nil)

        // A review: gpt-4 ($0.045/1K, no windows) in a rule held to $0.002/1K, and an ordered
        // rule with a floor but jobs of several classes, were drawn as tried.
        document["routing_rules"]?["simple_queries"]?["strategy"] = "ordered"
        document["routing_rules"]?["simple_queries"]?["fallback"] = ["claude-haiku", "gpt-4"]
        document["routing_rules"]?["default"]?["strategy"] = "ordered"
        document["routing_rules"]?["default"]?["quality_floor"] = 80
        let second = try CatalogDocument(parsing: Data(document.jsonText.utf8))
        let changed = Catalog(models: second.models ?? [], rules: second.rules ?? [])
        let simple = try #require(changed.rules.first { $0.taskClass == "simple_queries" })
        let capped = try #require(CatalogListing.fixedPlan(of: simple, in: changed))
        #expect(capped.order == ["gpt-3.5-turbo", "claude-haiku"], "\(capped)")
        #expect(capped.never.map(\.model) == ["gpt-4"] && capped.never[0].reason.contains("> ceiling $0.002/1K"), "\(capped)")
        let floored = try #require(changed.rules.first { $0.taskClass == "default" })
        #expect(CatalogListing.fixedPlan(of: floored, in: changed) == nil)
        let text = CatalogListing.text(catalog, health: [:])
        #expect(text.contains("best_quality (reasoning score)"), "\(text)")
    }

    @Test("models list shows cache prices when a model sets one: its own, or the input price it falls back to")
    func listsCachePrices() async throws {
        try await TestDatabase.withMigrated { configuration in
            let url = WorkerProcess.databaseURL(configuration)
            let file = FileManager.default.temporaryDirectory.appending(path: "cache-prices-\(UUID()).json")
            defer { try? FileManager.default.removeItem(at: file) }
            try Data(
                """
                {"models": {"claude": {"provider": "simulated", "price_per_1k_input": 0.003, "price_per_1k_output": 0.015,
                                       "price_per_1k_cached_input": 0.0003, "price_per_1k_cache_write": 0.00375},
                            "plain": {"provider": "simulated", "price_per_1k_input": 0.002, "price_per_1k_output": 0.004}},
                 "routing_rules": {"default": {"primary": "claude", "fallback": "plain"}}}
                """.utf8
            ).write(to: file)
            let imported = try await dispatcher(["models", "import", file.path, "--database-url", url])
            #expect(imported.status == 0 && imported.output.contains("catalog now has 2 models and 1 rule\n"), "\(imported.output)")
            let listed = try await dispatcher(["models", "list", "--database-url", url])
            let lines = listed.output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(lines.first?[3...6] == ["IN", "$/1K", "OUT", "$/1K"])
            #expect(lines.first?.contains("CACHED") == true && lines.first?.contains("WRITE") == true)
            #expect(lines.first { $0.first == "claude" }?[3...7] == ["0.003", "0.015", "0.0003", "0.00375", "8192"])
            #expect(lines.first { $0.first == "plain" }?[3...7] == ["0.002", "0.004", "0.002", "0.002", "8192"])
        }
    }
}
