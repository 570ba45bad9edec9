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
            #if !os(Linux)
                // kqueue reports a signal whatever its action: ignored, it does not end the process.
                signal(signalNumber, SIG_IGN)
            #endif
            // On Linux the source installs its own handler as it is resumed; ignored first, a signal
            // that came in between was lost: a test's worker, sent SIGTERM as it started, ran on
            // and held its test (and a CI run) for 13 minutes.
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
            #if os(Linux)
                // Installed on a queue of Dispatch's own a moment after `resume`: waited for (a
                // second at most), so that a signal sent once the caller says it is up is not
                // taken by the default action.
                let deadline = ContinuousClock.now + .seconds(1)
                while ContinuousClock.now < deadline, !Self.isHandled(signalNumber) { usleep(500) }
            #endif
        }
        self.sources = sources
    }

    #if os(Linux)
        /// Whether the process has a handler for the signal (not the default action).
        static func isHandled(_ signalNumber: Int32) -> Bool {
            var action = sigaction()
            sigaction(signalNumber, nil, &action)
            return unsafeBitCast(action.__sigaction_handler, to: Int.self) != 0
        }
    #endif

    /// Stops listening for signals.
    public func cancel() {
        for source in sources { source.cancel() }
    }
}
