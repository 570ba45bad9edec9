import Foundation
import Postgres
import QueueModel

/// `dispatcher feedback ID SCORE [--note TEXT]`: rates a finished job's answer.
enum FeedbackCommand {
    static let usage = """
        usage: dispatcher feedback ID SCORE [--note TEXT] [--tenant NAME] [--json]
               dispatcher feedback --list [--json]

        Rates the answer of finished job ID. SCORE is 0–100 (100 best), or stars as N/M (4/5 is 80).
        A job has one rating: rating it again replaces the earlier one.
        Ratings move the model's capability score for the job's task class, once it has enough of
        them (feedback_min_ratings, default 5), so best_quality and quality_floor routing follow what
        users report. --list shows the recent average per model and class.

          --note TEXT  why, kept with the rating (switchyard.feedback.note)
          --json       the rating as {"id", "job_id", "score"}; with --list, the averages as JSON
        Exit status: 0 rated; 2 a bad id or score, or the job has not finished; 6 the job is unknown.
        \(JobCommands.tenantNote)
        """

    static func run(_ words: [String]) async throws -> Int32 {
        let arguments = try Arguments(
            words, command: "dispatcher feedback", options: ["note", "tenant", "database-url"], flags: ["list", "json"])
        if arguments.flag("help") {
            print(usage)
            return ExitCode.success
        }
        let pool = try Database.pool(arguments, applicationName: "switchyard-feedback", maxConnections: 1)
        defer { Task { await pool.close() } }
        let store = FeedbackStore(pool: pool)
        if arguments.flag("list") {
            if let word = arguments.positionals.first ?? arguments.value("note") {
                throw QueueError(
                    .invalidInput, "--list takes no job, score or note (got \"\(word)\")",
                    hint: "dispatcher feedback --list [--json]; to rate: dispatcher feedback ID SCORE")
            }
            return try await list(store, json: arguments.flag("json"))
        }
        guard arguments.positionals.count == 2 else {
            throw QueueError(.invalidInput, "give a job id and a score", hint: usage)
        }
        guard let job = Int64(arguments.positionals[0]), job > 0 else {
            throw QueueError(
                .invalidInput, "\"\(arguments.positionals[0])\" is not a job id (job ids are positive whole numbers)")
        }
        let score = try parseScore(arguments.positionals[1])
        do {
            let id = try await store.rate(job: job, score: score, note: arguments.value("note"))
            if arguments.flag("json") {
                print(
                    JSONValue.object([
                        "id": .number(Double(id)), "job_id": .number(Double(job)), "score": .number(score),
                    ]).jsonText)
            } else {
                print("rated job \(job): \(StatusFormat.rate(score)) of 100 (rating \(id))")
            }
            return ExitCode.success
        } catch let error as QueueError where error.code == .notFound {
            // The --tenant advice too (the SQL hint speaks only of retention).
            printError("error: \(error.message)\nhint: \(JobCommands.notFoundHint(tenant: arguments.value("tenant")))")
            return ExitCode.notFound
        }
    }

    /// `80`, `87.5`, or stars `4/5` (→ 80).
    /// - Throws: `QueueError.invalidInput` saying which forms are accepted.
    static func parseScore(_ text: String) throws -> Double {
        let invalid = QueueError(
            .invalidInput, "\"\(text)\" is not a score",
            hint: "give a number from 0 to 100 (100 best), or stars as N/M, e.g. 4/5")
        if let slash = text.firstIndex(of: "/") {
            guard let given = Double(text[..<slash]), let scale = Double(text[text.index(after: slash)...]), scale > 0,
                given >= 0, given <= scale
            else { throw invalid }
            return (given / scale * 1000).rounded() / 10
        }
        guard let score = Double(text), score.isFinite else { throw invalid }
        return score  // the database checks the range, with its own message
    }

    private static func list(_ store: FeedbackStore, json: Bool) async throws -> Int32 {
        let averages = try await store.averages()
        if json {
            print(
                JSONValue.array(
                    averages.map { average in
                        [
                            "model": .string(average.model),
                            "task_class": average.taskClass.map(JSONValue.string) ?? .null,
                            "ratings": .number(Double(average.ratings)), "average_score": .number(average.averageScore),
                        ]
                    }
                ).prettyText)
            return ExitCode.success
        }
        guard !averages.isEmpty else {
            print("no ratings yet (rate a job: dispatcher feedback ID SCORE)")
            return ExitCode.success
        }
        var table = TextTable(["model", "task class", "ratings", "average"], rightAligned: [2, 3])
        for average in averages {
            table.append([
                average.model, average.taskClass ?? StatusFormat.none, String(average.ratings),
                StatusFormat.rate(average.averageScore),
            ])
        }
        print(table.lines.joined(separator: "\n"))
        return ExitCode.success
    }
}
