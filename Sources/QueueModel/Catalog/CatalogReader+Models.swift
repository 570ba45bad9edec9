import Foundation

extension CatalogReader {
    /// The fields a model may have, in documentation order.
    static let modelFields = [
        "name", "provider", "base_url", "api_key_env", "upstream_model", "tier", "price_per_1k_input",
        "price_per_1k_output", "price_per_1k_cached_input", "price_per_1k_cache_write", "price_windows",
        "context_window", "capabilities", "weight", "max_concurrency", "requests_per_minute", "tokens_per_minute",
        "enabled", "settings", "supports",
    ]

    /// Names from LiteLLM and Portkey configs, and what Switchyard calls them.
    static let modelSynonyms = [
        "api_base": "base_url", "base_uri": "base_url", "url": "base_url", "endpoint": "base_url",
        "api_key": "api_key_env (the NAME of an environment variable holding the key, never the key)",
        "model": "upstream_model", "model_name": "name", "kind": "provider", "provider_kind": "provider",
        "input_cost_per_1k": "price_per_1k_input", "output_cost_per_1k": "price_per_1k_output",
        "input_cost_per_token": "price_per_1k_input (per 1,000 tokens)",
        "output_cost_per_token": "price_per_1k_output (per 1,000 tokens)",
        "cache_read_input_token_cost": "price_per_1k_cached_input (per 1,000 tokens)",
        "cache_creation_input_token_cost": "price_per_1k_cache_write (per 1,000 tokens)",
        "max_input_tokens": "context_window", "context_length": "context_window", "max_context": "context_window",
        "rpm": "requests_per_minute", "tpm": "tokens_per_minute", "max_parallel_requests": "max_concurrency",
        "supports_function_calling": "supports.tools", "supports_vision": "supports.images",
        "supports_response_schema": "supports.json_output",
    ]

    /// The most a Postgres `integer` column holds (2,147,483,647): the upper bound of any whole
    /// number stored in one, so that the import, not the database, refuses a larger one.
    static let largestInteger = Int(Int32.max)

    /// The tiers (price classes) the examples and documentation use; others are allowed.
    static let knownTiers = ["premium", "standard", "cheap", "open_source"]

    /// Reads the `models` section: an object keyed by model name, or an array of models with `name`.
    mutating func models(_ node: JSONNode, at path: String) -> [ModelSpec] {
        var entries: [(name: String?, node: JSONNode, path: String)] = []
        switch node {
        case .object(let members):
            var seen: Set<String> = []
            for member in members {
                let entryPath = Self.join(path, member.key)
                if !seen.insert(member.key).inserted {
                    problem(entryPath, "model \"\(member.key)\" is defined twice", hint: "keep one definition")
                    continue
                }
                entries.append((member.key, member.value, entryPath))
            }
        case .array(let elements):
            for (index, element) in elements.enumerated() { entries.append((nil, element, "\(path)[\(index)]")) }
        default:
            problem(path, "expected an object of models keyed by name, got \(node.typeName)")
        }
        var models: [ModelSpec] = []
        var names: Set<String> = []
        var lowercased: [String: String] = [:]
        for entry in entries {
            if let name = entry.name ?? entry.node.members?.first(where: { $0.key == "name" })?.value.stringValue {
                definedModelNames.insert(name)
            }
            guard let model = model(entry.node, named: entry.name, at: entry.path) else { continue }
            if !names.insert(model.name).inserted {
                problem(entry.path, "model \"\(model.name)\" is defined twice", hint: "keep one definition")
                continue
            }
            // Names are case-sensitive: "oa-mini" and "OA-MINI" are two models, seldom what was meant.
            if let other = lowercased[model.name.lowercased()] {
                warning(
                    entry.path, "model \"\(model.name)\" differs from \"\(other)\" only in case: they are two models",
                    hint: "rename one, or keep one definition")
            } else {
                lowercased[model.name.lowercased()] = model.name
            }
            models.append(model)
        }
        return models
    }

