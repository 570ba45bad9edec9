import Foundation
import QueueModel
@testable import Worker

/// Helpers shared by the provider tests.
enum ProviderTestSupport {
    /// A one-message chat request.
    static func request(_ text: String, extra: [String: JSONValue] = [:]) -> JSONValue {
        var object: [String: JSONValue] = ["messages": [["role": "user", "content": .string(text)]]]
        object.merge(extra) { _, new in new }
        return .object(object)
    }

    /// The `ProviderError` that `body` throws, or nil when it succeeds or throws something else.
    static func providerError(_ body: () async throws -> ProviderReply) async -> ProviderError? {
        do {
            _ = try await body()
            return nil
        } catch let error as ProviderError {
            return error
        } catch {
            return nil
        }
    }

    /// An HTTP transport for one test.
    static func transport() -> HTTPTransport { HTTPTransport(maximumConnectionsPerHost: 8) }
}
