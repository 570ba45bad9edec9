import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What a full-screen view reacts to.
enum TerminalEvent: Sendable, Equatable {
    /// A byte typed on the keyboard.
    case key(UInt8)
    /// The window changed size.
    case resize
    /// SIGINT, SIGTERM or SIGHUP: time to restore the terminal and leave.
    case interrupt
    /// The refresh timer.
    case tick
}

/// Keys, signals and ticks as one stream, with no thread blocked and no polling: stdin is watched
/// by a Dispatch read source (the kernel says when a key is there), signals by Dispatch signal
/// sources, and the timer is a sleeping task. Nothing here runs a blocking call on the
/// cooperative pool.
final class TerminalEvents: @unchecked Sendable {
    // Safe because `sources` and `ticker` are written only in `init` and read in `cancel()`;
    // Dispatch sources and tasks are thread-safe.
    private let sources: [any DispatchSourceProtocol]
    private let ticker: Task<Void, Never>
    private let continuation: AsyncStream<TerminalEvent>.Continuation
    /// The events, in the order they happened.
    let stream: AsyncStream<TerminalEvent>

    /// Starts watching.
    /// - Parameters:
    ///   - interval: how often a `.tick` arrives.
    ///   - readKeys: watch stdin (only when it is a terminal in raw mode).
    init(interval: Duration, readKeys: Bool) {
        let (stream, continuation) = AsyncStream.makeStream(
            of: TerminalEvent.self, bufferingPolicy: .bufferingNewest(64))
        self.stream = stream
        self.continuation = continuation
        let queue = DispatchQueue(label: "switchyard.terminal-events")
        var sources: [any DispatchSourceProtocol] = []
        if readKeys {
            let keys = DispatchSource.makeReadSource(fileDescriptor: STDIN_FILENO, queue: queue)
            keys.setEventHandler {
                var buffer = [UInt8](repeating: 0, count: 64)
                let count = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                guard count > 0 else {
                    // End of input (or an error): stop watching, or the source would fire forever.
                    keys.cancel()
                    return
                }
                for byte in buffer[..<count] { continuation.yield(.key(byte)) }
            }
            keys.resume()
            sources.append(keys)
        }
        for (number, event) in [
            (SIGINT, TerminalEvent.interrupt), (SIGTERM, .interrupt), (SIGHUP, .interrupt),
            (SIGWINCH, .resize),
        ] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { continuation.yield(event) }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
        ticker = Task {
            while !Task.isCancelled {
                continuation.yield(.tick)
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Stops watching and ends the stream; the signals get their default handling back.
    func cancel() {
        ticker.cancel()
        for source in sources { source.cancel() }
        for number in [SIGINT, SIGTERM, SIGHUP, SIGWINCH] { signal(number, SIG_DFL) }
        continuation.finish()
    }
}