    private mutating func model(_ node: JSONNode, named key: String?, at path: String) -> ModelSpec? {
        let before = problems.count
        guard let fields = members(node, at: path, allowed: Self.modelFields, synonyms: Self.modelSynonyms) else {
            return nil
        }
        var name = key
        if let given = string(fields["name"], at: Self.join(path, "name"), required: key == nil) {
            if let key, given != key {
                problem(
                    Self.join(path, "name"), "\"\(given)\" differs from the key \"\(key)\"",
                    hint: "make them equal, or drop \"name\"")
            }
            name = given
        }
        if let name, !Self.isValidName(name) {
            problem(
                key == nil ? Self.join(path, "name") : path, "\"\(name)\" is not a usable model name",
                hint: "use ASCII letters and digits and . _ - : / @ only, at most 200 characters"
            )
        }
        let providerPath = Self.join(path, "provider")
        var provider: ProviderKind?
        if let text = string(fields["provider"], at: providerPath, required: true) {
            provider = ProviderKind(rawValue: text)
            if provider == nil {
                let kinds = ProviderKind.allCases.map(\.rawValue)
                problem(
                    providerPath, "unknown provider \"\(text)\"\(CatalogProblem.didYouMean(text, among: kinds))",
                    hint: "use one of \(kinds.joined(separator: ", ")) (openai covers any OpenAI-compatible endpoint)"
                )
            }
        }
        let baseURL = baseURL(fields["base_url"], at: Self.join(path, "base_url"))
        let apiKeyEnv = environmentName(fields["api_key_env"], at: Self.join(path, "api_key_env"))
        // A key sent in clear to another machine: warned, not refused (a private network may be
        // meant), as a walkthrough's plain http:// base URL with a key imported without a word.
        if let baseURL, apiKeyEnv != nil, let url = URLComponents(string: baseURL), url.scheme?.lowercased() == "http",
            let host = url.host?.lowercased(), !Self.isLoopback(host)
        {
            warning(
                Self.join(path, "base_url"),
                "sends the key in \(apiKeyEnv!) unencrypted (http:// to \(host))",
                hint: "use https:// unless the network between the workers and \(host) is private")
        }
        let upstream = string(fields["upstream_model"], at: Self.join(path, "upstream_model"))
        let tier = string(fields["tier"], at: Self.join(path, "tier"))
        let capabilities = capabilities(fields["capabilities"], at: Self.join(path, "capabilities"))
        let spec = ModelSpec(
            name: name ?? "", provider: provider ?? .simulated, baseURL: baseURL, apiKeyEnv: apiKeyEnv,
            upstreamModel: upstream, tier: tier ?? "standard",
            pricePer1KInput: decimal(fields["price_per_1k_input"], at: Self.join(path, "price_per_1k_input")) ?? 0,
            pricePer1KOutput: decimal(fields["price_per_1k_output"], at: Self.join(path, "price_per_1k_output")) ?? 0,
            pricePer1KCachedInput: decimal(
                fields["price_per_1k_cached_input"], at: Self.join(path, "price_per_1k_cached_input")),
            pricePer1KCacheWrite: decimal(
                fields["price_per_1k_cache_write"], at: Self.join(path, "price_per_1k_cache_write")),
            priceWindows: priceWindows(fields["price_windows"], at: Self.join(path, "price_windows")),
            contextWindow: integer(
                fields["context_window"], at: Self.join(path, "context_window"), range: 1...100_000_000, unit: " tokens"
            ) ?? 8192,
            capabilities: capabilities,
            weight: double(fields["weight"], at: Self.join(path, "weight"), range: 0...1000) ?? 1,
            maxConcurrency: integer(
                fields["max_concurrency"], at: Self.join(path, "max_concurrency"), range: 1...1_000_000),
            requestsPerMinute: integer(
                fields["requests_per_minute"], at: Self.join(path, "requests_per_minute"), range: 1...100_000_000
            ),
            tokensPerMinute: integer(
                fields["tokens_per_minute"], at: Self.join(path, "tokens_per_minute"), range: 1...Self.largestInteger,
                unit: " tokens per minute"),
            enabled: bool(fields["enabled"], at: Self.join(path, "enabled")) ?? true,
            settings: json(fields["settings"], at: Self.join(path, "settings"), expected: "an object") ?? [:],
            unsupported: unsupported(fields["supports"], at: Self.join(path, "supports"))
        )
        if provider == .simulated {
            checkSimulatedSettings(fields["settings"], at: Self.join(path, "settings"))
        } else if let provider {
            checkProviderSettings(fields["settings"], provider: provider, at: Self.join(path, "settings"))
        }
        // A header that carries credentials holds a key whatever its value looks like (an Azure
        // key is 32 lower-case hex digits, which no shape check can tell from an id).
        for name in (spec.settings["headers"]?.objectValue?.keys).map(Array.init) ?? [] where ModelSetting.carriesCredentials(header: name) {
            credentialProblem(
                Self.join(Self.join(Self.join(path, "settings"), "headers"), name),
                "is a header that carries credentials, so its value would put a key in the catalog (the value is "
                    + "not shown)",
                hint: "keys never go into the catalog: put the key in an environment variable on the workers and name "
                    + "it in api_key_env; it is sent as Authorization: Bearer (openai; Azure OpenAI's /openai/v1 "
                    + "endpoint takes it so) or x-api-key (anthropic)")
        }
        if let provider {
            // Adapters read these at call time; a wrong type would otherwise go out as the default.
            for setting in ModelSetting.problems(in: spec.settings, provider: provider) {
                // A path into an array of models ("models[2]") does not say which model.
                let which = key == nil ? "model \"\(spec.name)\": " : ""
                let settingPath = Self.join(Self.join(path, "settings"), setting.key)
                problem(settingPath, which + setting.message, hint: setting.hint)
            }
        }
        // Every provider discounts cache reads; a cached price above the input price is most
        // likely the two swapped, or a cache write's price in the wrong field.
        if let cached = spec.pricePer1KCachedInput, cached > spec.pricePer1KInput {
            warning(
                Self.join(path, "price_per_1k_cached_input"),
                "\(cached) is above the input price (\(spec.pricePer1KInput)): cache reads would cost more than uncached input",
                hint: "cache reads are discounted (OpenAI: half, Anthropic: a tenth); a cache write's price goes in price_per_1k_cache_write")
        }
        if let tier, !Self.knownTiers.contains(tier),
            let close = CatalogProblem.suggestion(for: tier, among: Self.knownTiers)
        {
            warning(Self.join(path, "tier"), "\"\(tier)\" is not one of the usual tiers (did you mean \"\(close)\"?)")
        }
        return problems.count == before ? spec : nil
    }

