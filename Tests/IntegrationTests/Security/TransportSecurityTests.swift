import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// TLS to providers is verified, and skipping it takes the catalog's request and the worker's
/// confirmation (and, on Linux, is refused even then); Postgres honours sslmode.
@Suite("Security: TLS to providers, sslmode to Postgres")
struct TransportSecurityTests {
    static let openSSL = ["/usr/bin/openssl", "/usr/local/bin/openssl"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// An HTTPS endpoint with a fresh self-signed certificate (`Fixtures/tls_provider.py`).
    struct SelfSignedProvider {
        let process: ChildProcess
        let port: Int
        var baseURL: String { "https://127.0.0.1:\(port)/v1" }

        static func start() async throws -> SelfSignedProvider {
            let directory = try Scratch.makeDirectory("tls")
            let (cert, key, portFile) = (
                directory.appending(path: "cert.pem").path, directory.appending(path: "key.pem").path,
                directory.appending(path: "port").path
            )
            let openSSL = try #require(TransportSecurityTests.openSSL)
            let made = try await BlockingWork.run {
                try ChildProcess.run(
                    openSSL,
                    [
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    ])
            }
            #expect(made.status == 0, "\(made.output)")
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appending(path: "Fixtures/tls_provider.py").path
            let process = try ChildProcess.spawn(
                try FakeProviderServer.python(),
                [script, "--cert", cert, "--key", key, "--port-file", portFile, "--parent-pid", String(getpid())],
                standardOutput: .discard, standardError: .discard)
            for _ in 0..<1000 {
                if let text = try? String(contentsOfFile: portFile, encoding: .utf8),
                    let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
                {
                    return SelfSignedProvider(process: process, port: port)
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            process.signal(SIGKILL)
            throw FakeProviderError("tls_provider.py did not start")
        }

        func stop() async {
            process.signal(SIGTERM)
            _ = try? await BlockingWork.run { process.wait() }
        }
    }

    static func call(_ model: ModelSpec, environment: [String: String]) async -> ProviderError? {
        let transport = HTTPTransport(
            maximumConnectionsPerHost: 2, environment: environment, logger: LogCapture().logger())
        let provider = OpenAIProvider(transport: transport, environment: environment)
        return await ProviderTestSupport.providerError {
            try await provider.complete(
                ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(10)))
        }
    }

    @Test(
        "a provider's certificate is verified; skipping it needs the catalog's flag and the worker's confirmation",
        .enabled(if: openSSL != nil, "needs the openssl command to make a certificate"))
    func providerTLS() async throws {
        let server = try await SelfSignedProvider.start()
        defer { Task { await server.stop() } }
        var model = ModelSpec(name: "internal-vllm", provider: .openai, baseURL: server.baseURL)

        // Verified by default: a self-signed certificate is refused.
        let unverified = await Self.call(model, environment: [:])
        #expect(unverified?.code == .connectionFailed)
        let refusal = unverified.map { "\($0)" } ?? "no error"
        #expect(unverified?.message.contains("certificate") == true, "\(refusal)")

        // The catalog asks, the worker has not confirmed: refused before any connection.
        model.settings = [InsecureTLS.catalogSetting: true]
        let unconfirmed = await Self.call(model, environment: [:])
        #expect(unconfirmed?.code == .misconfigured)
        #expect(unconfirmed?.message.contains("has not confirmed it") == true)
        #expect(unconfirmed?.hint?.contains("SWITCHYARD_INSECURE_TLS_MODELS=internal-vllm") == true)

        // Confirmed for another model only: still refused.
        let otherModel = await Self.call(model, environment: [InsecureTLS.environmentVariable: "some-other-model"])
        #expect(otherModel?.code == .misconfigured)

        // Confirmed: where FoundationNetworking cannot skip verification, refused with the way out.
        let confirmed = await Self.call(model, environment: [InsecureTLS.environmentVariable: "internal-vllm"])
        if InsecureTLS.isSupported {
            let failure = confirmed.map { "\($0)" } ?? ""
            #expect(confirmed == nil, "\(failure)")
        } else {
            #expect(confirmed?.code == .misconfigured)
            #expect(confirmed?.hint?.contains("update-ca-certificates") == true)
        }
    }

    @Test("a worker whose environment allows skipping TLS verification says so, loudly, at start")
    func startWarning() {
        let capture = LogCapture()
        _ = HTTPTransport(
            maximumConnectionsPerHost: 1, environment: [InsecureTLS.environmentVariable: "a, b"],
            logger: capture.logger(level: .info))
        let warning = capture.all.first { $0.contains("level=warning") }
        #expect(warning?.contains("TLS certificate verification may be skipped for a, b") == true, "\(capture.all)")
        let quiet = LogCapture()
        _ = HTTPTransport(maximumConnectionsPerHost: 1, environment: [:], logger: quiet.logger(level: .trace))
        #expect(quiet.all.isEmpty)
    }

    @Test("sslmode=require against a server without SSL fails with a clear error; sslmode=disable connects")
    func postgresSSLMode() async throws {
        try await TestDatabase.withMigrated { configuration in
            let required = try PostgresConfiguration(
                SecurityFixtures.connectionString(configuration, tcpWith: "sslmode=require"))
            let refused = try await #require(throws: PostgresError.self) {
                _ = try await PostgresConnection.connect(required)
            }
            #expect(refused.code == .connectionFailed)
            #expect(refused.message.contains("SSL"), "\(refused)")

            let plain = try PostgresConfiguration(
                SecurityFixtures.connectionString(configuration, tcpWith: "sslmode=disable"))
            let connection = try await PostgresConnection.connect(plain)
            defer { Task { await connection.close() } }
            let encrypted = try await connection.query(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).scalar(Bool.self)
            #expect(encrypted == false)

            // The CLI passes it on as given, and says what went wrong.
            let binary = WorkerProcess.binary("dispatcher")
            let url = SecurityFixtures.connectionString(configuration, tcpWith: "sslmode=require")
            let (status, output) = try await BlockingWork.run {
                try ChildProcess.run(binary, ["submit", "--prompt", "hi", "--database-url", url])
            }
            #expect(status == 1)
            #expect(output.contains("SSL"), "\(output)")
        }
    }
}
