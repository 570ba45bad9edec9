import Foundation
import Postgres
import QueueModel
import Synchronization

/// Collects what a `Logger` writes, for tests that read the logs.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    /// A logger at `level` that writes here (lines pass through `Secrets.redact`, as in production).
    func logger(label: String = "worker", level: Logger.Level = .trace, format: Logger.Format = .logfmt) -> Logger {
        Logger(label: label, level: level, format: format) { line in self.lines.withLock { $0.append(line) } }
    }

    /// Every line so far.
    var all: [String] { lines.withLock { $0 } }

    /// Waits (polling lightly) until a line satisfies `predicate`, for at most `limit`.
    /// (The limit is `waitUntil`'s: on a slow day a housekeeper's first round came over 30 s in.)
    func waitFor(limit: Duration = .seconds(90), _ predicate: (String) -> Bool) async throws -> String? {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let line = all.first(where: predicate) { return line }
            try await Task.sleep(for: .milliseconds(20))
        }
        return all.first(where: predicate)
    }
}

/// The first notification `notifications` yields, or nil after `timeout`.
func firstNotification(_ notifications: PostgresNotifications, timeout: Duration = .seconds(10)) async
    -> PostgresNotification?
{
    await withTaskGroup(of: PostgresNotification?.self) { group in
        group.addTask {
            for await event in notifications {
                if case .notification(let notification) = event { return notification }
            }
            return nil
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
