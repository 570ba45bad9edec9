import Foundation
import Postgres
import QueueModel

extension StatusSection {
    /// The background backlog: how much waits, whether it may run now (the price gate), the next
    /// cheap window, and when it will be drained at the current pace.
    static let background = StatusSection(key: "background", title: "BACKGROUND") { context in
        let status = try await BacklogStatus.load(context.pool)
        // BacklogStatus.lines starts with its own heading line; the section title replaces it.
        return StatusOutput(
            lines: [status.lines[0].replacingOccurrences(of: "background backlog: ", with: "")]
                + status.lines.dropFirst().map { $0.trimmingCharacters(in: .whitespaces) },
            json: status.json
        )
    }
}
