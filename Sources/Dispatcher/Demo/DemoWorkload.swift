import Foundation
import QueueModel

/// The demo's traffic: interactive chat across every task class, conversations that share
/// affinity keys, and a background batch; and the catalog it runs on.
enum DemoWorkload {
    static let questions = [
        "What is the capital of Australia?", "How many moons does Mars have?", "Who wrote Pride and Prejudice?",
        "What is the boiling point of water at sea level?", "When did the Berlin Wall fall?",
        "Explain why the sky is blue.", "Why do onions make people cry? Explain step by step.",
        "Compare TCP and UDP, and explain the trade-offs for a video call.",
        "Write a function in Python that merges two sorted lists.",
        "Fix this bug:\n```swift\nlet total = items.reduce(0) { $0 + $1.price }\n```",
        "Write a short poem about a lighthouse keeper.", "Write a story opening about a robot that learns to garden.",
        "Translate 'where is the train station?' into Japanese.", "日本の首都はどこですか？",
        "Summarise the main arguments for and against a four-day work week.",
    ]

    /// One job of the demo: what to submit.
    struct Item {
        var submission: Submission
        var kind: String
    }

    /// 1,000 jobs by default: about half single interactive questions, a quarter conversations
    /// (40 of them, each turn sharing its affinity key), a fifth background batch work.
    static func items(total: Int) -> [Item] {
        var items: [Item] = []
        let conversations = max(4, total / 25)
        let turns = 6
        let background = total / 5
        let single = max(0, total - conversations * turns - background)
        for index in 0..<single {
            let prompt = questions[index % questions.count]
            items.append(Item(submission: Submission(request: Submission.prompt(prompt)), kind: "interactive"))
        }
        for turn in 0..<turns {
            for conversation in 0..<conversations {
                var messages: [JSONValue] = [["role": "system", "content": "You are a helpful planning assistant."]]
                for earlier in 0..<turn {
                    messages.append(["role": "user", "content": .string("Turn \(earlier + 1) of our plan for project \(conversation).")])
                    messages.append(["role": "assistant", "content": "Noted."])
                }
                messages.append(["role": "user", "content": .string("Turn \(turn + 1) of our plan for project \(conversation).")])
                items.append(Item(
                    submission: Submission(request: ["messages": .array(messages)], taskClass: "general",
                                           affinityKey: "conversation-\(conversation)"),
                    kind: "conversation"))
            }
        }
        for index in 0..<background {
            items.append(Item(
                submission: Submission(
                    request: Submission.prompt("Summarise document \(index + 1) of the quarterly archive in three bullet points."),
                    priority: .background, taskClass: "general", deadline: Date().addingTimeInterval(3600)),
                kind: "background"))
        }
        // Interleave: traffic arrives mixed, conversations keep their turn order.
        var mixed: [Item] = []
        var queues = [items.filter { $0.kind == "interactive" }, items.filter { $0.kind == "conversation" },
                      items.filter { $0.kind == "background" }]
        while queues.contains(where: { !$0.isEmpty }) {
            for index in queues.indices where !queues[index].isEmpty { mixed.append(queues[index].removeFirst()) }
        }
        return mixed
    }

    /// The example catalog, made demo-friendly: latencies halved, a little noise, and the
    /// default rule's primary able to fail on cue (while `outageFile` exists).
    static func catalog(from data: Data, outageFile: String, failing: String) throws -> Data {
        var document = try JSONValue(parsing: data)
        guard case .object(var models)? = document["models"] else {
            throw QueueError(.invalidInput, "the demo catalog has no models section")
        }
        for (name, var model) in models {
            var settings = model["settings"] ?? [:]
            for key in ["latency_p50_ms", "latency_p95_ms"] {
                if let value = settings[key]?.doubleValue { settings[key] = .number((value / 2).rounded()) }
            }
            settings["error_rate"] = 0.002
            settings["rate_limit_rate"] = 0.002
            settings["retry_after_ms"] = 200
            if name == failing {
                settings["outage_file"] = .string(outageFile)
                settings["outage_fault"] = "server_error"
            }
            model["settings"] = settings
            models[name] = model
        }
        document["models"] = .object(models)
        return Data(document.jsonText.utf8)
    }
}
