/// Exit statuses scripts can rely on (also listed in docs/cli.md).
enum ExitCode {
    /// Done; every job involved succeeded (or was submitted, cancelled, …as asked).
    static let success: Int32 = 0
    /// Something failed that is not the input's fault (database unreachable, …).
    static let failure: Int32 = 1
    /// Bad input or usage: nothing (or, for bulk submission, not everything) was accepted.
    static let invalidInput: Int32 = 2
    /// A job ended, but not in success: failed, cancelled or expired.
    static let jobNotSucceeded: Int32 = 3
    /// `--timeout` ran out before every job finished.
    static let timedOut: Int32 = 4
    /// The job has not finished yet.
    static let notFinished: Int32 = 5
    /// No such job.
    static let notFound: Int32 = 6
}
