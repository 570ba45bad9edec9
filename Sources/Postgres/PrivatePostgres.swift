import Foundation

/// A throwaway PostgreSQL cluster in a temporary directory, for tests, benchmarks and the demo.
///
/// `start()` runs `initdb` and `pg_ctl` (found on PATH or under `/usr/lib/postgresql/*/bin`) on a
/// free port, with its own unix socket directory. As root it runs them as the `postgres` user,
/// because `initdb` refuses root. `stop()` stops the server and deletes the directory; if this
/// process dies first, a small watchdog process does the same, so nothing is left behind.
public final class PrivatePostgres: Sendable {
    /// The directory that holds the cluster, its socket and its log.
    public let root: URL
    public let port: Int
    /// The address the server listens on for TCP.
    public let listenAddress: String
    private let binaries: URL
    private let runAsPostgres: Bool
    private let watchdogPID: Int32

    /// Server settings that trade durability for speed; a throwaway cluster loses nothing by them.
    public static let fastSettings: [String: String] = [
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        // The test suite runs some fifty databases at once, each with its pool and worker
        // processes: 300 ran out now and then ("too many clients already").
        "max_connections": "500",
        "shared_buffers": "256MB",
        "log_min_messages": "warning",
        "log_min_error_statement": "panic",
    ]

    private var dataDirectory: URL { root.appending(path: "data") }
    private var logFile: URL { root.appending(path: "server.log") }

    /// A `key=value` connection string over the unix socket (the fastest path), as `postgres`.
    public func connectionString(database: String = "postgres") -> String {
        "host=\(root.path) port=\(port) user=postgres dbname=\(database)"
    }

    /// A `postgres://` URL over TCP.
    public func url(database: String = "postgres") -> String {
        "postgres://postgres@\(listenAddress):\(port)/\(database)"
    }

    /// A configuration for one of the cluster's databases, over the unix socket.
    public func configuration(database: String = "postgres") -> PostgresConfiguration {
        // The string is built here from known parts; it always parses.
        try! PostgresConfiguration(connectionString(database: database))
    }

    private init(root: URL, port: Int, listenAddress: String, binaries: URL, runAsPostgres: Bool, watchdogPID: Int32) {
        self.root = root
        self.port = port
        self.listenAddress = listenAddress
        self.binaries = binaries
        self.runAsPostgres = runAsPostgres
        self.watchdogPID = watchdogPID
    }

    /// Creates and starts a cluster.
    /// - Parameters:
    ///   - settings: `postgresql.conf` settings; `fastSettings` by default.
    ///   - listenAddress: where to accept TCP connections (`*` for every interface).
    ///   - tcpAuthentication: the `pg_hba.conf` method for TCP connections (`trust`,
    ///     `scram-sha-256`); the unix socket always trusts.
    /// - Throws: `PrivatePostgresError` naming the step that failed and quoting its output.
    public static func start(
        settings: [String: String] = fastSettings, listenAddress: String = "127.0.0.1",
        tcpAuthentication: String = "trust"
    ) async throws -> PrivatePostgres {
        try await BlockingWork.run(name: "private-postgres") {
            try startBlocking(settings: settings, listenAddress: listenAddress, tcpAuthentication: tcpAuthentication)
        }
    }

