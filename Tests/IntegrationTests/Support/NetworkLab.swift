import Foundation
import Synchronization

@testable import Postgres

/// Several "hosts" on one machine: a network namespace each, every one wired by a veth pair to a
/// bridge that lives in a namespace of its own (the switch), so the hosts reach each other at
/// 10.231.0.0/24 and nothing else — the machine's own network never sees their traffic.
///
/// It can start a Postgres server inside a host, run programs inside hosts (`ip netns exec`), and
/// pull a host's cable (`ip link set eth0 down`). Needs root and iproute2; `unavailableReason`
/// says why it cannot run here. Every namespace, process and file it makes is removed by
/// `destroy()`, and by a watchdog process if this process dies first.
final class NetworkLab: Sendable {
    /// A prefix unique to this lab, for namespace names (`sy3f9k-w1`).
    let prefix: String
    /// The lab's directory: the Postgres cluster, its unix socket, and the logs.
    let root: URL
    let hosts: [String]
    private let cleanupScript: String
    private let watchdog: ChildProcess
    /// Children started in the hosts and not yet reaped: `destroy()` kills and reaps them. A
    /// reaped child's pid may be reused, so it leaves this set the moment it is reaped.
    private let children = Mutex<[pid_t: ChildProcess]>([:])

    static let postgresPort = 5432
    private static let switchName = "sw"

    private init(prefix: String, root: URL, hosts: [String], cleanupScript: String, watchdog: ChildProcess) {
        self.prefix = prefix
        self.root = root
        self.hosts = hosts
        self.cleanupScript = cleanupScript
        self.watchdog = watchdog
    }

    func namespace(_ host: String) -> String { "\(prefix)-\(host)" }

    /// The host's address on the lab network.
    func address(_ host: String) -> String {
        "10.231.0.\(10 + (hosts.firstIndex(of: host) ?? 0))"
    }

    // MARK: Availability

    /// Why the lab cannot run on this machine, or nil when it can. Checked once per test process:
    /// root, `ip`, `runuser`, the PostgreSQL server binaries, and creating a namespace for real.
    static func unavailableReason() async -> String? {
        await probe.value
    }

    private static let probe = Task<String?, Never> {
        let reason = await findUnavailableReason()
        if let reason {
            print("NetworkLab: the multi-host tests cannot run here: \(reason)")
        }
        return reason
    }

    private static func findUnavailableReason() async -> String? {
        guard geteuid() == 0 else {
            return "network namespaces need root, and this runs as uid \(geteuid()) (CI runs as root)"
        }
        guard (try? ChildProcess.resolve("ip")) != nil else {
            return "iproute2's `ip` is not installed (scripts/install-dependencies installs it)"
        }
        guard (try? ChildProcess.resolve("runuser")) != nil, getpwnam("postgres") != nil else {
            return "`runuser` or the `postgres` user is missing (install util-linux and postgresql)"
        }
        do {
            _ = try PrivatePostgres.findBinaries()
        } catch {
            return "\(error)"
        }
        let name = "sy\(uniqueSuffix())-probe"
        let result = try? await BlockingWork.run {
            let created = try ChildProcess.run("ip", ["netns", "add", name])
            defer { _ = try? ChildProcess.run("ip", ["netns", "del", name]) }
            guard created.status == 0 else { return created }
            return try ChildProcess.run(
                "ip", ["-n", name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])
        }
        guard let result, result.status == 0 else {
            let output = result?.output.trimmingCharacters(in: .whitespacesAndNewlines) ?? "could not run ip"
            return "could not create a network namespace with a veth pair (`ip netns add`): \(output)"
        }
        return nil
    }

    private static func uniqueSuffix() -> String {
        String(UInt32.random(in: 0...UInt32.max), radix: 36)
    }

    // MARK: Lifecycle

    /// Runs `body` with a new lab, and destroys the lab afterwards, whether `body` throws or not.
    static func with<T>(hosts: [String], _ body: (NetworkLab) async throws -> T) async throws -> T {
        let lab = try await create(hosts: hosts)
        let value: T
        do {
            value = try await body(lab)
        } catch {
            await lab.destroy()
            throw error
        }
        await lab.destroy()
        return value
    }

