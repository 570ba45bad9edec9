import Foundation
import QueueModel

/// The self-contained HTML page of `dispatcher report --html`: inline CSS and SVG, no script, no
/// external assets, so it can be mailed, archived or opened offline.
struct HTMLReport {
    let series: ReportStore.Series
    let window: Duration
    let generatedAt: Date
    /// The background backlog and its gate now, and what the window's jobs saved against their
    /// rules' primaries (nil: left out).
    var background: BacklogStatus? = nil
    var savings: SavingsReport? = nil

    /// The page.
    func render() -> String {
        let labels = series.buckets.map(label)
        let models = Set(series.models.map(\.model)).sorted()
        var sections: [String] = []
        sections.append(summaryTable())
        sections.append(
            "<h2>Latency by model</h2><p class=\"note\">Percentiles of model calls that answered or "
                + "timed out, per \(StatusFormat.window(series.bucketLength)).</p><div class=\"grid\">")
        for model in models {
            let points = values(for: model)
            sections.append(
                SVGChart(
                    title: model, xLabels: labels,
                    series: [
                        .init(name: "P50", color: SVGChart.palette[0], values: points.map { $0?.latencyP50MS }),
                        .init(name: "P95", color: SVGChart.palette[1], values: points.map { $0?.latencyP95MS }),
                        .init(name: "P99", color: SVGChart.palette[2], values: points.map { $0?.latencyP99MS }),
                    ],
                    format: { StatusFormat.milliseconds($0) }, width: 480, height: 200
                ).lines())
        }
        sections.append("</div>")
        let costSeries = models.enumerated().map { index, model in
            SVGChart.Series(
                name: model, color: SVGChart.palette[index % SVGChart.palette.count],
                values: values(for: model).map { point in point.map { NSDecimalNumber(decimal: $0.cost).doubleValue } })
        }
        sections.append("<h2>Cost by model</h2>")
        sections.append(
            SVGChart(
                title: "cost of answered jobs per \(StatusFormat.window(series.bucketLength))", xLabels: labels,
                series: costSeries, format: { StatusFormat.money(Decimal($0)) }
            ).stackedBars())
        sections.append("<h2>Tier mix and fallbacks</h2>")
        sections.append(tierMix(labels: labels))
        sections.append(
            SVGChart(
                title: "fallback rate (jobs whose trail names more than one model)", xLabels: labels,
                series: [
                    .init(name: "fallback rate", color: SVGChart.palette[6], values: totals().map { $0?.fallbackRate })
                ],
                format: { StatusFormat.percent($0) }
            ).lines())
        if background != nil || savings != nil { sections.append(backgroundAndSavings()) }
        return page(body: sections.joined(separator: "\n"))
    }

    /// The background backlog, its gate and ceiling as `dispatcher background status` says them,
    /// and the window's savings as `dispatcher report savings` counts them.
    private func backgroundAndSavings() -> String {
        var html = "<h2>Background work and savings</h2>"
        if let background {
            html += "<p>" + background.lines.map { HTMLText.escape($0.trimmingCharacters(in: .whitespaces)) }
                .joined(separator: "<br>") + "</p>"
        }
        guard let savings else { return html }
        html += "<p class=\"note\">Cost of the window's jobs against every job on its rule's primary model at list "
            + "price: saved by the model chosen, and by off-peak prices; escalated jobs went past the background "
            + "ceiling for their deadline.</p><table><thead><tr><th></th><th>jobs</th><th>cost</th><th>all-primary</th>"
            + "<th>saved</th><th>by model</th><th>by off-peak</th><th>escalated</th></tr></thead><tbody>"
        for row in savings.rows {
            let cells = [
                String(row.jobs), SavingsReport.money(row.cost), SavingsReport.money(row.baseline),
                SavingsReport.money(row.saved), SavingsReport.money(row.savedByCheaperModel),
                SavingsReport.money(row.savedByOffPeak), "\(row.escalatedJobs) jobs, \(SavingsReport.money(row.escalatedCost))",
            ]
            html += "<tr><td>\(HTMLText.escape(row.priority ?? "total"))</td>"
                + cells.map { "<td class=\"num\">\(HTMLText.escape($0))</td>" }.joined() + "</tr>"
        }
        return html + "</tbody></table>"
    }

    private func tierMix(labels: [String]) -> String {
        let points = totals()
        let tiers = ["primary", "secondary", "tertiary", "none"]
        let colors = ["#59a14f", "#edc948", "#f28e2b", "#e15759"]
        let layers = tiers.enumerated().map { index, tier in
            SVGChart.Series(
                name: tier == "none" ? "no answer (failed or expired)" : tier, color: colors[index],
                values: points.map { point in point.map { Double($0.tiers[tier] ?? 0) } })
        }
        var totalsByTier: [String: Int] = [:]
        for point in series.totals { totalsByTier.merge(point.tiers, uniquingKeysWith: +) }
        let all = max(1, totalsByTier.values.reduce(0, +))
        let shares = tiers.map { tier in
            let share = Double(totalsByTier[tier] ?? 0) / Double(all)
            return "\(tier == "none" ? "no answer" : tier) \(StatusFormat.percent(share))"
        }
        return "<p class=\"note\">Jobs by the tier of the call that answered them, over the whole range: "
            + HTMLText.escape(shares.joined(separator: " · ")) + ".</p>"
            + SVGChart(
                title: "jobs per tier per \(StatusFormat.window(series.bucketLength))", xLabels: labels,
                series: layers, format: { String(Int($0.rounded())) }
            ).stackedBars()
    }

