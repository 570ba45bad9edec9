import Foundation
import QueueModel

/// Renders the catalog with health for `dispatcher models list`.
enum CatalogListing {
    static func text(_ catalog: Catalog, health: [String: CatalogStore.HealthRecord]) -> String {
        guard !catalog.models.isEmpty || !catalog.rules.isEmpty else {
            return
                "the catalog is empty: load one with `dispatcher models import FILE.json` (see examples/catalog.json)"
        }
        var rows = [
            [
                "MODEL", "PROVIDER", "TIER", "IN $/1K", "OUT $/1K", "CONTEXT", "WEIGHT", "ENABLED", "BREAKER",
                "EWMA MS", "SMOOTHED P95 MS",
            ]
        ]
        // Cache prices only when a model sets one: each is what such tokens cost (the input
        // price where a model leaves it out).
        let cachePrices = catalog.models.contains { $0.pricePer1KCachedInput != nil || $0.pricePer1KCacheWrite != nil }
        if cachePrices { rows[0].insert(contentsOf: ["CACHED $/1K", "CACHE WRITE $/1K"], at: 5) }
        // What a model cannot take (`supports`), only when some model says so: a review found it in
        // `models export` alone.
        let limits = catalog.models.contains { !$0.unsupported.isEmpty }
        if limits { rows[0].insert("TAKES NO", at: rows[0].count - 3) }
        let priced: (Decimal?, Decimal) -> String = { price, input in "\(price ?? input)" }
        for model in catalog.models {
            let record = health[model.name]
            var row: [String] = [
                model.name, model.provider.rawValue, model.tier, "\(model.pricePer1KInput)",
                "\(model.pricePer1KOutput)",
                "\(model.contextWindow)", number(model.weight), model.enabled ? "yes" : "no",
                record.map { breaker($0) } ?? "closed (no reports)",
                record?.latencyEWMAMS.map { String(Int($0.rounded())) } ?? "-",
                record?.latencyP95MS.map { String(Int($0.rounded())) } ?? "-",
            ]
            if cachePrices {
                row.insert(contentsOf: [
                    priced(model.pricePer1KCachedInput, model.pricePer1KInput),
                    priced(model.pricePer1KCacheWrite, model.pricePer1KInput),
                ], at: 5)
            }
            if limits {
                row.insert(
                    model.unsupported.isEmpty ? "-" : model.unsupported.sorted().map(\.rawValue).joined(separator: ","),
                    at: row.count - 3)
            }
            rows.append(row)
        }
        var lines = table(rows)
        lines.append("")
        var ruleRows = [["RULE", "STRATEGY", "MODELS", "LIMITS", "CLASSES"]]
        let plans = Dictionary(catalog.rules.map { ($0.taskClass, fixedPlan(of: $0, in: catalog)) }) { first, _ in first }
        for rule in catalog.rules {
            var limits: [String] = []
            if let floor = rule.qualityFloor { limits.append("quality ≥ \(floor)") }
            if let cost = rule.maxCostPer1K { limits.append("≤ $\(cost)/1K") }
            if let latency = rule.maxLatencyMS { limits.append("≤ \(latency) ms") }
            var strategy = rule.strategy.rawValue
            if rule.strategy == .hash { strategy += " (else \(rule.strategyWithoutAffinity.rawValue))" }
            let plan = plans[rule.taskClass] ?? nil
            if rule.strategy == .bestQuality, let scoring = plan?.scoring {
                strategy += " (\(scoring.capabilityNames.joined(separator: "/")) score)"
            }
            var models = plan.map { $0.order.joined(separator: " → ") }
                ?? rule.models.filter { catalog.model(named: $0)?.enabled == true }.joined(separator: ", ")
            // Ordered per job, a rule still never tries a disabled model, or one not in the catalog
            // (a review read a disabled model in the default rule's list as one it used).
            let never = plan?.never ?? rule.models.compactMap { name in
                catalog.model(named: name).map { $0.enabled ? nil : FixedPlan.Skipped(model: name, reason: "disabled") }
                    ?? FixedPlan.Skipped(model: name, reason: "not in the catalog")
            }
            if !never.isEmpty {
                // A rule that tries none: "none (never: …)", not a blank before the parenthesis.
                models = (models.isEmpty ? "none" : models)
                    + " (never: " + never.map { "\($0.model), \($0.reason)" }.joined(separator: "; ") + ")"
            }
            ruleRows.append([
                rule.taskClass, strategy, models,
                limits.isEmpty ? "-" : limits.joined(separator: ", "),
                rule.servedClasses.isEmpty ? "-" : rule.servedClasses.joined(separator: ", "),
            ])
        }
        lines += table(ruleRows)
        if !catalog.rules.isEmpty {
            lines.append(
                "(a → b: tried in that order, after any model the request names, passing over those over a cost "
                    + "limit or with the breaker open; a, b: as listed, ordered for each job by the strategy; "
                    + "dispatcher route --explain shows a job's plan)")
        }
        return lines.joined(separator: "\n")
    }

    /// The order a rule tries its models in for every job it takes, where that order depends on
    /// neither the job nor the moment, and the models it never tries. A review read the listed
    /// primary of a `best_quality` rule as the model its jobs went to: each went to the
    /// best-scored one, at 13 times the price.
    struct FixedPlan: Equatable {
        var order: [String]
        /// Models the rule's filters always drop: disabled, unknown, over its cost ceiling at every
        /// hour, or under its quality floor.
        var never: [Skipped]
        /// The class whose scores measure the rule's models, when every class it serves has the same.
        var scoring: TaskClass?

        struct Skipped: Equatable {
            var model: String
            var reason: String
        }
    }

