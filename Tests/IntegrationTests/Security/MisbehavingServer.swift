import Foundation
import Postgres
import QueueModel
@testable import Worker

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `Fixtures/misbehaving_server.py`, run as a child process on a free loopback port: an HTTP
/// server that resets, closes or truncates every connection (see the script's docstring).
struct MisbehavingServer: Sendable {
    let process: ChildProcess
    let port: Int

    /// The base URL of a model whose every call meets `behaviour` (`reset`, `close`, `partial`,
    /// `endless`, `huge`).
    func baseURL(_ behaviour: String) -> String { "http://127.0.0.1:\(port)/\(behaviour)/v1" }

    static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/misbehaving_server.py").path

    /// Starts a server and waits until it listens.
    static func start() async throws -> MisbehavingServer {
        let directory = try Scratch.makeDirectory("misbehaving")
        let portFile = directory.appendingPathComponent("port").path
        let process = try ChildProcess.spawn(
            try FakeProviderServer.python(), [scriptPath, "--port-file", portFile, "--parent-pid", String(getpid())],
            standardOutput: .discard, standardError: .discard)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(20)
        while clock.now < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8),
                let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                return MisbehavingServer(process: process, port: port)
            }
            if let status = process.poll() {
                throw FakeProviderError("misbehaving_server.py exited with status \(status) before listening")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.signal(SIGKILL)
        throw FakeProviderError("misbehaving_server.py did not write its port within 20 seconds")
    }

    /// How many bytes of body the `endless` and `huge` answers sent so far, in all.
    func bytesSent() async throws -> Int {
        let exchange = try await HTTPTransport(maximumConnectionsPerHost: 1).send(
            URLRequest(url: URL(string: "http://127.0.0.1:\(port)/sent")!), timeout: .seconds(10), model: "control")
        guard let sent = Int(String(decoding: exchange.body, as: UTF8.self)) else {
            throw FakeProviderError("misbehaving_server.py answered /sent with something not a number")
        }
        return sent
    }

    func stop() async {
        process.signal(SIGTERM)
        _ = try? await BlockingWork.run(name: "misbehaving-server-wait") { process.wait() }
    }
}
