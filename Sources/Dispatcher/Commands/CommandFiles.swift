import Foundation
import QueueModel

/// Reads what a command is given to read: a file, or stdin for `-`; and names why it cannot.
enum InputFile {
    /// The bytes of a file, or of stdin for `-`.
    /// - Throws: `QueueError.invalidInput` naming the path and the reason (a missing file, a
    ///   directory, a closed stdin), never a trap.
    static func read(_ path: String) throws -> Data {
        let name = path == "-" ? "stdin" : path
        do {
            let handle = path == "-" ? FileHandle.standardInput : try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            return try handle.readToEnd() ?? Data()
        } catch {
            throw QueueError(
                .invalidInput, "cannot read \(name): \(reason(error))",
                hint: path == "-" ? "Pipe the input in, or give a file's path." : "Check that the file exists and is readable.")
        }
    }

    /// The reason a read failed, as the system says it ("Is a directory", "No such file or
    /// directory"), without Foundation's error domain and code.
    static func reason(_ error: any Error) -> String {
        let error = error as NSError
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if error.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(error.code))) }
        return error.localizedDescription
    }
}

/// Writes what a command is asked to write to a file (`--json FILE`, `--html FILE`, `--file FILE`).
enum OutputFile {
    /// Writes `data` to `path`, replacing it.
    /// - Throws: `QueueError.invalidInput` naming the path and the reason ("Is a directory"), not
    ///   Foundation's "(NSCocoaErrorDomain error 512.)".
    static func write(_ data: Data, to path: String) throws {
        do {
            if let problem = problem(path) { throw QueueError(.invalidInput, problem) }
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw QueueError(
                .invalidInput, "cannot write \(path): \((error as? QueueError)?.message ?? InputFile.reason(error))",
                hint: "Check that its directory exists and is writable.")
        }
    }

    /// Refuses a path that cannot be written, before a long run whose figures would be lost.
    static func check(_ path: String) throws {
        if let problem = problem(path) {
            throw QueueError(
                .invalidInput, "cannot write \(path): \(problem); nothing was run",
                hint: "Check that its directory exists and is writable.")
        }
    }

    /// Why `path` cannot be written, as the system would say it; nil when it can be.
    private static func problem(_ path: String) -> String? {
        var isDirectory: ObjCBool = false
        let manager = FileManager.default
        if manager.fileExists(atPath: path, isDirectory: &isDirectory) {
            return isDirectory.boolValue ? "Is a directory" : manager.isWritableFile(atPath: path) ? nil : "Permission denied"
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return !manager.fileExists(atPath: directory) ? "No such file or directory"
            : manager.isWritableFile(atPath: directory) ? nil : "Permission denied"
    }
}
