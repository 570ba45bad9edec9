import Foundation
import Postgres
import QueueModel

extension StatusSection {
    /// The background backlog: how much waits, whether it may run now (the price gate), the next
    /// cheap window, and when it will be drained at the current pace.
    static let background = StatusSection(key: "background", title: "BACKGROUND") { context in
        let status = try await BacklogStatus.load(context.pool)
        var json: [String: JSONValue] = [
            "queued": .number(Double(status.queued)), "running": .number(Double(status.running)),
            "waiting": .number(Double(status.waiting)),
            "gate_open": .bool(status.gate.isOpen), "gate_reason": .string(status.gate.reason),
            "per_minute": .number(status.perMinute), "last_minute": .number(status.lastMinute),
            "paused": .bool(status.policy.paused),
        ]
        if let next = status.gate.nextOpenAt { json["next_cheap_window"] = .string(next.postgresText) }
        if let next = status.nextWaitingAt { json["next_waiting_at"] = .string(next.postgresText) }
        if let done = status.drainedAt { json["drained_by"] = .string(done.postgresText) }
        if let ceiling = status.policy.maxCostPer1K { json["max_cost_per_1k"] = .string(ceiling.description) }
        // BacklogStatus.lines starts with its own heading line; the section title replaces it.
        return StatusOutput(
            lines: [status.lines[0].replacingOccurrences(of: "background backlog: ", with: "")]
                + status.lines.dropFirst().map { $0.trimmingCharacters(in: .whitespaces) },
            json: .object(json)
        )
    }
}
