import Dispatch
import Foundation
import Synchronization

/// Turns the first SIGTERM or SIGINT into a call to `onSignal` (a graceful shutdown); a second
/// one exits at once with status 128 + its number (130 for SIGINT, 143 for SIGTERM, as a shell
/// reports a process those signals killed), for when the graceful path is stuck.
///
/// A second signal within `repeatWindow` of the first is the same request sent twice, not a
/// second one: `timeout` signals the command and then its whole process group, and a review's
/// worker under it exited at once, leaving its row and its jobs' leases behind.
public final class SignalHandler: @unchecked Sendable {
    /// How soon after the first a signal is taken for a copy of it.
    public static let repeatWindow = Duration.seconds(1)

    // Safe because `sources` is only written in `init`; Dispatch sources are thread-safe.
    private let sources: [any DispatchSourceSignal]

    /// - Parameters:
    ///   - onSignal: the graceful path, at the first signal.
    ///   - onSecondSignal: called just before the exit at the second (to say what is left behind).
    ///   - onCopy: called for a signal taken for a copy of the first (to say how to exit now).
    public init(
        onSignal: @escaping @Sendable () -> Void, onSecondSignal: @escaping @Sendable () -> Void = {},
        onCopy: @escaping @Sendable () -> Void = {}
    ) {
        let firstAt = Mutex<ContinuousClock.Instant?>(nil)
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                enum Seen { case first, copy, again }
                let seen = firstAt.withLock { first -> Seen in
                    guard let at = first else {
                        first = .now
                        return .first
                    }
                    return ContinuousClock.now - at < Self.repeatWindow ? .copy : .again
                }
                if seen == .copy {
                    onCopy()
                    return
                }
                if seen == .again {
                    // Out within a second even if saying so blocks (a full pipe on stderr).
                    let status = 128 + signalNumber
                    DispatchQueue.global().asyncAfter(deadline: .now() + 1) { _exit(status) }
                    onSecondSignal()
                    exit(status)
                }
                onSignal()
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// Stops listening for signals.
    public func cancel() {
        for source in sources { source.cancel() }
    }
}