    /// Warns of keys a simulated model does not read: the adapter ignores them, so a misspelt
    /// `latency_p50` would silently leave the default latency.
    private mutating func checkSimulatedSettings(_ node: JSONNode?, at path: String) {
        let known = ModelSpec.simulatedSettingsKeys
        for member in node?.members ?? [] where !known.contains(member.key) {
            let suggestion = CatalogProblem.suggestion(for: member.key, among: known)
            warning(
                Self.join(path, member.key),
                "unknown simulated setting, ignored" + (suggestion.map { " (did you mean \"\($0)\"?)" } ?? ""),
                hint: suggestion == nil
                    ? "remove it; a simulated model reads \(known.joined(separator: ", "))" : nil
            )
        }
    }

    /// Warns of keys an `openai` or `anthropic` model does not read but another provider's does
    /// (`keep_cache_control` on an Anthropic model, `default_max_tokens` on an OpenAI one: a
    /// review's import took them silently), and of near misses of the keys it reads. Other keys
    /// are kept as given, unchecked.
    private mutating func checkProviderSettings(_ node: JSONNode?, provider: ProviderKind, at path: String) {
        let known = ModelSetting.all.filter { $0.providers.contains(provider) }.map(\.key)
        for member in node?.members ?? [] where !known.contains(member.key) {
            if let other = ModelSetting.all.first(where: { $0.key == member.key }) {
                let readers = other.providers.map(\.rawValue).sorted().joined(separator: " and ")
                warning(
                    Self.join(path, member.key), "only \(readers) models read it; this \(provider.rawValue) model ignores it",
                    hint: "remove it, or set it on the model it was meant for")
            } else if let suggestion = CatalogProblem.suggestion(for: member.key, among: known) {
                warning(
                    Self.join(path, member.key),
                    "not a setting the \(provider.rawValue) adapter reads, ignored (did you mean \"\(suggestion)\"?)")
            }
        }
    }

