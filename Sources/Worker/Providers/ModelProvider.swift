import QueueModel

/// Something that answers one OpenAI-shaped chat request with one model: an adapter for a
/// provider's API (`openai`, `anthropic`) or an in-process simulation (`simulated`).
///
/// The fallback executor calls `complete(_:)` once per attempt. Adapters are stateless apart from
/// what they share process-wide (the HTTP session, a simulation's call counter), so one instance
/// serves every model of its kind and any number of concurrent attempts.
///
/// Errors: an adapter throws `ProviderError` for every failure of the attempt (HTTP errors,
/// timeouts, connection failures, undecodable answers, missing keys) and `CancellationError` only
/// when the calling task was cancelled (the worker is shutting down). Ask the error what to do
/// next with `ProviderError.decision(remainingBudget:)`.
public protocol ModelProvider: Sendable {
    /// Sends one request and waits, at most `call.timeout`, for the answer.
    /// - Parameter call: the request, the model to use and the attempt's time budget.
    /// - Returns: the answer in OpenAI `chat.completion` shape, whatever the provider speaks.
    /// - Throws: `ProviderError`, or `CancellationError` when the task is cancelled.
    func complete(_ call: ProviderCall) async throws -> ProviderReply
}
