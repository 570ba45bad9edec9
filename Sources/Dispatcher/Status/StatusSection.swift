import Foundation
import Postgres
import QueueModel

/// What every status section reads from: the database and the window to summarise.
struct StatusContext: Sendable {
    let pool: PostgresPool
    /// How far back the summaries look.
    let window: Duration
    /// The moment to report as of; nil for the database's now.
    let at: Date?

    var observability: ObservabilityStore { ObservabilityStore(pool: pool) }
    var alerts: AlertStore { AlertStore(pool: pool) }
}

/// One section's contribution: lines for the screen, a value for `--json`.
struct StatusOutput: Sendable {
    /// The section's lines, without its title.
    var lines: [String]
    /// The section's data under its key in `--json`.
    var json: JSONValue
    /// More top-level keys of `--json`, beside the section's own (its key's shape stays as it was).
    var siblings: [String: JSONValue] = [:]
}

/// One part of `dispatcher status` (and of `dispatcher top`): loads its data and renders it.
///
/// A feature adds its own part by appending a section to `StatusSection.all`; nothing else needs
/// to change. Sections load one after another and render in order.
struct StatusSection: Sendable {
    /// Its key in the `--json` object (snake_case).
    var key: String
    /// Its heading on screen.
    var title: String
    /// Loads and renders the section.
    var load: @Sendable (StatusContext) async throws -> StatusOutput

    /// The sections `status` and `top` show, in order.
    /// Alerts second: `top` cuts the report to the terminal, and with fifty models they fell off.
    static let all: [StatusSection] = [.overview, .alerts, .queue, .background, .workers, .models]
}

/// A whole status report: every section's output, for the screen or as JSON.
struct StatusReport: Sendable {
    var window: Duration
    var generatedAt: Date
    var sections: [(section: StatusSection, output: StatusOutput)]
    /// The keys of the sections that could not be loaded (their output shows why).
    var unavailable: [String] = []
    /// Whether one of them failed for the role's privileges (`permission denied`).
    var deniedByRole = false
    /// The server the report was read from (nil if it could not be read).
    var server: ServerIdentity?

    /// Loads every section; a section that fails shows its error instead of failing the report.
    static func load(_ context: StatusContext, sections: [StatusSection] = StatusSection.all) async -> StatusReport {
        var outputs: [(StatusSection, StatusOutput)] = []
        var unavailable: [String] = []
        var deniedByRole = false
        for section in sections {
            do {
                outputs.append((section, try await section.load(context)))
            } catch {
                outputs.append(
                    (section, StatusOutput(lines: ["unavailable: \(error)"], json: ["error": .string("\(error)")])))
                unavailable.append(section.key)
                if !DispatcherCommand.privilegeHint(error).isEmpty { deniedByRole = true }
            }
        }
        return StatusReport(
            window: context.window, generatedAt: context.at ?? Date(), sections: outputs, unavailable: unavailable,
            deniedByRole: deniedByRole, server: try? await ServerIdentity.read(context.pool))
    }

    /// The report as lines for a terminal.
    func lines(heading: String = "Switchyard status") -> [String] {
        var lines = ["\(heading) — \(StatusFormat.clock(generatedAt)) UTC, last \(StatusFormat.window(window))"]
        if let server { lines.append(Self.serverLine(server, at: Date())) }
        for (section, output) in sections {
            lines.append("")
            lines.append(section.title)
            lines += output.lines.map { $0.isEmpty ? "" : "  " + $0 }
        }
        return lines
    }

    /// `database: 10.0.0.5:5432, PostgreSQL 15.18, system 77…, timeline 2`; on a standby, what it
    /// has replayed: its figures are the primary's as of then.
    static func serverLine(_ server: ServerIdentity, at now: Date) -> String {
        var line = "database: \(server.description)"
        if server.isStandby {
            line += ": takes no writes; "
            if let replayed = server.replayedCommitAt {
                let behind = max(now.timeIntervalSince(replayed), 0)
                line += "replayed up to a commit made \(StatusFormat.seconds(behind)) ago on the primary "
                    + "(\(StatusFormat.clock(replayed)) UTC; it may simply have committed nothing since)"
            } else {
                line += "it has replayed no transaction since it started"
            }
        }
        return line
    }

    /// The report as one JSON object: the window, the time, then each section under its key.
    var json: JSONValue {
        var object: [String: JSONValue] = [
            "window_s": .number(window.seconds), "generated_at": .string(generatedAt.postgresText),
            "database": server?.json ?? .null,
        ]
        for (section, output) in sections {
            object[section.key] = output.json
            object.merge(output.siblings) { current, _ in current }
        }
        return .object(object)
    }
}