    /// The rule's fixed plan: for `ordered` (as listed) and `best_quality` (by the score of the
    /// one class the rule's jobs are measured by; listed order among equals, unscored last). Nil
    /// for the strategies that order per job, and for a `best_quality` rule whose jobs are
    /// scored by different classes (the `default` rule, a rule listing several classes).
    static func fixedPlan(of rule: RouteRule, in catalog: Catalog) -> FixedPlan? {
        guard rule.strategy == .ordered || rule.strategy == .bestQuality else { return nil }
        let scoring = RuleMatcher.scoringClass(of: rule, in: catalog)
        // Scored by several classes: neither the order (best_quality) nor the floor's drops hold
        // for every job.
        if scoring == nil && (rule.strategy == .bestQuality || rule.qualityFloor != nil) { return nil }
        let specs = Dictionary(catalog.models.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var never: [FixedPlan.Skipped] = []
        var kept: [(name: String, index: Int, score: Int)] = []
        for (index, name) in rule.models.enumerated() {
            guard let spec = specs[name] else {
                never.append(.init(model: name, reason: "not in the catalog"))
                continue
            }
            guard spec.enabled else {
                never.append(.init(model: name, reason: "disabled"))
                continue
            }
            // Over the rule's cost ceiling at its cheapest window (as the router reckons it).
            if let ceiling = rule.maxCostPer1K {
                let lowest = PriceSchedule(spec).lowestAveragePricePer1K
                if lowest > ceiling {
                    never.append(.init(model: name, reason: "$\(lowest)/1K at its cheapest > ceiling $\(ceiling)/1K"))
                    continue
                }
            }
            let scored = scoring?.scoredCapability(of: spec)
            if let floor = rule.qualityFloor, let scoring {
                if let scored, scored.score < floor {
                    never.append(.init(model: name, reason: "\(scored.name) \(scored.score) < floor \(floor)"))
                    continue
                } else if scored == nil, floor > 0 {
                    never.append(.init(model: name, reason: "no \(scoring.capabilityNames[0]) score for floor \(floor)"))
                    continue
                }
            }
            kept.append((name, index, scored?.score ?? -1))
        }
        if rule.strategy == .bestQuality { kept.sort { ($1.score, $0.index) < ($0.score, $1.index) } }
        return FixedPlan(order: kept.map(\.name), never: never, scoring: scoring)
    }

    static func json(_ catalog: Catalog, health: [String: CatalogStore.HealthRecord]) -> JSONValue {
        let models: [JSONValue] = catalog.models.map { model in
            let record = health[model.name]
            return [
                "name": .string(model.name), "provider": .string(model.provider.rawValue),
                "upstream_model": .string(model.upstreamName), "tier": .string(model.tier),
                "price_per_1k_input": .string("\(model.pricePer1KInput)"),
                "price_per_1k_output": .string("\(model.pricePer1KOutput)"),
                // null: the input price (the call's cache reads and writes cost what its other input does)
                "price_per_1k_cached_input": model.pricePer1KCachedInput.map { .string("\($0)") } ?? .null,
                "price_per_1k_cache_write": model.pricePer1KCacheWrite.map { .string("\($0)") } ?? .null,
                "context_window": .number(Double(model.contextWindow)), "weight": .number(model.weight),
                "enabled": .bool(model.enabled),
                "capabilities": .object(model.capabilities.mapValues { .number(Double($0)) }),
                "unsupported": .array(model.unsupported.sorted().map { .string($0.rawValue) }),
                "health": [
                    "breaker": .string(record?.breaker.rawValue ?? "closed"),
                    "reason": record?.reason.map(JSONValue.string) ?? .null,
                    "reported": .bool(record != nil),
                    "consecutive_failures": .number(Double(record?.consecutiveFailures ?? 0)),
                    "window_requests": .number(Double(record?.windowRequests ?? 0)),
                    "window_failures": .number(Double(record?.windowFailures ?? 0)),
                    "latency_ewma_ms": record?.latencyEWMAMS.map { .number($0) } ?? .null,
                    "latency_p95_ms": record?.latencyP95MS.map { .number($0) } ?? .null,
                ],
            ]
        }
        let rules: [JSONValue] = catalog.rules.map { rule in
            [
                "name": .string(rule.taskClass), "primary": .string(rule.primary),
                "fallbacks": .array(rule.fallbacks.map { .string($0) }), "strategy": .string(rule.strategy.rawValue),
                "max_cost_per_1k": rule.maxCostPer1K.map { .string("\($0)") } ?? .null,
                "max_latency_ms": rule.maxLatencyMS.map { .number(Double($0)) } ?? .null,
                "quality_floor": rule.qualityFloor.map { .number(Double($0)) } ?? .null,
                "classes": .array(rule.servedClasses.map { .string($0) }),
                // The order every job of the rule is tried in, when one holds for all (null: per job).
                "order": fixedPlan(of: rule, in: catalog).map { .array($0.order.map { .string($0) }) } ?? .null,
            ]
        }
        return ["models": .array(models), "rules": .array(rules)]
    }

    private static func breaker(_ record: CatalogStore.HealthRecord) -> String {
        switch record.breaker {
        case .closed: "closed"
        case .halfOpen: StatusFormat.breaker("half_open", reason: record.reason, limit: 300)
        case .open: "OPEN (\(record.reason ?? "\(record.consecutiveFailures) failures in a row"))"
        }
    }

    private static func number(_ value: Double) -> String {
        value.rounded() == value ? String(Int(value)) : String(value)
    }

    /// Left-aligned columns, two spaces apart.
    private static func table(_ rows: [[String]]) -> [String] {
        guard let header = rows.first else { return [] }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }
}