    private static func create(hosts: [String]) async throws -> NetworkLab {
        let prefix = "sy\(uniqueSuffix())"
        let root = try makeDirectory()
        let binaries = try PrivatePostgres.findBinaries()
        let namespaces = ([switchName] + hosts).map { "\(prefix)-\($0)" }
        // One script for both ways out: the normal end, and the watchdog after a crash.
        let data = root.appending(path: "data").path
        let cleanupScript = """
            if [ -f '\(data)/postmaster.pid' ]; then
                runuser -u postgres -- '\(binaries.appending(path: "pg_ctl").path)' -D '\(data)' -m immediate -w stop
            fi
            for namespace in \(namespaces.joined(separator: " ")); do
                for pid in $(ip netns pids "$namespace" 2>/dev/null); do kill -9 "$pid"; done
                ip netns del "$namespace"
            done
            rm -rf '\(root.path)'
            """
        let watchdog = try ChildProcess.spawn(
            "/bin/sh", ["-c", "trap '' INT TERM HUP\ntail --pid=\(getpid()) -f /dev/null\n\(cleanupScript)"],
            standardOutput: .discard, standardError: .discard
        )
        let lab = NetworkLab(prefix: prefix, root: root, hosts: hosts, cleanupScript: cleanupScript, watchdog: watchdog)
        do {
            try await lab.wire()
        } catch {
            await lab.destroy()
            throw error
        }
        return lab
    }

    private static func makeDirectory() throws -> URL {
        let template = FileManager.default.temporaryDirectory.appending(path: "switchyard-netlab-XXXXXX").path
        var buffer = Array(template.utf8CString)
        guard mkdtemp(&buffer) != nil else { throw NetworkLabError("could not create \(template): errno \(errno)") }
        let path = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // The server runs as `postgres` and keeps its data and socket here.
        if let account = getpwnam("postgres") {
            chown(path, account.pointee.pw_uid, account.pointee.pw_gid)
        }
        chmod(path, 0o755)
        return URL(fileURLWithPath: path)
    }

    /// The switch: a bridge in its own namespace; each host's eth0 is a veth pair's end, the other
    /// end a port on the bridge.
    private func wire() async throws {
        let switchNamespace = namespace(Self.switchName)
        try await ip(["netns", "add", switchNamespace])
        try await ip(["-n", switchNamespace, "link", "add", "br0", "type", "bridge"])
        try await ip(["-n", switchNamespace, "link", "set", "br0", "up"])
        for host in hosts {
            let hostNamespace = namespace(host)
            try await ip(["netns", "add", hostNamespace])
            try await ip([
                "-n", switchNamespace, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns",
                hostNamespace,
            ])
            try await ip(["-n", switchNamespace, "link", "set", host, "master", "br0"])
            try await ip(["-n", switchNamespace, "link", "set", host, "up"])
            try await ip(["-n", hostNamespace, "address", "add", "\(address(host))/24", "dev", "eth0"])
            try await ip(["-n", hostNamespace, "link", "set", "eth0", "up"])
            try await ip(["-n", hostNamespace, "link", "set", "lo", "up"])
        }
    }

    /// Stops every process the lab started, removes the namespaces and deletes the directory.
    func destroy() async {
        let remaining = children.withLock { children in
            defer { children = [:] }
            return Array(children.values)
        }
        let script = cleanupScript
        let watchdog = watchdog
        _ = try? await BlockingWork.run(name: "network-lab") {
            for child in remaining {
                child.signal(SIGKILL)
                _ = child.wait()
            }
            _ = try? ChildProcess.run("/bin/sh", ["-c", script])
            watchdog.signal(SIGKILL)
            _ = watchdog.wait()
        }
    }

    // MARK: Hosts

    /// Pulls (or plugs back) a host's network cable: its eth0 goes down, and with it the route to
    /// every other host. Its processes keep running.
    func setLink(_ host: String, up: Bool) async throws {
        try await ip(["-n", namespace(host), "link", "set", "eth0", up ? "up" : "down"])
    }

    /// Starts a program inside a host; its output goes to `logFile`. `ip netns exec` execs the
    /// program in place, so the returned pid is the program's own, and its parent is this process.
    func spawn(
        in host: String, _ executable: String, _ arguments: [String], environment: [String: String], logFile: String
    ) throws -> ChildProcess {
        let child = try ChildProcess.spawn(
            "ip", ["netns", "exec", namespace(host), executable] + arguments, environment: environment,
            standardOutput: .file(logFile), standardError: .file(logFile)
        )
        children.withLock { $0[child.pid] = child }
        return child
    }

