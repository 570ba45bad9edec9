import Foundation
import Synchronization

/// A set of metric families rendered together in the Prometheus text exposition format 0.0.4.
///
/// Families are registered once (at start-up) and updated from any thread or task: each family
/// keeps its samples behind its own `Mutex`, so an update never waits on a scrape of another
/// family and never suspends.
final class MetricsRegistry: Sendable {
    private let families = Mutex<[any MetricFamily]>([])

    init() {}

    /// Registers a counter: a value that only goes up (restarts reset it).
    func counter(_ name: String, help: String, labels: [String] = []) -> Counter {
        register(Counter(name: name, help: help, labelNames: labels))
    }

    /// Registers a gauge: a value that goes up and down.
    func gauge(_ name: String, help: String, labels: [String] = []) -> Gauge {
        register(Gauge(name: name, help: help, labelNames: labels))
    }

    /// Registers a histogram with the given upper bounds (ascending; `+Inf` is added).
    func histogram(_ name: String, help: String, labels: [String] = [], buckets: [Double]) -> Histogram {
        register(Histogram(name: name, help: help, labelNames: labels, buckets: buckets))
    }

    private func register<Family: MetricFamily>(_ family: Family) -> Family {
        families.withLock { families in
            precondition(!families.contains { $0.name == family.name }, "metric \(family.name) registered twice")
            families.append(family)
        }
        return family
    }

    /// The text exposition of every family, in registration order.
    func render() -> String {
        let snapshot = families.withLock { $0 }
        var text = ""
        for family in snapshot {
            text += "# HELP \(family.name) \(Self.escapeHelp(family.help))\n"
            text += "# TYPE \(family.name) \(family.type)\n"
            family.renderSamples(into: &text)
        }
        return text
    }

    /// The content type a scraper expects for this format.
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeLabel(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    /// `{a="1",b="2"}`, or nothing without labels.
    static func labelText(_ names: [String], _ values: [String], extra: (String, String)? = nil) -> String {
        var pairs = zip(names, values).map { "\($0)=\"\(escapeLabel($1))\"" }
        if let extra { pairs.append("\(extra.0)=\"\(escapeLabel(extra.1))\"") }
        return pairs.isEmpty ? "" : "{" + pairs.joined(separator: ",") + "}"
    }

    /// A sample value: whole numbers without a fraction, and Prometheus's spellings of infinities.
    static func valueText(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value.rounded() == value && abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}
