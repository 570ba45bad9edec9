import Foundation
import Postgres
import QueueModel
@testable import Worker

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The fake OpenAI/Anthropic provider (`Fixtures/fake_provider.py`), run as a child process on a
/// free loopback port for one test.
///
/// Script what a model's next calls do with `script(_:)` (see the script's docstring for the
/// steps), and read what was called with `count(for:)` and `requests(for:)`. The server exits by
/// itself if the test process dies, so a crashed test leaves nothing behind.
struct FakeProviderServer: Sendable {
    let process: ChildProcess
    let port: Int

    /// The base URL for `openai` models (`{base}/chat/completions`).
    var openAIBaseURL: String { "http://127.0.0.1:\(port)/v1" }
    /// The base URL for `anthropic` models (`{base}/v1/messages`).
    var anthropicBaseURL: String { "http://127.0.0.1:\(port)" }

    /// The script's path, next to this file.
    static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fake_provider.py").path

    /// Starts a server and waits until it listens.
    /// - Throws: when python3 is missing or the server does not come up within 20 seconds.
    static func start() async throws -> FakeProviderServer {
        let directory = try Scratch.makeDirectory("fake-provider")
        let portFile = directory.appendingPathComponent("port").path
        let log = directory.appendingPathComponent("log").path
        let process = try ChildProcess.spawn(
            try python(), [scriptPath, "--port-file", portFile, "--parent-pid", String(getpid())],
            standardOutput: .discard, standardError: .file(log))
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(20)
        while clock.now < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8),
                let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                return FakeProviderServer(process: process, port: port)
            }
            if let status = process.poll() {
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw FakeProviderError("fake_provider.py exited with status \(status) before listening: \(output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.signal(SIGKILL)
        throw FakeProviderError("fake_provider.py did not write its port to \(portFile) within 20 seconds")
    }

    /// python3's absolute path, found on PATH (`ChildProcess.resolve` currently mangles PATH entries,
    /// so the lookup is done here and an absolute path is passed).
    static func python() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin"] {
            let candidate = directory + "/python3"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw FakeProviderError("python3 is not on PATH; the fake provider needs Python 3 (apt-get install python3)")
    }

    /// Stops the server and reaps it.
    func stop() async {
        process.signal(SIGTERM)
        _ = try? await BlockingWork.run(name: "fake-provider-wait") { process.wait() }
    }

    /// Sets what the next calls to each model do: `["model": step]` or `["model": [step, …]]`.
    func script(_ scripts: JSONValue) async throws {
        _ = try await call("POST", "/script", body: scripts)
    }

    /// Everything the server saw: `{"counts": {model: n}, "requests": {model: [{path, headers, body}]}}`.
    func stats() async throws -> JSONValue {
        try await call("GET", "/stats", body: nil)
    }

    /// How many chat requests named `model`.
    func count(for model: String) async throws -> Int {
        try await stats()["counts"]?[model]?.intValue ?? 0
    }

    /// The requests that named `model`, oldest first: `{path, headers (lowercased), body}`.
    func requests(for model: String) async throws -> [JSONValue] {
        try await stats()["requests"]?[model]?.arrayValue ?? []
    }

    private func call(_ method: String, _ path: String, body: JSONValue?) async throws -> JSONValue {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        if let body { request.httpBody = Data(body.jsonText.utf8) }
        let exchange = try await Self.controlTransport.send(request, timeout: .seconds(10), model: "fake-provider")
        return try JSONValue(parsing: exchange.body)
    }

    private static let controlTransport = HTTPTransport(maximumConnectionsPerHost: 4)
}

/// Runs `body` with a fake provider of its own, and stops it afterwards, whether `body` throws or not.
func withFakeProviderServer<T>(_ body: (FakeProviderServer) async throws -> T) async throws -> T {
    let server = try await FakeProviderServer.start()
    do {
        let value = try await body(server)
        await server.stop()
        return value
    } catch {
        await server.stop()
        throw error
    }
}

/// The fake provider could not be started.
struct FakeProviderError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