    private func summaryTable() -> String {
        let jobs = series.totals.reduce(0) { $0 + $1.jobs }
        let fellBack = series.totals.reduce(0) { $0 + $1.fellBack }
        var html =
            "<h2>Summary</h2><p>\(jobs) job\(jobs == 1 ? "" : "s") finished; "
            + "\(StatusFormat.percent(jobs > 0 ? Double(fellBack) / Double(jobs) : nil)) "
            + "fell back to another model.</p><table><thead><tr><th>model</th><th>calls</th><th>errors</th>"
            + "<th>timeouts</th><th>P50</th><th>P95</th><th>P99</th><th>answered</th><th>fallback</th>"
            + "<th>cost</th><th>cost/job</th><th>breaker</th></tr></thead><tbody>"
        // The models that did something in the window (model_stats lists the whole catalog).
        for model in series.summary where model.calls > 0 || model.answered > 0 || model.breaker != "closed" {
            let cells = [
                String(model.calls), StatusFormat.percent(model.errorRate), StatusFormat.percent(model.timeoutRate),
                StatusFormat.milliseconds(model.latencyP50MS), StatusFormat.milliseconds(model.latencyP95MS),
                StatusFormat.milliseconds(model.latencyP99MS), String(model.answered),
                StatusFormat.percent(model.fallbackRate), StatusFormat.money(model.cost),
                StatusFormat.money(model.costPerRequest), model.breaker,
            ]
            html +=
                "<tr><td>\(HTMLText.escape(model.model))</td>"
                + cells.map { "<td class=\"num\">\(HTMLText.escape($0))</td>" }.joined() + "</tr>"
        }
        return html + "</tbody></table>"
    }

    /// Each bucket's point for one model (nil where it had no calls or jobs).
    private func values(for model: String) -> [ReportStore.ModelPoint?] {
        var result = [ReportStore.ModelPoint?](repeating: nil, count: series.buckets.count)
        for point in series.models where point.model == model {
            if let index = index(of: point.bucket) { result[index] = point }
        }
        return result
    }

    private func totals() -> [ReportStore.BucketPoint?] {
        var result = [ReportStore.BucketPoint?](repeating: nil, count: series.buckets.count)
        for point in series.totals {
            if let index = index(of: point.bucket) { result[index] = point }
        }
        return result
    }

    /// The bucket a time falls in (by rounding: the database and Swift agree to the microsecond,
    /// not to the bit).
    private func index(of bucket: Date) -> Int? {
        guard let first = series.buckets.first else { return nil }
        let index = Int((bucket.timeIntervalSince(first) / series.bucketLength.seconds).rounded())
        return series.buckets.indices.contains(index) ? index : nil
    }

    private func label(_ date: Date) -> String {
        let clock = StatusFormat.clock(date)  // yyyy-MM-dd HH:mm:ss
        if window.seconds > 2 * 86_400 { return String(clock.prefix(16).suffix(11)) }  // MM-dd HH:mm
        return series.bucketLength < .seconds(60) ? String(clock.suffix(8)) : String(clock.dropFirst(11).prefix(5))
    }

    private func page(body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Switchyard report — \(HTMLText.escape(StatusFormat.clock(generatedAt))) UTC</title>
        <style>
        body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
               max-width: 1000px; color: #222; padding: 0 16px; }
        h1 { font-size: 22px; margin-bottom: 0; }
        h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
        .meta, .note { color: #666; } table { border-collapse: collapse; width: 100%; font-size: 13px; }
        th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; }
        td.num, th:not(:first-child) { text-align: right; }
        figure { margin: 12px 0; } figcaption { font-weight: 600; margin-bottom: 4px; }
        svg { width: 100%; height: auto; font-size: 11px; fill: #555; }
        .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 8px 24px; }
        .legend { font-size: 12px; color: #444; } .key { margin-right: 14px; white-space: nowrap; }
        .key i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
        </style>
        </head>
        <body>
        <h1>Switchyard report</h1>
        <p class="meta">The last \(StatusFormat.window(window)) to
        \(HTMLText.escape(StatusFormat.clock(generatedAt))) UTC,
        in buckets of \(StatusFormat.window(series.bucketLength)). Generated by dispatcher report from
        switchyard.results; the same numbers are in switchyard.model_stats and switchyard.job_stats.</p>
        \(body)
        </body>
        </html>
        """
    }
}
