import Foundation
import QueueModel

/// Hands out the adapter for a model: one per provider kind, shared by every model of that kind
/// and every attempt in the process.
///
/// Make one per worker process: it owns the process's HTTP session (sized for the worker's
/// concurrency) and the simulated models' call counters.
public struct ProviderFactory: Sendable {
    /// The process's HTTP client, shared by the `openai` and `anthropic` adapters.
    public let transport: HTTPTransport
    private let openAI: OpenAIProvider
    private let anthropic: AnthropicProvider
    private let simulated: SimulatedProvider

    /// Creates the adapters.
    /// - Parameters:
    ///   - concurrency: the most attempts the worker runs at once; the HTTP session allows that
    ///     many connections per host (FoundationNetworking's default is 6).
    ///   - environment: where API keys are read from, by the names the catalog gives.
    ///   - clock: wall-clock time and sleeping for the adapters (simulated latency and outages).
    ///   - simulationSalt: mixed into simulated models' random streams (see `SimulatedProvider`).
    public init(
        concurrency: Int, environment: [String: String] = ProcessInfo.processInfo.environment,
        clock: any ProviderClock = SystemProviderClock(), simulationSalt: UInt64 = 0
    ) {
        self.init(
            transport: HTTPTransport(maximumConnectionsPerHost: concurrency), environment: environment, clock: clock,
            simulationSalt: simulationSalt)
    }

    /// Creates the adapters around an existing HTTP client.
    public init(
        transport: HTTPTransport, environment: [String: String] = ProcessInfo.processInfo.environment,
        clock: any ProviderClock = SystemProviderClock(), simulationSalt: UInt64 = 0
    ) {
        self.transport = transport
        openAI = OpenAIProvider(transport: transport, environment: environment, clock: clock)
        anthropic = AnthropicProvider(transport: transport, environment: environment, clock: clock)
        simulated = SimulatedProvider(clock: clock, salt: simulationSalt)
    }

    /// The adapter for a model.
    /// - Parameter model: the catalog entry; its `provider` picks the adapter.
    /// - Returns: an adapter to call with `ProviderCall(request:model:timeout:)` for this model.
    public func provider(for model: ModelSpec) -> any ModelProvider {
        provider(for: model.provider)
    }

    /// The adapter for a provider kind.
    public func provider(for kind: ProviderKind) -> any ModelProvider {
        switch kind {
        case .openai: openAI
        case .anthropic: anthropic
        case .simulated: simulated
        }
    }
}
