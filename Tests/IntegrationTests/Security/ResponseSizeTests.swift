import Foundation
import QueueModel
import Testing

@testable import Worker

/// A provider answer larger than the transport's limit fails its attempt (`invalid_response`,
/// which falls back) as soon as the limit is passed, instead of being held whole in the worker's
/// memory: an endless body is cut off, and a head that announces too much is refused unread.
@Suite("Security: oversized answers")
struct ResponseSizeTests {
    static let limit = 1 << 20

    static func call(_ baseURL: String, limit: Int = limit) async -> (ProviderError?, Bool) {
        let transport = HTTPTransport(maximumConnectionsPerHost: 2, maximumResponseBytes: limit)
        let provider = OpenAIProvider(transport: transport, environment: [:])
        let model = ModelSpec(name: "big", provider: .openai, baseURL: baseURL)
        var succeeded = false
        let error = await ProviderTestSupport.providerError {
            let reply = try await provider.complete(
                ProviderCall(request: ProviderTestSupport.request("hi"), model: model, timeout: .seconds(60)))
            succeeded = true
            return reply
        }
        return (error, succeeded)
    }

    @Test("an endless or enormous body fails the attempt at the limit; one within it is read")
    func oversizedAnswers() async throws {
        let broken = try await MisbehavingServer.start()
        let fake = try await FakeProviderServer.start()
        defer {
            Task {
                await broken.stop()
                await fake.stop()
            }
        }

        // A chunked body that never ends: cut off once past the limit, with the reason.
        let (endless, _) = await Self.call(broken.baseURL("endless"))
        #expect(endless?.code == .invalidResponse)
        #expect(endless?.httpStatus == 200)
        #expect(endless?.message.contains("larger than 1 MiB") == true, "\(String(describing: endless))")
        // A head promising 1 GiB: refused before the body is read.
        let (huge, _) = await Self.call(broken.baseURL("huge"))
        #expect(huge?.code == .invalidResponse)
        #expect(huge?.message.contains("larger than 1 MiB") == true, "\(String(describing: huge))")
        // And the transfers were stopped there: the endless one's server is soon sending nothing
        // more (without the cut it sends until the attempt's budget runs out, a minute).
        var sent = try await broken.bytesSent()
        try await waitUntil("the endless answer's transfer stops", every: .zero) {
            try await Task.sleep(for: .milliseconds(300))
            let now = try await broken.bytesSent()
            defer { sent = now }
            return now == sent
        }

        // A real answer of 2 MiB: refused under a 1 MiB limit, read whole under 4 MiB.
        let content = String(repeating: "a", count: 2 << 20)
        try await fake.script(["big": ["content": .string(content)]])
        let (refused, _) = await Self.call(fake.openAIBaseURL)
        #expect(refused?.code == .invalidResponse)
        let (error, succeeded) = await Self.call(fake.openAIBaseURL, limit: 4 << 20)
        #expect(error == nil && succeeded, "\(String(describing: error))")
    }
}
