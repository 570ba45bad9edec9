import Foundation
import QueueModel

extension AnthropicTranslation {
    /// Refuses the Chat Completions parameters the Messages API has no equivalent for
    /// (`AnthropicLimits.untranslatable`; the legacy `functions` were sent without their tools and
    /// answered in plain text). The router leaves Anthropic models out of such a request's plan;
    /// this is for one planned anyway (a worker of an older version, a model named by hand).
    ///
    /// Dropping them would store an answer as if it honoured them (free text where JSON was asked
    /// for, one choice where three were), so the request is refused instead, as LiteLLM does by
    /// default; the error is `unsupportedRequest`, which moves the job to the next model.
    /// - Throws: `ProviderError.unsupportedRequest` naming every such parameter the request sets.
    static func refuseUntranslatable(_ request: [String: JSONValue], model: ModelSpec) throws {
        let refused = AnthropicLimits.untranslatable(request)
        guard !refused.isEmpty else { return }
        throw ProviderError(
            .unsupportedRequest,
            "Anthropic models have no equivalent of \(refused.joined(separator: ", ")); the request was not sent "
                + "rather than sent without them",
            hint: "the job moves to the next model of its plan; to run it on an Anthropic model, submit it without "
                + (refused.count == 1 ? "that parameter" : "those parameters"),
            model: model.name)
    }
}