    /// Off-peak windows: kept as JSON, but each must parse as a `PriceWindow`.
    private mutating func priceWindows(_ node: JSONNode?, at path: String) -> JSONValue {
        guard let windows = json(node, at: path, expected: "an array") else { return [] }
        guard case .array(let items) = windows else {
            problem(path, "must be an array of windows, got \(windows.typeName)")
            return []
        }
        for (index, item) in items.enumerated() {
            do {
                _ = try PriceWindow.parse(item)
                // "10:00" to "10:00" is a whole day (an end not after the start runs past midnight),
                // which is seldom what was meant.
                if let start = item["start"]?.stringValue, start == item["end"]?.stringValue {
                    warning(
                        "\(path)[\(index)]", "starts and ends at \(start): it lasts the whole day",
                        hint: "write \"00:00\" to \"24:00\" for a whole day, or the end you meant")
                }
                priceWindowWarnings(item, at: "\(path)[\(index)]")
            } catch let error as PriceWindowError {
                problem("\(path)[\(index)]" + (error.field.map { ".\($0)" } ?? ""), "\(error)")
            } catch {
                problem("\(path)[\(index)]", "\(error)")
            }
        }
        return windows
    }

    /// What a window that parses may still have wrong (an operator's walkthrough imported each
    /// without a word): a day named twice, a multiplier the two per-direction ones override, a free window.
    private mutating func priceWindowWarnings(_ window: JSONValue, at path: String) {
        let days = (window["days"]?.arrayValue ?? []).map { $0.stringValue?.lowercased().prefix(3).description ?? $0.jsonText }
        if let twice = days.enumerated().first(where: { days.prefix($0.offset).contains($0.element) })?.element {
            warning(Self.join(path, "days"), "names \(twice) twice", hint: "name each day once; did you mean another day?")
        }
        if window["multiplier"] != nil, window["input_multiplier"] != nil, window["output_multiplier"] != nil {
            warning(
                Self.join(path, "multiplier"), "is not used: input_multiplier and output_multiplier are both given",
                hint: "remove it, or one of the other two")
        }
        // What applies: each direction's own, else the common one.
        let multipliers = ["input_multiplier", "output_multiplier"].compactMap {
            (window[$0] ?? window["multiplier"])?.doubleValue
        }
        if multipliers.count == 2, multipliers.allSatisfy({ $0 == 0 }) {
            warning(
                path, "has a multiplier of 0: the model costs nothing in this window",
                hint: "if it is free then, keep it; a discount is a fraction like 0.5")
        }
    }

    /// `"supports": {"tools": false, "images": false, "json_output": false}`: what the model cannot
    /// take (true, or left out: it can).
    private mutating func unsupported(_ node: JSONNode?, at path: String) -> Set<ModelFeature> {
        guard let node, node != .null else { return [] }
        let names = ModelFeature.allCases.map(\.rawValue)
        guard let members = node.members else {
            problem(path, "expected an object such as {\"tools\": false}, got \(node.typeName)",
                    hint: "name what the model cannot take: \(names.joined(separator: ", "))")
            return []
        }
        var unsupported: Set<ModelFeature> = []
        var seen: Set<String> = []
        for member in members {
            let memberPath = Self.join(path, member.key)
            guard seen.insert(member.key).inserted else {
                problem(memberPath, "appears twice", hint: "keep one")
                continue
            }
            guard let feature = ModelFeature(rawValue: member.key) else {
                // Other tools' words for them: "vision" offered nothing (a review).
                let synonyms = [
                    "vision": "images", "image": "images", "image_input": "images", "function_calling": "tools",
                    "functions": "tools", "tool_calls": "tools", "json": "json_output", "json_mode": "json_output",
                    "response_schema": "json_output", "structured_output": "json_output",
                ]
                problem(
                    memberPath,
                    "unknown feature"
                        + (synonyms[member.key].map { " (Switchyard calls it \"\($0)\")" }
                            ?? CatalogProblem.didYouMean(member.key, among: names)),
                    hint: "use \(names.joined(separator: ", "))")
                continue
            }
            if bool(member.value, at: memberPath) == false { unsupported.insert(feature) }
        }
        return unsupported
    }

