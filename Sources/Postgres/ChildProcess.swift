import CLibPQ
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn` and reaped with `waitpid`.
///
/// Foundation's `Process` on Linux relies on a run loop to notice that a child exited, and was
/// seen to miss it (leaving a zombie and a caller waiting forever); this does the plain POSIX
/// thing instead. `wait()` blocks: call it from `BlockingWork.run`, never on the cooperative pool.
public struct ChildProcess: Sendable {
    /// Where a child's standard output or error goes.
    public enum Output: Sendable {
        case inherit
        case discard
        /// Appends to a file, creating it if needed.
        case file(String)
    }

    public let pid: pid_t

    /// Starts a program.
    /// - Parameters:
    ///   - executable: an absolute path, or a name looked up on PATH.
    ///   - environment: the child's whole environment; nil inherits this process's.
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        standardOutput: Output = .inherit, standardError: Output = .inherit
    ) throws -> ChildProcess {
        let path = try resolve(executable)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        for (descriptor, output) in [(Int32(1), standardOutput), (Int32(2), standardError)] {
            switch output {
            case .inherit: break
            case .discard: posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", O_WRONLY, 0)
            case .file(let file):
                posix_spawn_file_actions_addopen(&actions, descriptor, file, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            }
        }
        return try spawn(path: path, arguments: arguments, environment: environment, actions: &actions)
    }

    /// Runs a program to completion and returns its exit status and combined output.
    /// Blocks: call it from `BlockingWork.run`.
    public static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let path = try resolve(executable)
        var descriptors: [Int32] = [0, 0]
        // Close-on-exec, so the only copies a child gets are the dup2'd stdout and stderr; a copy
        // left in the child (and its daemons, like a postmaster) would keep us reading forever.
        guard switchyard_cloexec_pipe(&descriptors) == 0 else { throw ChildProcessError("could not create a pipe: errno \(errno)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, descriptors[1], 1)
        posix_spawn_file_actions_adddup2(&actions, descriptors[1], 2)
        posix_spawn_file_actions_addclose(&actions, descriptors[0])
        let child: ChildProcess
        do {
            child = try spawn(path: path, arguments: arguments, environment: nil, actions: &actions)
        } catch {
            close(descriptors[0])
            close(descriptors[1])
            throw error
        }
        close(descriptors[1])
        var output = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(descriptors[0], &buffer, buffer.count)
            if count > 0 {
                output.append(contentsOf: buffer[0..<count])
            } else if count == 0 || errno != EINTR {
                break
            }
        }
        close(descriptors[0])
        return (child.wait(), String(decoding: output, as: UTF8.self))
    }

    private static func spawn(
        path: String, arguments: [String], environment: [String: String]?,
        actions: inout posix_spawn_file_actions_t
    ) throws -> ChildProcess {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Children start with default signal handling, whatever this process ignores or blocks.
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environmentStrings = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let envp = environmentStrings.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard status == 0 else {
            throw ChildProcessError("could not start \(path): \(String(cString: strerror(status)))")
        }
        return ChildProcess(pid: pid)
    }

    /// Waits for the child to exit and returns its exit status (128 + N when killed by signal N).
    public func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Returns the exit status if the child has exited, without waiting.
    public func poll() -> Int32? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Sends a signal (SIGTERM, SIGKILL, …).
    public func signal(_ signal: Int32) {
        kill(pid, signal)
    }

    /// Finds a program on PATH unless given a path.
    public static func resolve(_ executable: String) throws -> String {
        if executable.contains("/") { return executable }
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
            .split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        for directory in directories {
            let candidate = "\(directory)/\(executable)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw ChildProcessError("could not find \(executable) on PATH")
    }
}

/// A child process could not be started.
public struct ChildProcessError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
