import Foundation

/// A strict reader of the Prometheus text exposition format 0.0.4, for tests: it rejects what a
/// Prometheus server would reject (bad names, bad label syntax, values that are not numbers,
/// samples before their TYPE, histogram buckets that are not cumulative or miss `+Inf`).
struct PrometheusText {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Problem: Error, CustomStringConvertible {
        var line: Int
        var message: String
        var description: String { "line \(line): \(message)" }
    }

    private(set) var types: [String: String] = [:]
    private(set) var help: [String: String] = [:]
    private(set) var samples: [Sample] = []

    /// The samples of a series whose labels include `labels`.
    func values(_ name: String, _ labels: [String: String] = [:]) -> [Double] {
        samples.filter { sample in
            sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
        }.map(\.value)
    }

    /// The one sample with exactly these labels (or nil).
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    init(parsing text: String) throws {
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let words = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                guard words.count >= 3, words[0] == "#", ["HELP", "TYPE"].contains(words[1]) else { continue }
                let name = String(words[2])
                guard Self.isMetricName(name) else { throw Problem(line: number, message: "bad metric name \(name)") }
                let rest = words.count > 3 ? String(words[3]) : ""
                if words[1] == "TYPE" {
                    guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(rest) else {
                        throw Problem(line: number, message: "unknown type \(rest)")
                    }
                    guard types[name] == nil else { throw Problem(line: number, message: "second TYPE for \(name)") }
                    guard !samples.contains(where: { Self.family(of: $0.name, types: [name: rest]) == name }) else {
                        throw Problem(line: number, message: "TYPE for \(name) after its samples")
                    }
                    types[name] = rest
                } else {
                    help[name] = rest
                }
                continue
            }
            let sample = try Self.sample(String(line), line: number)
            guard Self.family(of: sample.name, types: types) != nil else {
                throw Problem(line: number, message: "sample \(sample.name) has no TYPE before it")
            }
            samples.append(sample)
        }
        try checkHistograms()
    }

    /// The family a sample belongs to: its own name, or a histogram's for `_bucket`/`_sum`/`_count`.
    static func family(of name: String, types: [String: String]) -> String? {
        if types[name] != nil { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == "histogram" || types[base] == "summary" { return base }
        }
        return nil
    }

    private func checkHistograms() throws {
        for (name, type) in types where type == "histogram" {
            var series: [[String: String]: [(le: Double, count: Double)]] = [:]
            for sample in samples where sample.name == name + "_bucket" {
                guard let le = sample.labels["le"], let bound = Self.number(le) else {
                    throw Problem(line: 0, message: "\(name)_bucket without a numeric le")
                }
                var key = sample.labels
                key["le"] = nil
                series[key, default: []].append((bound, sample.value))
            }
            for (labels, buckets) in series {
                let sorted = buckets.sorted { $0.le < $1.le }
                guard sorted.last?.le == .infinity else {
                    throw Problem(line: 0, message: "\(name) has no +Inf bucket")
                }
                for (earlier, later) in zip(sorted, sorted.dropFirst()) where later.count < earlier.count {
                    throw Problem(line: 0, message: "\(name) buckets are not cumulative")
                }
                guard value(name + "_count", labels) == sorted.last?.count, value(name + "_sum", labels) != nil else {
                    throw Problem(line: 0, message: "\(name) count differs from its +Inf bucket, or has no sum")
                }
            }
        }
    }

    private static func sample(_ line: String, line number: Int) throws -> Sample {
        var rest = Substring(line)
        let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
        guard isMetricName(String(name)) else { throw Problem(line: number, message: "bad sample name in \(line)") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let label = rest.prefix { $0 != "=" }
                guard isLabelName(String(label)), rest.dropFirst(label.count).hasPrefix("=\"") else {
                    throw Problem(line: number, message: "bad label in \(line)")
                }
                rest = rest.dropFirst(label.count + 2)
                var value = ""
                while let character = rest.first, character != "\"" {
                    rest = rest.dropFirst()
                    if character == "\\" {
                        guard let escaped = rest.first else { throw Problem(line: number, message: "bad escape") }
                        rest = rest.dropFirst()
                        switch escaped {
                        case "n": value.append("\n")
                        case "\\", "\"": value.append(escaped)
                        default: throw Problem(line: number, message: "bad escape \\\(escaped) in \(line)")
                        }
                    } else {
                        value.append(character)
                    }
                }
                guard rest.first == "\"" else { throw Problem(line: number, message: "unterminated label value") }
                rest = rest.dropFirst()
                guard labels.updateValue(value, forKey: String(label)) == nil else {
                    throw Problem(line: number, message: "label \(label) twice in \(line)")
                }
                if rest.first == "," { rest = rest.dropFirst() }
            }
            rest = rest.dropFirst()
        }
        let fields = rest.split(separator: " ")
        guard rest.first == " ", (1...2).contains(fields.count), let value = Self.number(String(fields[0])) else {
            throw Problem(line: number, message: "bad value in \(line)")
        }
        return Sample(name: String(name), labels: labels, value: value)
    }

    static func number(_ text: String) -> Double? {
        switch text {
        case "+Inf": .infinity
        case "-Inf": -.infinity
        case "NaN": .nan
        default: Double(text)
        }
    }

    static func isMetricName(_ name: String) -> Bool {
        name.range(of: #"^[a-zA-Z_:][a-zA-Z0-9_:]*$"#, options: .regularExpression) != nil
    }

    static func isLabelName(_ name: String) -> Bool {
        name.range(of: #"^[a-zA-Z_][a-zA-Z0-9_]*$"#, options: .regularExpression) != nil
    }
}