    private static func startBlocking(
        settings: [String: String], listenAddress: String, tcpAuthentication: String
    ) throws -> PrivatePostgres {
        let binaries = try findBinaries()
        let runAsPostgres = geteuid() == 0
        let root = try makeRoot(asPostgres: runAsPostgres)
        do {
            try run(
                binaries.appending(path: "initdb"),
                ["-D", root.appending(path: "data").path, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--locale=C", "-N"],
                asPostgres: runAsPostgres, step: "initdb"
            )
            var lines = ["", "# Added by Switchyard's private Postgres harness", "unix_socket_directories = '\(root.path)'",
                         "listen_addresses = '\(listenAddress)'"]
            for (key, value) in settings.sorted(by: { $0.key < $1.key }) {
                lines.append("\(key) = '\(value.replacingOccurrences(of: "'", with: "''"))'")
            }
            // The socket is this machine's user's own (replication too, for a standby of it); TCP
            // (other hosts, in the multi-host test) is trusted too unless the caller asks for passwords.
            let hba = """
                local all all trust
                local replication all trust
                host all all 0.0.0.0/0 \(tcpAuthentication)
                host all all ::/0 \(tcpAuthentication)

                """
            try hba.write(to: root.appending(path: "data/pg_hba.conf"), atomically: false, encoding: .utf8)
            try appendText(lines.joined(separator: "\n") + "\n", to: root.appending(path: "data/postgresql.conf"))
            return try startServer(root: root, listenAddress: listenAddress, binaries: binaries, asPostgres: runAsPostgres)
        } catch {
            try? FileManager.default.removeItem(at: root)
            throw error
        }
    }

    /// Creates and starts a streaming standby of this cluster (`pg_basebackup -R` over its
    /// socket), in its own directory, on its own port: read-only until `promote()`.
    public func startStandby() async throws -> PrivatePostgres {
        try await BlockingWork.run(name: "private-postgres") { [self] in
            let root = try Self.makeRoot(asPostgres: runAsPostgres)
            do {
                try Self.run(
                    binaries.appending(path: "pg_basebackup"),
                    ["-D", root.appending(path: "data").path, "-R", "-X", "stream", "-c", "fast", "-h", self.root.path,
                     "-p", String(port), "-U", "postgres"],
                    asPostgres: runAsPostgres, step: "pg_basebackup"
                )
                // The copy's settings are the primary's: its own socket directory wins, as the last line.
                try Self.appendText(
                    "unix_socket_directories = '\(root.path)'\n", to: root.appending(path: "data/postgresql.conf"))
                return try Self.startServer(
                    root: root, listenAddress: listenAddress, binaries: binaries, asPostgres: runAsPostgres)
            } catch {
                try? FileManager.default.removeItem(at: root)
                throw error
            }
        }
    }

    /// Promotes a standby to a primary (a new timeline), and waits until it takes writes.
    public func promote() async throws {
        try await BlockingWork.run(name: "private-postgres") { [self] in
            try Self.run(
                binaries.appending(path: "pg_ctl"), ["-D", dataDirectory.path, "-w", "-t", "60", "promote"],
                asPostgres: runAsPostgres, step: "pg_ctl promote", logFile: logFile
            )
        }
    }

    /// A new temporary directory for a cluster, the `postgres` user's when running as root.
    private static func makeRoot(asPostgres: Bool) throws -> URL {
        let template = FileManager.default.temporaryDirectory.appending(path: "switchyard-pg-XXXXXX").path
        var buffer = Array(template.utf8CString)
        guard mkdtemp(&buffer) != nil else {
            throw PrivatePostgresError("could not create a temporary directory under \(template): errno \(errno)")
        }
        let root = URL(fileURLWithPath: String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        if asPostgres {
            guard let account = getpwnam("postgres") else {
                try? FileManager.default.removeItem(at: root)
                throw PrivatePostgresError(
                    "running as root, but there is no `postgres` user to run initdb as (initdb refuses root)",
                    hint: "Install PostgreSQL from your distribution (it creates the user), or run as a normal user."
                )
            }
            chmod(root.path, 0o700)
            chown(root.path, account.pointee.pw_uid, account.pointee.pw_gid)
        }
        return root
    }

    /// Starts the cluster in `root/data` on a free port, with a watchdog.
    private static func startServer(root: URL, listenAddress: String, binaries: URL, asPostgres: Bool) throws
        -> PrivatePostgres
    {
        let configFile = root.appending(path: "data/postgresql.conf")
        var lastError: Error?
        for _ in 0..<5 {
            let port = try freePort()
            // The last `port` line wins, so a retry just appends another.
            try appendText("port = \(port)\n", to: configFile)
            do {
                try run(
                    binaries.appending(path: "pg_ctl"),
                    ["-D", root.appending(path: "data").path, "-l", root.appending(path: "server.log").path,
                     "-w", "-t", "60", "start"],
                    asPostgres: asPostgres, step: "pg_ctl start", logFile: root.appending(path: "server.log")
                )
            } catch {
                // Most likely another process took the port between our probe and the start.
                lastError = error
                continue
            }
            // Started: a watchdog that cannot start is no port clash; the server stops before its
            // directory goes.
            do {
                let watchdog = try startWatchdog(root: root, binaries: binaries, asPostgres: asPostgres)
                return PrivatePostgres(
                    root: root, port: port, listenAddress: listenAddress == "*" ? "127.0.0.1" : listenAddress,
                    binaries: binaries, runAsPostgres: asPostgres, watchdogPID: watchdog
                )
            } catch {
                try? run(
                    binaries.appending(path: "pg_ctl"),
                    ["-D", root.appending(path: "data").path, "-m", "immediate", "-w", "stop"],
                    asPostgres: asPostgres, step: "pg_ctl stop")
                throw error
            }
        }
        throw lastError ?? PrivatePostgresError("could not start the server")
    }

    /// Stops the server (fast shutdown) and deletes its directory.
    public func stop() async throws {
        try await BlockingWork.run(name: "private-postgres") { [self] in
            defer {
                kill(watchdogPID, SIGKILL)
                try? FileManager.default.removeItem(at: root)
            }
            try Self.run(
                binaries.appending(path: "pg_ctl"), ["-D", dataDirectory.path, "-m", "fast", "-w", "stop"],
                asPostgres: runAsPostgres, step: "pg_ctl stop"
            )
        }
    }

    /// Restarts the server (fast shutdown, which ends every session), keeping its data and port.
    public func restart() async throws {
        try await BlockingWork.run(name: "private-postgres") { [self] in
            try Self.run(
                binaries.appending(path: "pg_ctl"),
                ["-D", dataDirectory.path, "-l", logFile.path, "-m", "fast", "-w", "-t", "60", "restart"],
                asPostgres: runAsPostgres, step: "pg_ctl restart", logFile: logFile
            )
        }
    }

    /// The server's log so far (useful when a test fails).
    public func log() -> String {
        (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
    }

    // MARK: Helpers

    /// Finds `initdb` and `pg_ctl` in the same directory: PATH first, then the newest
    /// `/usr/lib/postgresql/N/bin`.
    static func findBinaries() throws -> URL {
        var candidates: [URL] = []
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            candidates.append(URL(fileURLWithPath: String(directory)))
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            candidates.append(URL(fileURLWithPath: "/usr/lib/postgresql/\(version)/bin"))
        }
        for directory in candidates {
            let initdb = directory.appending(path: "initdb").resolvingSymlinksInPath()
            let binDirectory = initdb.deletingLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: initdb.path),
                FileManager.default.isExecutableFile(atPath: binDirectory.appending(path: "pg_ctl").path)
            {
                return binDirectory
            }
        }
        throw PrivatePostgresError(
            "could not find initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin",
            hint: "Install the PostgreSQL server (Debian: apt-get install -y postgresql), or set DATABASE_URL "
                + "to a server of your own."
        )
    }

    private static func freePort() throws -> Int {
        let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketDescriptor >= 0 else { throw PrivatePostgresError("could not open a socket to find a free port") }
        defer { close(socketDescriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(socketDescriptor, pointer, length) == 0 && getsockname(socketDescriptor, pointer, &length) == 0
            }
        }
        guard bound else { throw PrivatePostgresError("could not bind a socket to find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func appendText(_ text: String, to file: URL) throws {
        let handle = try FileHandle(forWritingTo: file)
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
    }

    /// Starts a process that waits for this one to exit, then stops the cluster and deletes it.
    /// It ignores the terminal's signals, so Ctrl-C on a test run still leaves nothing behind.
    private static func startWatchdog(root: URL, binaries: URL, asPostgres: Bool) throws -> Int32 {
        let pgCtl = "'\(binaries.appending(path: "pg_ctl").path)' -D '\(root.appending(path: "data").path)' -m immediate stop"
        let stop = asPostgres ? "runuser -u postgres -- \(pgCtl)" : pgCtl
        let script = """
            trap '' INT TERM HUP
            tail --pid=\(getpid()) -f /dev/null
            \(stop) >/dev/null 2>&1
            rm -rf '\(root.path)'
            """
        let child = try ChildProcess.spawn(
            "/bin/sh", ["-c", script], standardOutput: .discard, standardError: .discard
        )
        return child.pid
    }

    /// Runs a PostgreSQL program, as the `postgres` user when asked, and throws with its output
    /// when it fails.
    private static func run(
        _ executable: URL, _ arguments: [String], asPostgres: Bool, step: String, logFile: URL? = nil
    ) throws {
        let (status, output) = try asPostgres
            ? ChildProcess.run("runuser", ["-u", "postgres", "--", executable.path] + arguments)
            : ChildProcess.run(executable.path, arguments)
        guard status == 0 else {
            var message = "\(step) failed (exit \(status)): \(output.trimmingCharacters(in: .whitespacesAndNewlines))"
            if let logFile, let log = try? String(contentsOf: logFile, encoding: .utf8) {
                message += "\nserver log:\n" + log.split(separator: "\n").suffix(15).joined(separator: "\n")
            }
            throw PrivatePostgresError(message)
        }
    }
}

/// A failure to create, start or stop a private cluster.
public struct PrivatePostgresError: Error, CustomStringConvertible {
    public var message: String
    public var hint: String?
    init(_ message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }
    public var description: String { hint.map { "\(message)\nhint: \($0)" } ?? message }
}
