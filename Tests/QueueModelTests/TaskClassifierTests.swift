import QueueModel
import Testing

@Suite("Task classification")
struct TaskClassifierTests {
    private func classify(_ text: String, given: String? = nil) -> TaskClassification {
        TaskClassifier().classify(["messages": [["role": "user", "content": .string(text)]]], given: given)
    }

    @Test(
        "examples",
        arguments: [
            ("Fix this:\n```python\nprint(1/0)\n```", "code"),
            ("Write a function that reverses a linked list", "code"),
            ("Why does my Java loop never end?", "code"),
            ("Traceback (most recent call last): File \"x.py\", line 1", "code"),
            ("Write a poem about the sea", "creative"),
            ("Tell me a story about a dragon who is afraid of heights", "creative"),
            ("Write a story about a class trip to the museum", "creative"),
            ("Why is the sky blue?", "reasoning"),
            ("Explain the difference between TCP and UDP", "reasoning"),
            ("How does a refrigerator keep food cold?", "reasoning"),
            ("What is the capital of France?", "simple"),
            ("How tall is Mount Everest?", "simple"),
            ("東京で一番おいしいラーメン屋はどこですか？", "multilingual"),
            ("Переведи, пожалуйста, этот текст на английский язык", "multilingual"),
            ("Translate 'good morning' into Portuguese", "multilingual"),
        ]
    )
    func examples(text: String, expected: String) {
        #expect(classify(text).taskClass.rawValue == expected, "\(classify(text).reason)")
        #expect(classify(text).source == .heuristic)
    }

    @Test("a one-character message is said in the singular")
    func oneCharacter() {
        #expect(classify("?").reason.contains("a short message (1 character ≤ "), "\(classify("?").reason)")
    }

    @Test("long input is long_context, whatever it says")
    func longContext() {
        let document = String(repeating: "The quarterly report shows steady growth. ", count: 900)
        let classification = classify(document + "\nWrite a poem about it.")
        #expect(classification.taskClass == .longContext)
        #expect(classification.reason.contains("prompt tokens ≥ 8000"))
    }

    @Test("a long message with no cue is general")
    func general() {
        let text = String(
            repeating: "The committee met on Tuesday and the minutes were approved without changes. ", count: 6)
        #expect(classify(text).taskClass == .general)
    }

    @Test("the job's task_class overrides the heuristics")
    func jobClassWins() {
        let classification = classify("Write a poem about the sea", given: "complex_reasoning")
        #expect(classification.taskClass.rawValue == "complex_reasoning")
        #expect(classification.source == .job)
    }

    @Test("the last user message is the ask; the system prompt does not decide")
    func lastUserMessage() {
        let request: JSONValue = [
            "messages": [
                ["role": "system", "content": "You are a Python and SQL coding assistant."],
                ["role": "user", "content": "Write a haiku about autumn"],
            ]
        ]
        #expect(TaskClassifier().classify(request).taskClass == .creative)
    }

    /// A walkthrough's 500 conversations of four turns, classed by each turn's ask (simple, then
    /// reasoning, creative, general), were each served by three or four models despite their keys.
    @Test("a job with an affinity key is classed by its first user message, so every turn of a conversation shares a class")
    func conversationClassedByItsStart() {
        var history: [JSONValue] = [["role": "user", "content": "Hi! I'm planning a trip to Japan in May."]]
        let turns = ["Why is May better than April?", "Could you write a short poem about Kyoto?"]
        let first = TaskClassifier().classify(["messages": .array(history)], conversation: true)
        #expect(first.taskClass == .simple)
        #expect(!first.reason.contains("first user message"))
        for turn in turns {
            history += [["role": "assistant", "content": "Sure."], ["role": "user", "content": .string(turn)]]
            let request: JSONValue = ["messages": .array(history)]
            let keyed = TaskClassifier().classify(request, conversation: true)
            #expect(keyed.taskClass == .simple)
            #expect(keyed.reason.hasSuffix("in the first user message (the job has an affinity key)"), "\(keyed.reason)")
            // Without a key, each turn's ask decides.
            #expect(TaskClassifier().classify(request).taskClass != .simple)
        }
        // An opening of no words (an image alone, "") does not decide: the first with words does.
        let wordless: JSONValue = ["messages": [
            ["role": "user", "content": ""], ["role": "assistant", "content": "?"],
            ["role": "user", "content": "Write a Python function that parses ISO dates, with a regex"],
            ["role": "assistant", "content": "Sure."], ["role": "user", "content": "Thanks"],
        ]]
        #expect(TaskClassifier().classify(wordless, conversation: true).taskClass == .code)
        // Messages with no answer among them are no conversation under way: the last ask decides.
        let fewShot: JSONValue = ["messages": [
            ["role": "user", "content": "Hi"], ["role": "user", "content": "Write a haiku about autumn"],
        ]]
        #expect(TaskClassifier().classify(fewShot, conversation: true).taskClass == .creative)
        // Size still decides first: a conversation grown past the threshold moves once.
        let long: JSONValue = ["messages": .array(history + [["role": "user", "content": .string(String(repeating: "word ", count: 8000))]])]
        #expect(TaskClassifier().classify(long, conversation: true).taskClass == .longContext)
    }

    @Test("the prompt estimate counts ASCII by 4 bytes and other scripts by character")
    func estimate() {
        #expect(PromptEstimate.tokens(in: "abcdefgh") == 2)
        #expect(PromptEstimate.tokens(in: "abcdefghi") == 3)
        #expect(PromptEstimate.tokens(in: "東京") == 2)
        let estimate = PromptEstimate(request: [
            "messages": [["role": "user", "content": "abcdefgh"]], "max_tokens": 100,
        ])
        #expect(estimate.promptTokens == 6)
        #expect(estimate.outputTokens == 100)
        #expect(estimate.totalTokens == 106)
        #expect(PromptEstimate(request: ["messages": []]).outputTokens == PromptEstimate.defaultOutputTokens)
    }
}
