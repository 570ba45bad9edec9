import QueueModel

/// One attempt's input to a `ModelProvider`.
public struct ProviderCall: Sendable {
    /// The job's request: an OpenAI Chat Completions body (`messages`, `max_tokens`, …). Its
    /// `model` and `stream` members are replaced by the adapter.
    public var request: JSONValue
    /// The model to call, as the catalog describes it.
    public var model: ModelSpec
    /// The most this attempt may take, from sending to having the whole answer. Adapters enforce
    /// it themselves (a hung server cannot hold the attempt longer).
    public var timeout: Duration

    /// Creates a call.
    /// - Parameters:
    ///   - request: the OpenAI-shaped request body.
    ///   - model: the catalog entry of the model to call.
    ///   - timeout: the attempt's budget (usually its tier's latency target).
    public init(request: JSONValue, model: ModelSpec, timeout: Duration) {
        self.request = request
        self.model = model
        self.timeout = timeout
    }
}
