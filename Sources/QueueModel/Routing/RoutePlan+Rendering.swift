import Foundation

extension RoutePlan {
    /// The plan and why, for people (`dispatcher route --explain`).
    public func explanationText(for request: RoutingRequest) -> String {
        var lines: [String] = []
        let unset = estimate.outputTokensGiven ? "" : " (max_tokens not set)"
        var requestLine =
            "\(estimate.messageCount) message\(estimate.messageCount == 1 ? "" : "s"), ≈ \(estimate.promptTokens) "
            + "prompt + \(estimate.outputTokens) output tokens\(unset), priority \(request.priority.rawValue)"
        if let key = request.affinityKey { requestLine += ", affinity key \"\(key)\"" }
        lines.append(Self.row("request", requestLine))
        let source = classification.source == .job ? "given by the job" : "heuristic: \(classification.reason)"
        lines.append(Self.row("class", "\(classification.taskClass) — \(source)"))
        if let rule {
            var limits: [String] = []
            if let floor = rule.qualityFloor { limits.append("quality floor \(floor)") }
            if let cost = rule.maxCostPer1K { limits.append("max cost $\(cost)/1K") }
            if let latency = rule.maxLatencyMS { limits.append("max latency \(latency) ms") }
            if let cost = request.maxCostPer1K { limits.append("job max cost $\(cost)/1K") }
            let suffix = limits.isEmpty ? "" : "; " + limits.joined(separator: ", ")
            lines.append(Self.row("rule", "\(rule.taskClass) — \(explanation.rule)\(suffix)"))
            lines.append(Self.row("strategy", explanation.strategy))
        } else {
            lines.append(Self.row("rule", "none"))
        }
        if !explanation.candidates.isEmpty {
            lines.append("candidates")
            let width = explanation.candidates.map(\.model.count).max() ?? 0
            for candidate in explanation.candidates {
                let name = candidate.model.padding(toLength: width, withPad: " ", startingAt: 0)
                if let position = candidate.position {
                    let tier = Tier.at(position: position).rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
                    lines.append(
                        "  \(position + 1)  \(tier)  \(name)  kept: \(candidate.facts.joined(separator: " · "))")
                } else {
                    lines.append("  -  dropped    \(name)  \(candidate.dropReasons.joined(separator: "; "))")
                }
            }
        }
        if let unroutable {
            lines.append(Self.row("plan", "none: \(unroutable.reason)"))
            lines.append(Self.row("", "\(unroutable.isTransient ? "transient" : "permanent"); \(unroutable.hint)"))
        } else {
            let steps = attempts.map { "\($0.model.name) (\($0.tier), \($0.timeoutMS) ms)" }
            lines.append(Self.row("plan", steps.joined(separator: " → ")))
        }
        return lines.joined(separator: "\n")
    }

    /// The plan and why, as JSON (`dispatcher route --explain --json`).
    public var json: JSONValue {
        var object: JSONValue = [
            "class": .string(classification.taskClass.rawValue),
            "class_source": .string(classification.source.rawValue),
            "class_reason": .string(classification.reason),
            "rule": rule.map { .string($0.taskClass) } ?? .null,
            "rule_reason": .string(explanation.rule),
            "strategy": strategy.map { .string($0.rawValue) } ?? .null,
            "strategy_reason": .string(explanation.strategy),
            "affinity_home": affinityHome.map { .string($0) } ?? .null,
            "estimated_prompt_tokens": .number(Double(estimate.promptTokens)),
            "output_tokens": .number(Double(estimate.outputTokens)),
            "attempts": .array(
                attempts.map { attempt in
                    [
                        "model": .string(attempt.model.name), "provider": .string(attempt.model.provider.rawValue),
                        "tier": .string(attempt.tier.rawValue), "timeout_ms": .number(Double(attempt.timeoutMS)),
                    ]
                }
            ),
            "candidates": .array(
                explanation.candidates.map { candidate in
                    [
                        "model": .string(candidate.model), "kept": .bool(candidate.isKept),
                        "position": candidate.position.map { .number(Double($0)) } ?? .null,
                        "drop_reasons": .array(candidate.dropReasons.map { .string($0) }),
                        "facts": .array(candidate.facts.map { .string($0) }),
                    ]
                }
            ),
        ]
        if let unroutable {
            object["unroutable"] = [
                "reason": .string(unroutable.reason), "hint": .string(unroutable.hint),
                "transient": .bool(unroutable.isTransient),
            ]
        }
        return object
    }

    /// One labelled line of the explanation.
    public static func row(_ label: String, _ text: String) -> String {
        label.padding(toLength: 10, withPad: " ", startingAt: 0) + text
    }
}
