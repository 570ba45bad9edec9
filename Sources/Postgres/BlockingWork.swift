import Foundation

/// Runs blocking work (waiting for a child process, a file system walk) on a fresh thread, so it
/// never parks one of the cooperative pool's few threads.
public enum BlockingWork {
    /// Runs `body` on a new thread and resumes the caller with its result.
    public static func run<T: Sendable>(
        name: String = "blocking-work", _ body: @escaping @Sendable () throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try body() })
            }
            thread.name = name
            thread.start()
        }
    }
}