    /// Sends `signal` to a child started with `spawn`, waits for it to exit, and returns its status.
    func stop(_ child: ChildProcess, signal: Int32) async -> Int32 {
        child.signal(signal)
        let status = (try? await BlockingWork.run(name: "network-lab") { child.wait() }) ?? -1
        children.withLock { _ = $0.removeValue(forKey: child.pid) }
        return status
    }

    /// Forgets a child that was reaped elsewhere (with `poll()`), so `destroy()` never signals its
    /// pid, which the system may have given to another process by then.
    func forget(_ child: ChildProcess) {
        children.withLock { _ = $0.removeValue(forKey: child.pid) }
    }

    /// Runs a program inside a host to completion and returns its status and output.
    func run(
        in host: String, _ executable: String, _ arguments: [String]
    ) async throws -> (status: Int32, output: String) {
        let words = ["netns", "exec", namespace(host), executable] + arguments
        return try await BlockingWork.run(name: "network-lab") { try ChildProcess.run("ip", words) }
    }

    // MARK: Postgres

    /// Creates a cluster in the lab's directory and starts it inside `host`, listening on the
    /// host's address (port 5432) and on a unix socket in the lab's directory, which this process
    /// reaches whatever happens to the lab's network. Trusts every connection: it is a test.
    ///
    /// The server probes idle clients with TCP keepalives every second and gives up on unanswered
    /// data after 4 s, so a client host that drops off the network loses its sessions (and the
    /// locks they hold) within seconds — as docs/deploy.md tells operators to configure.
    func startPostgres(on host: String) async throws {
        let binaries = try PrivatePostgres.findBinaries()
        let data = root.appending(path: "data").path
        let initdb = try await BlockingWork.run(name: "network-lab") {
            try ChildProcess.run(
                "runuser",
                [
                    "-u", "postgres", "--", binaries.appending(path: "initdb").path, "-D", data, "-U", "postgres",
                    "-A", "trust", "-E", "UTF8", "--locale=C", "-N",
                ]
            )
        }
        guard initdb.status == 0 else { throw NetworkLabError("initdb failed: \(initdb.output)") }
        var settings = PrivatePostgres.fastSettings
        settings["shared_buffers"] = "64MB"
        settings["listen_addresses"] = address(host)
        settings["port"] = "\(Self.postgresPort)"
        settings["unix_socket_directories"] = root.path
        settings["tcp_keepalives_idle"] = "1"
        settings["tcp_keepalives_interval"] = "1"
        settings["tcp_keepalives_count"] = "3"
        settings["tcp_user_timeout"] = "4000"
        let lines = settings.sorted { $0.key < $1.key }.map { "\($0.key) = '\($0.value)'" }
        let configuration = URL(fileURLWithPath: data).appending(path: "postgresql.conf")
        let existing = try String(contentsOf: configuration, encoding: .utf8)
        try (existing + "\n" + lines.joined(separator: "\n") + "\n").write(
            to: configuration, atomically: false, encoding: .utf8)
        try "local all all trust\nhost all all 10.231.0.0/24 trust\n".write(
            to: URL(fileURLWithPath: data).appending(path: "pg_hba.conf"), atomically: false, encoding: .utf8
        )
        let logFile = root.appending(path: "postgres.log").path
        let pgCtl = binaries.appending(path: "pg_ctl").path
        let start = try await run(
            in: host, "runuser", ["-u", "postgres", "--", pgCtl, "-D", data, "-l", logFile, "-w", "-t", "60", "start"]
        )
        guard start.status == 0 else {
            let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
            throw NetworkLabError("pg_ctl start in \(namespace(host)) failed: \(start.output)\nserver log:\n\(log)")
        }
    }

    /// A configuration for `database` over the lab server's unix socket (for the test itself).
    func socketConfiguration(database: String) throws -> PostgresConfiguration {
        try PostgresConfiguration("host=\(root.path) port=\(Self.postgresPort) user=postgres dbname=\(database)")
    }

    /// A URL for `database` over the lab network (for programs inside the hosts).
    func networkURL(_ host: String, database: String) -> String {
        "postgres://postgres@\(address(host)):\(Self.postgresPort)/\(database)"
    }

    private func ip(_ arguments: [String]) async throws {
        let result = try await BlockingWork.run(name: "network-lab") { try ChildProcess.run("ip", arguments) }
        guard result.status == 0 else {
            throw NetworkLabError(
                "ip \(arguments.joined(separator: " ")) failed (exit \(result.status)): \(result.output)")
        }
    }
}

/// A step in building or driving a `NetworkLab` failed.
struct NetworkLabError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
