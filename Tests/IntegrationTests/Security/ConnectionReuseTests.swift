import Foundation
import QueueModel
import Testing

@testable import Worker

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A provider's server that closes a kept-alive connection just as the worker reuses it (an idle
/// timeout, a rolling restart): libcurl sends the request again on a new connection, and a
/// walkthrough's fake provider saw it arrive with its head and no body. The attempt then hung until
/// its budget ran out, or a server that answered the empty body with a 400 failed a valid job as
/// `bad_request`.
@Suite("Provider calls: a connection closed as it is reused")
struct ConnectionReuseTests {
    /// A chat request with `body` to the server's `path` (keepalive-drop, keepalive-drop-late).
    static func request(_ server: MisbehavingServer, _ path: String, body: Data) -> URLRequest {
        var request = URLRequest(url: URL(string: server.baseURL(path) + "/chat/completions")!)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = body
        return request
    }

    @Test("a request sent again after the server closed its reused connection carries its whole body")
    func bodyResentWhole() async throws {
        let broken = try await MisbehavingServer.start()
        defer { Task { await broken.stop() } }
        let transport = HTTPTransport(maximumConnectionsPerHost: 1)
        let body = Data(#"{"model":"m","messages":[{"role":"user","content":"hello, twice"}]}"#.utf8)
        let request = Self.request(broken, "keepalive-drop", body: body)
        // The first opens the connection; the second goes on it, is read, and the connection is
        // closed unanswered; the third likewise. Each is answered on a new connection in the end.
        for call in 1...3 {
            let exchange = try await transport.send(request, timeout: .seconds(10), model: "m")
            #expect(exchange.status == 200)
            // Whole, and framed by its length as before (not chunked: some servers refuse that).
            #expect(
                try JSONValue(parsing: exchange.body) == ["body_bytes": .number(Double(body.count)), "framing": "length"],
                "call \(call): \(String(decoding: exchange.body, as: UTF8.self))")
        }
    }

    /// A review's burst left four kept-alive connections that the server closes at their next
    /// use: the transport sent a request again once, met a second closed one, and failed the
    /// attempt as connection_failed (FoundationNetworking cannot give a body given as data again,
    /// so each try is a new task, and libcurl's own try goes to the next kept connection).
    @Test("a request that meets several closed kept-alive connections is sent until a live one answers, whole")
    func severalClosedConnections() async throws {
        let broken = try await MisbehavingServer.start()
        defer { Task { await broken.stop() } }
        let transport = HTTPTransport(maximumConnectionsPerHost: 4)
        let body = Data(#"{"model":"m","messages":[{"role":"user","content":"hello, four times"}]}"#.utf8)
        let request = Self.request(broken, "keepalive-drop", body: body)
        // Four at once: four connections, each answered and kept, each closed at its next use.
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<4 { group.addTask { try await transport.send(request, timeout: .seconds(10), model: "m").status } }
            for try await status in group { #expect(status == 200) }
        }
        for call in 1...2 {
            let exchange = try await transport.send(request, timeout: .seconds(10), model: "m")
            let answer = try JSONValue(parsing: exchange.body)
            #expect(
                exchange.status == 200 && answer == ["body_bytes": .number(Double(body.count)), "framing": "length"],
                "call \(call): \(String(decoding: exchange.body, as: UTF8.self))")
        }
    }

    /// A review: each try a new task, only the attempt's budget bounded the sending again, and
    /// libcurl sends again also when the server read the request and worked on it before the
    /// connection died: a provider could bill it again and again.
    @Test("a request whose kept connection dies more than a second after it was sent is not sent again")
    func lateCloseIsNotSentAgain() async throws {
        let broken = try await MisbehavingServer.start()
        defer { Task { await broken.stop() } }
        let transport = HTTPTransport(maximumConnectionsPerHost: 1)
        let request = Self.request(
            broken, "keepalive-drop-late", body: Data(#"{"model":"m","messages":[{"role":"user","content":"once"}]}"#.utf8))
        #expect(try await transport.send(request, timeout: .seconds(10), model: "m").status == 200)
        let error = await #expect(throws: ProviderError.self) {
            try await transport.send(request, timeout: .seconds(10), model: "m")
        }
        #expect(error?.code == .connectionFailed, "\(String(describing: error))")
    }
}
