import Foundation

/// A serial executor that runs every job on one dedicated operating-system thread.
///
/// libpq calls block. Swift's cooperative pool has one thread per core (two on the machines this
/// project targets), so a single blocking call there stalls every task in the process. Each
/// connection's actor runs on its own `ThreadExecutor` instead: its blocking calls park only that
/// thread, and the C handle is only ever touched from it.
final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    // Safe because `jobs` and `stopping` are only touched with `condition` held, and the thread
    // itself is immutable after `init`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var stopping = false
    private let name: String

    /// Starts the thread.
    /// - Parameter name: the thread's name, shown by debuggers and `top -H`.
    init(name: String) {
        self.name = name
        let thread = Thread { [self] in self.runLoop() }
        thread.name = name
        // Connections mostly wait on sockets; a small stack keeps many of them cheap.
        thread.stackSize = 512 * 1024
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        condition.lock()
        jobs.append(unowned)
        condition.signal()
        condition.unlock()
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets the thread finish the jobs already queued, then exit.
    func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func runLoop() {
        var batch: [UnownedJob] = []
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping {
                condition.wait()
            }
            if jobs.isEmpty && stopping {
                condition.unlock()
                return
            }
            swap(&batch, &jobs)
            condition.unlock()
            for job in batch {
                job.runSynchronously(on: asUnownedSerialExecutor())
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
