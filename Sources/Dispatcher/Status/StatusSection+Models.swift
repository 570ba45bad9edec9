import Foundation
import QueueModel

extension StatusSection {
    /// Per-model calls, errors, latency, cost and breaker: on the screen, the models called in
    /// the window or with a breaker not closed (the rest counted in a line); all of them in JSON.
    static let models = StatusSection(key: "models", title: "MODELS") { context in
        let models = try await context.observability.modelStats(window: context.window, at: context.at)
        guard !models.isEmpty else {
            return StatusOutput(lines: ["no model was called in the window, and no breaker is set"], json: [])
        }
        // A model disabled in the catalog read like any other not called lately.
        let enabled = try await context.observability.modelsEnabled()
        let disabled = Set(enabled.filter { !$0.value }.keys)
        let json = JSONValue.array(models.map { model in
            var json = model.json
            // null: no longer in the catalog (called in the window, or a breaker row left).
            json["enabled"] = enabled[model.model].map(JSONValue.bool) ?? .null
            return json
        })
        let shown = models.filter { $0.calls > 0 || $0.breaker != "closed" }
        let quiet = models.filter { !($0.calls > 0 || $0.breaker != "closed") }
        let quietDisabled = quiet.map(\.model).filter(disabled.contains)
        let more = "\(quiet.count) \(quiet.count == 1 ? "model" : "models") not called in the window, breakers closed"
            + (quietDisabled.isEmpty ? "" : "; disabled in the catalog: " + quietDisabled.joined(separator: ", "))
            + " (status --json lists them)"
        guard !shown.isEmpty else { return StatusOutput(lines: [more], json: json) }
        var table = TextTable(
            [
                "model", "calls", "errors", "timeouts", "P50", "P95", "P99", "answered", "fallback", "cost/job",
                "breaker",
            ],
            rightAligned: Set(1...9))
        for model in shown {
            // Alerts are listed in full above; other reasons are short ("5 failures in a row").
            let breaker = StatusFormat.breaker(model.breaker, reason: model.breakerReason, alertsShown: true)
            table.append([
                model.model + (disabled.contains(model.model) ? " (disabled)" : ""), String(model.calls),
                StatusFormat.percent(model.errorRate),
                StatusFormat.percent(model.timeoutRate),
                StatusFormat.latency(model.latencyP50MS, quantile: 0.5, timeoutRate: model.timeoutRate,
                    errorRate: model.errorRate),
                StatusFormat.latency(model.latencyP95MS, quantile: 0.95, timeoutRate: model.timeoutRate,
                    errorRate: model.errorRate),
                StatusFormat.latency(model.latencyP99MS, quantile: 0.99, timeoutRate: model.timeoutRate,
                    errorRate: model.errorRate),
                String(model.answered), StatusFormat.percent(model.fallbackRate),
                StatusFormat.money(model.costPerRequest), breaker,
            ])
        }
        return StatusOutput(lines: table.lines + (quiet.isEmpty ? [] : ["… and " + more]), json: json)
    }

    /// How old the last alert evaluation may be before status says so: past the interval a slow
    /// evaluation backs off to (ten times its length), with room.
    static let staleEvaluationSeconds = 600.0

    /// Open alerts, oldest first.
    static let alerts = StatusSection(key: "alerts", title: "ALERTS") { context in
        let open = try await context.alerts.open()
        // Evaluations failing (a statement timeout, a lock) raise and clear nothing: "none open"
        // alone read as all well.
        let evaluation = try await context.alerts.evaluationState()
        var lines: [String] = []
        if let error = evaluation.error, let since = evaluation.failingSince {
            lines.append(
                "EVALUATION FAILING since \(StatusFormat.clock(since))"
                    + (evaluation.evaluatedAt.map { " (last success \(StatusFormat.clock($0)))" } ?? "")
                    + ": \(error)")
            lines.append("  no alert raises or clears until an evaluation succeeds; the housekeeper's log has each failure")
        } else if let evaluatedAt = evaluation.evaluatedAt, let age = evaluation.secondsSinceEvaluated,
            age > Self.staleEvaluationSeconds
        {
            // No housekeeper at all (no worker running, or one stuck) said nothing either.
            lines.append(
                "NOT EVALUATED since \(StatusFormat.clock(evaluatedAt)) (\(StatusFormat.seconds(age)) ago): no worker is "
                    + "keeping house, or evaluations are very slow; the alerts below are as they were then")
        }
        // A dropped role's mappings stay, for whoever creates a role of its name: an operator's
        // walkthrough found nothing that listed them after migrate.
        let orphans = try await context.alerts.orphanTenantMappings()
        for orphan in orphans {
            lines.append(
                "TENANT MAPPING of role \(orphan.role) to \(orphan.tenant): no such role (one created under that name "
                    + "would act for \(orphan.tenant)); delete it: DELETE FROM switchyard.tenant_roles WHERE role = "
                    + "'\(orphan.role.replacingOccurrences(of: "'", with: "''"))'")
        }
        lines += open.isEmpty ? ["none open"] : open.map { alert in
            "since \(StatusFormat.clock(alert.openedAt))  \(alert.kind)  \(alert.subject): \(alert.message)"
                + (alert.latest.map { "; now \($0)" } ?? "")
        }
        return StatusOutput(
            lines: lines, json: .array(open.map(\.json)),
            siblings: [
                "alert_evaluation": evaluation.json,
                "orphan_tenant_mappings": .array(orphans.map { ["role": .string($0.role), "tenant": .string($0.tenant)] }),
            ])
    }
}
