import Synchronization

/// A named metric with labelled samples, rendered by `MetricsRegistry`.
protocol MetricFamily: Sendable {
    var name: String { get }
    var help: String { get }
    /// `counter`, `gauge` or `histogram`.
    var type: String { get }
    func renderSamples(into text: inout String)
}

/// A counter family. Label values are given in the order of the family's label names.
final class Counter: MetricFamily {
    let name: String
    let help: String
    let labelNames: [String]
    let type = "counter"
    private let values = Mutex<[[String]: Double]>([:])

    init(name: String, help: String, labelNames: [String]) {
        self.name = name
        self.help = help
        self.labelNames = labelNames
        if labelNames.isEmpty { values.withLock { $0[[]] = 0 } }
    }

    /// Adds `amount` (≥ 0) to the sample with these label values.
    func increment(_ labels: [String] = [], by amount: Double = 1) {
        precondition(labels.count == labelNames.count, "\(name) takes labels \(labelNames)")
        guard amount >= 0 else { return }
        values.withLock { $0[labels, default: 0] += amount }
    }

    /// Makes the sample exist at zero, so a scraper sees the series before its first event.
    func touch(_ labels: [String]) {
        values.withLock { values in if values[labels] == nil { values[labels] = 0 } }
    }

    /// The current value of one sample (tests).
    func value(_ labels: [String] = []) -> Double { values.withLock { $0[labels] ?? 0 } }

    func renderSamples(into text: inout String) {
        for (labels, value) in values.withLock({ $0 }).sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            text += "\(name)\(MetricsRegistry.labelText(labelNames, labels)) \(MetricsRegistry.valueText(value))\n"
        }
    }
}

/// A gauge family.
final class Gauge: MetricFamily {
    let name: String
    let help: String
    let labelNames: [String]
    let type = "gauge"
    private let values = Mutex<[[String]: Double]>([:])

    init(name: String, help: String, labelNames: [String]) {
        self.name = name
        self.help = help
        self.labelNames = labelNames
        if labelNames.isEmpty { values.withLock { $0[[]] = 0 } }
    }

    /// Sets the sample with these label values.
    func set(_ value: Double, _ labels: [String] = []) {
        precondition(labels.count == labelNames.count, "\(name) takes labels \(labelNames)")
        values.withLock { $0[labels] = value }
    }

    /// Adds `amount` (may be negative) to the sample.
    func add(_ amount: Double, _ labels: [String] = []) {
        precondition(labels.count == labelNames.count, "\(name) takes labels \(labelNames)")
        values.withLock { $0[labels, default: 0] += amount }
    }

    /// The current value of one sample (tests).
    func value(_ labels: [String] = []) -> Double { values.withLock { $0[labels] ?? 0 } }

    func renderSamples(into text: inout String) {
        for (labels, value) in values.withLock({ $0 }).sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            text += "\(name)\(MetricsRegistry.labelText(labelNames, labels)) \(MetricsRegistry.valueText(value))\n"
        }
    }
}

/// A histogram family: per label set, cumulative bucket counts, the sum and the count.
final class Histogram: MetricFamily {
    private struct Series {
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }

    let name: String
    let help: String
    let labelNames: [String]
    let buckets: [Double]
    let type = "histogram"
    private let series = Mutex<[[String]: Series]>([:])

    init(name: String, help: String, labelNames: [String], buckets: [Double]) {
        self.name = name
        self.help = help
        self.labelNames = labelNames
        self.buckets = buckets.sorted()
    }

    /// Records one observation.
    func observe(_ value: Double, _ labels: [String] = []) {
        precondition(labels.count == labelNames.count, "\(name) takes labels \(labelNames)")
        let index = buckets.firstIndex { value <= $0 } ?? buckets.count
        series.withLock { series in
            var entry = series[labels] ?? Series(counts: Array(repeating: 0, count: buckets.count + 1))
            entry.counts[index] += 1
            entry.sum += value
            entry.count += 1
            series[labels] = entry
        }
    }

    func renderSamples(into text: inout String) {
        for (labels, entry) in series.withLock({ $0 }).sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            var cumulative: UInt64 = 0
            for (index, bound) in (buckets + [.infinity]).enumerated() {
                cumulative += entry.counts[index]
                let le = MetricsRegistry.valueText(bound)
                text +=
                    "\(name)_bucket\(MetricsRegistry.labelText(labelNames, labels, extra: ("le", le))) \(cumulative)\n"
            }
            let labelText = MetricsRegistry.labelText(labelNames, labels)
            text += "\(name)_sum\(labelText) \(MetricsRegistry.valueText(entry.sum))\n"
            text += "\(name)_count\(labelText) \(entry.count)\n"
        }
    }
}
