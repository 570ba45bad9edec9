import Foundation

/// One figure a benchmark produced.
struct Measurement: Codable, Sendable {
    var scenario: String
    var metric: String
    var value: Double
    var unit: String
    /// What the figure is compared with in the same run, if anything.
    var baseline: Double?
    var baselineName: String?
    var note: String?

    /// The figure as a share of its baseline, when it has one.
    var ratio: Double? { baseline.flatMap { $0 > 0 ? value / $0 : nil } }
}

/// The figures of one `dispatcher bench` run, printed as a table and written as JSON.
struct BenchReport: Codable, Sendable {
    var startedAt = Date()
    var machine = MachineDescription.current()
    var database: String
    var measurements: [Measurement] = []

    mutating func add(_ measurement: Measurement) {
        measurements.append(measurement)
        print("  " + Self.line(measurement))
    }

    func table() -> String {
        measurements.map(Self.line).joined(separator: "\n")
    }

    static func line(_ measurement: Measurement) -> String {
        var text = "\(measurement.scenario.padding(toLength: 12, withPad: " ", startingAt: 0)) "
            + "\(measurement.metric.padding(toLength: 40, withPad: " ", startingAt: 0)) "
            + "\(format(measurement.value)) \(measurement.unit)"
        if let baseline = measurement.baseline, let name = measurement.baselineName {
            text += "   vs \(name) \(format(baseline)) \(measurement.unit)"
            if let ratio = measurement.ratio { text += " (\(String(format: "%.0f", ratio * 100))%)" }
        }
        if let note = measurement.note { text += "   [\(note)]" }
        return text
    }

    static func format(_ value: Double) -> String {
        if value >= 100 { return String(format: "%.0f", value) }
        if value >= 1 { return String(format: "%.2f", value) }
        return String(format: "%.4f", value)
    }

    func writeJSON(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try OutputFile.write(try encoder.encode(self), to: path)
    }
}

/// What the benchmark ran on, for the record next to its figures.
struct MachineDescription: Codable, Sendable {
    var cores: Int
    var memoryGiB: Double
    var cpu: String
    var kernel: String

    static func current() -> MachineDescription {
        let cpuInfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuInfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) }
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return MachineDescription(
            cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryGiB: (Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824 * 10).rounded() / 10,
            cpu: model ?? "unknown", kernel: release
        )
    }
}
