import Foundation
import Postgres
import QueueModel

/// `dispatcher top`: the status screen, redrawn in place until q or Ctrl-C.
enum TopCommand {
    static let usage = """
        usage: dispatcher top [--interval DURATION] [--window DURATION] [--iterations N]

        A live view of the fleet, redrawn in the terminal: throughput, queue depth, workers, each
        model's latency, errors and breaker, open alerts. Press q (or Ctrl-C) to quit; the
        terminal is restored.

          --interval DURATION   how often to redraw (default 2s)
          --window DURATION     how far back rates and percentiles look (default 1m)
          --iterations N        draw N frames and exit (works without a terminal, e.g. in scripts)
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher top", options: ["interval", "window", "iterations", "database-url"],
            takesWords: false)
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        let interval = try arguments.duration("interval", default: .seconds(2))
        let window = try arguments.duration("window", default: .seconds(60))
        guard interval >= .milliseconds(100), window > .zero else {
            throw QueueError(.invalidInput, "--interval must be at least 100ms and --window longer than zero")
        }
        let iterations =
            arguments.value("iterations") == nil
            ? nil : try arguments.integer("iterations", default: 1, range: 1...1_000_000)
        let pool = try Database.pool(arguments, applicationName: "switchyard-top", maxConnections: 1)
        defer { Task { await pool.close() } }
        try await Migrator().requireCurrent(pool)
        let context = StatusContext(pool: pool, window: window, at: nil)

        let terminal = iterations == nil ? RawTerminal.enable() : nil
        if iterations == nil && terminal == nil {
            throw QueueError(
                .invalidInput, "dispatcher top needs a terminal (stdin and stdout)",
                hint: "Use `dispatcher status` (or `status --json`) in scripts, or `top --iterations N`.")
        }
        let events = TerminalEvents(interval: interval, readKeys: terminal != nil)
        defer {
            events.cancel()
            terminal?.restore()
        }
        var drawn = 0
        for await event in events.stream {
            switch event {
            case .key(let byte) where byte == UInt8(ascii: "q") || byte == UInt8(ascii: "Q") || byte == 3 || byte == 4:
                return ExitCode.success
            case .interrupt:
                return ExitCode.success
            case .key:
                continue
            case .tick, .resize:
                let report = await StatusReport.load(context)
                let size = terminal == nil ? (rows: 1000, columns: 1000) : RawTerminal.size
                RawTerminal.write(frame(report, interval: interval, size: size, inPlace: terminal != nil))
                drawn += 1
                if let iterations, drawn >= iterations { return ExitCode.success }
            }
        }
        return ExitCode.success
    }

    /// One screenful: the report's lines cut to the terminal's size, drawn over the last frame
    /// (home, each line then clear-to-end-of-line, then clear below) so it does not flicker.
    static func frame(_ report: StatusReport, interval: Duration, size: (rows: Int, columns: Int), inPlace: Bool)
        -> String
    {
        // Keys are read only from a terminal; drawn to a pipe (--iterations), it is a snapshot.
        let heading = "switchyard top — every \(StatusFormat.window(interval))" + (inPlace ? ", q quits" : "")
        let all = report.lines(heading: heading)
        var kept = Array(all.prefix(max(1, size.rows - 1)))
        if kept.count < all.count, kept.count > 1 {
            // Said, not silently cut: the rest is a `dispatcher status` away.
            kept[kept.count - 1] = "… \(all.count - kept.count + 1) more lines (dispatcher status shows all)"
        }
        let lines = kept.map { line in
            line.count > size.columns ? String(line.prefix(size.columns - 1)) + "…" : line
        }
        guard inPlace else { return lines.joined(separator: "\n") + "\n\n" }
        return "\u{1B}[H" + lines.map { $0 + "\u{1B}[K" }.joined(separator: "\n") + "\n\u{1B}[J"
    }
}