    private mutating func capabilities(_ node: JSONNode?, at path: String) -> [String: Int] {
        guard let node, node != .null else { return [:] }
        guard let members = node.members else {
            problem(path, "expected an object of scores such as {\"reasoning\": 80}, got \(node.typeName)")
            return [:]
        }
        var scores: [String: Int] = [:]
        for member in members {
            let memberPath = Self.join(path, member.key)
            guard scores[member.key] == nil else {
                problem(memberPath, "appears twice", hint: "keep one score")
                continue
            }
            if let score = integer(member.value, at: memberPath, range: 0...100) { scores[member.key] = score }
        }
        return scores
    }

    /// `localhost`, `127.x.x.x`, `::1`: a key sent there does not leave the machine.
    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host.hasSuffix(".localhost") || host.hasPrefix("127.") || host == "::1"
            || host == "[::1]"
    }

    private mutating func baseURL(_ node: JSONNode?, at path: String) -> String? {
        guard let text = string(node, at: path) else { return nil }
        guard let url = URLComponents(string: text), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
            url.host?.isEmpty == false
        else {
            problem(path, "\"\(text)\" is not an http(s) URL", hint: "write it like https://api.openai.com/v1")
            return nil
        }
        guard url.password == nil, url.user == nil, url.query == nil else {
            // Credentials or query strings in a URL are where keys hide; never store them.
            problem(
                path, "has credentials or a query string (the value is not shown)",
                hint: "give the bare base URL and put the key in api_key_env")
            return nil
        }
        return text
    }

    private mutating func environmentName(_ node: JSONNode?, at path: String) -> String? {
        guard let node, node != .null else { return nil }
        guard let text = node.stringValue else {
            problem(path, "expected the name of an environment variable, got \(node.typeName)")
            return nil
        }
        // Names are words and underscores; 20 characters of mixed-case letters and digits without
        // one is a key pasted into the wrong field.
        let mixed =
            text.count >= 20 && !text.contains("_") && text.contains(where: \.isNumber)
            && text.contains(where: \.isLowercase) && text.contains(where: \.isUppercase)
        if Self.looksLikeSecret(text) || mixed {
            problem(
                path, "looks like an API key, not the name of an environment variable (the value is not shown)",
                hint: "put the key in an environment variable on the workers (e.g. OPENAI_API_KEY) and write "
                    + "that name here"
            )
            return nil
        }
        let isName =
            text.first.map { $0 == "_" || ($0.isASCII && $0.isLetter) } == true
            && text.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) } && text.count <= 100
        guard isName else {
            problem(
                path, "is not an environment variable name (the value is not shown)",
                hint: "use ASCII letters, digits and underscores, starting with a letter, e.g. ANTHROPIC_API_KEY"
            )
            return nil
        }
        if let refusal = KeyVariables.refusal(of: text) {
            problem(path, refusal, hint: "name the variable on the workers that holds this provider's key, e.g. OPENAI_API_KEY")
            return nil
        }
        return text
    }

    static func isValidName(_ name: String) -> Bool {
        name.count <= 200 && !name.isEmpty
            && name.unicodeScalars.allSatisfy {
                $0.isASCII && ($0.properties.isAlphabetic || "0123456789._-:/@".unicodeScalars.contains($0))
            }
    }
}
