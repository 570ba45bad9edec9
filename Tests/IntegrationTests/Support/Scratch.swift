import Foundation

/// Where the tests' child processes keep port files, certificates and logs: one folder per test
/// process, `$TMPDIR/switchyard-tests-PID`. The first use in a run removes the folders of earlier
/// runs whose process is gone, so the latest run's logs stay on disk to read after a failure and
/// nothing piles up.
enum Scratch {
    static let directory: URL = {
        let files = FileManager.default
        let temporary = files.temporaryDirectory
        let prefix = "switchyard-tests-"
        for name in (try? files.contentsOfDirectory(atPath: temporary.path)) ?? [] where name.hasPrefix(prefix) {
            guard let pid = pid_t(name.dropFirst(prefix.count)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                try? files.removeItem(at: temporary.appending(path: name))
            }
        }
        let directory = temporary.appending(path: "\(prefix)\(getpid())")
        try? files.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }()

    /// A fresh path in the run's folder: `name-UUID` plus `suffix` (nothing is created).
    static func path(_ name: String, suffix: String = "") -> URL {
        directory.appending(path: "\(name)-\(UUID().uuidString)\(suffix)")
    }

    /// A fresh, empty folder in the run's folder.
    static func makeDirectory(_ name: String) throws -> URL {
        let folder = path(name)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }
}
