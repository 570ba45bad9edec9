import Foundation
import QueueModel

/// Answers every job with a built-in simulated model: a deterministic reply after a fixed
/// latency, no routing, no network. For trying the queue without a catalog, and for tests that
/// need jobs that take a known time.
struct SimulatedExecutor: JobExecutor {
    var latency: Duration = .zero
    /// `simulated-instant`, or `simulated-15s` for a latency of 15 s (the name said instant of every
    /// latency).
    var model: String { latency == .zero ? "simulated-instant" : "simulated-\(Arguments.format(latency))" }

    func execute(_ job: Job) async -> JobOutcome {
        let started = Date()
        if latency > .zero {
            do {
                try await Task.sleep(for: latency)
            } catch {
                return .cancelled(trail: [
                    AttemptRecord(attempt: job.attempt, model: model, provider: "simulated", tier: "primary",
                                  outcome: "cancelled", latencyMS: Date().timeIntervalSince(started) * 1000)
                ])
            }
        }
        let prompt = job.request["messages"]?.arrayValue?.last?["content"]?.stringValue ?? ""
        let answer = "simulated answer #\(StableHash.hash(prompt) % 10_000) to a \(prompt.count)-character prompt"
        let tokensIn = max(1, prompt.utf8.count / 4)
        let tokensOut = max(1, answer.utf8.count / 4)
        let response: JSONValue = [
            "id": .string("chatcmpl-sim-\(job.id)"), "object": "chat.completion", "model": .string(model),
            "choices": [["index": 0, "message": ["role": "assistant", "content": .string(answer)], "finish_reason": "stop"]],
            "usage": [
                "prompt_tokens": .number(Double(tokensIn)), "completion_tokens": .number(Double(tokensOut)),
                "total_tokens": .number(Double(tokensIn + tokensOut)),
            ],
        ]
        let latencyMS = Date().timeIntervalSince(started) * 1000
        return .succeeded(
            JobAnswer(
                model: model, provider: "simulated", tier: "primary", taskClass: job.taskClass, response: response,
                tokensIn: tokensIn, tokensOut: tokensOut, cost: 0,
                trail: [AttemptRecord(attempt: job.attempt, model: model, provider: "simulated", tier: "primary",
                                      outcome: "succeeded", latencyMS: latencyMS)]
            )
        )
    }
}
