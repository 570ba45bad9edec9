import Foundation
import QueueModel

/// Reads what a command is given to read: a file, or stdin for `-`.
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
