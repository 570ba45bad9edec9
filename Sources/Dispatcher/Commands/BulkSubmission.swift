import Dispatch
import Foundation
import Postgres
import QueueModel

/// Submits JSONL in batches of 1,000 jobs per statement. A batch the server refuses is retried
/// job by job, so one bad line costs only itself; every rejection is reported with its line.
struct BulkSubmission {
    let store: QueueStore
    let defaults: Submission
    let json: Bool
    var batchSize = 1000

    struct Rejection {
        var line: Int
        var reason: String
    }

    func run(reading path: String) async throws -> Int32 {
        let reader = try LineReader(path: path)
        let progress = Progress(enabled: isatty(2) == 1 && !json)
        var submitted = 0
        var rejections: [Rejection] = []
        var ids: [Int64] = []
        // The first line not yet submitted or rejected, and the last of the statement on its way:
        // where to start again if the server goes, and what may or may not have gone in.
        var resumeLine = 1
        var inFlightThrough = 0
        // Jobs an idempotency key named from before this run, not new ones: a re-run of a keyed
        // file said "submitted 2" with nothing made. Counted by the database's clock, read just
        // before the first batch with a key (nil when it cannot be read: the batch then says
        // what is wrong; no sooner, so a file that cannot be read is said first).
        var runStart: Date?
        var askedForStart = false
        var earlier: Set<Int64> = []
        // Why which lines made new jobs cannot be told (this role cannot read some of them back,
        // or the database did not answer the check): the summary then does not claim it.
        var newJobsUnknown: String?
        while let lines = try await Self.lines(reader, batchSize, path: path, submitted: submitted, rejected: rejections.count) {
            resumeLine = lines.first?.number ?? resumeLine
            inFlightThrough = lines.last?.number ?? resumeLine
            var batch: [(line: Int, submission: Submission)] = []
            for line in lines {
                do {
                    // Bytes that are not UTF-8, NUL bytes and absurd nesting are refused here, with
                    // the line's number, before the JSON parser or the server sees them.
                    let text = try line.text()
                    guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { continue }
                    batch.append((line.number, try Submission.parse(line: text, defaults: defaults)))
                } catch let error as QueueError {
                    rejections.append(Rejection(line: line.number, reason: error.message))
                }
            }
            let idsBefore = ids.count
            let keyed = batch.contains { $0.submission.idempotencyKey != nil }
            if keyed && !askedForStart {
                askedForStart = true
                runStart = try? await store.databaseNow()
                if runStart == nil { newJobsUnknown = "the database did not answer the check" }
            }
            do {
                do {
                    ids += try await store.submit(batch: batch.map(\.submission))
                    submitted += batch.count
                } catch let error as QueueError where error.isSubmissionRefusal {
                    // Someone in this batch was refused (invalid, or a tenant this role may not
                    // submit for): none of it was stored; find out who, one by one.
                    for item in batch {
                        resumeLine = item.line
                        inFlightThrough = item.line
                        do {
                            ids.append(try await store.submit(item.submission))
                            submitted += 1
                        } catch let error as QueueError where error.isSubmissionRefusal {
                            rejections.append(Rejection(line: item.line, reason: error.message))
                        }
                    }
                }
            } catch let error as QueueError where error.isRoleRefusal && submitted == 0 {
                progress.finish()
                throw error  // nothing this role submits can go in: the role's error, not the file's
            } catch {
                progress.finish()
                throw interrupted(
                    by: error, path: path, lines: resumeLine...max(resumeLine, inFlightThrough), submitted: submitted,
                    ids: ids, rejections: rejections)
            }
            if let runStart, keyed, ids.count > idsBefore {
                let made = Set(ids[idsBefore...])
                if let found = try? await store.createdBefore(runStart, among: Array(made)) {
                    if found.seen == made {
                        earlier.formUnion(found.earlier)
                    } else {
                        newJobsUnknown = newJobsUnknown ?? "this role cannot read them back"
                    }
                } else {
                    newJobsUnknown = newJobsUnknown ?? "the database did not answer the check"
                }
            }
            resumeLine = (lines.last?.number ?? resumeLine - 1) + 1
            progress.update(submitted: submitted, rejected: rejections.count)
        }
        progress.finish()
        rejections.sort { $0.line < $1.line }
        if submitted == 0 && rejections.isEmpty {
            printError(
                "error: nothing to submit: \(path == "-" ? "stdin" : path) has no jobs\n"
                    + "hint: give one JSON request (or job envelope) per line")
            return ExitCode.invalidInput
        }
        // A line whose idempotency key an earlier line used names that line's job, not a new one;
        // one whose key a job from before this run has names that job.
        let jobs = Set(ids).count
        let newJobs = jobs - earlier.count
        if json {
            let summary: JSONValue = [
                "submitted": .number(Double(submitted)), "jobs": .number(Double(jobs)),
                "new_jobs": newJobsUnknown == nil ? .number(Double(newJobs)) : .null,
                "rejected": .number(Double(rejections.count)),
                "ids": .array(ids.map { .number(Double($0)) }),
                "rejections": .array(rejections.map { ["line": .number(Double($0.line)), "error": .string($0.reason)] }),
            ]
            print(summary.jsonText)
        } else {
            let repeats = submitted - jobs
            var why: [String] = []
            if repeats > 0 {
                why.append(
                    "\(repeats) \(repeats == 1 ? "line repeats" : "lines repeat") an earlier line's idempotency key, "
                        + "and names its job")
            }
            if !earlier.isEmpty {
                why.append(
                    "\(earlier.count) \(earlier.count == 1 ? "key names a job" : "keys name jobs") submitted before")
            }
            if let unknown = newJobsUnknown {
                why.append("which keys named jobs from before cannot be told: \(unknown)")
            }
            let made = newJobsUnknown != nil ? "\(jobs) \(jobs == 1 ? "job" : "jobs")" : "\(newJobs) new \(newJobs == 1 ? "job" : "jobs")"
            print(
                "submitted \(submitted), rejected \(rejections.count)"
                    + (why.isEmpty ? "" : " (\(made): \(why.joined(separator: "; ")))"))
            if let line = Self.idsLine(ids) { print(line) }
            for rejection in rejections.prefix(100) { print("  line \(rejection.line): \(rejection.reason)") }
            if rejections.count > 100 { print("  … and \(rejections.count - 100) more (use --json for all)") }
        }
        return rejections.isEmpty ? ExitCode.success : ExitCode.invalidInput
    }

    /// The jobs' ids, for `dispatcher wait`: each of up to ten, a run of consecutive ids as its
    /// ends with how to wait for them all, else the lowest and the highest (`--json` lists each).
    /// A walkthrough's bulk submit printed counts alone, and the README's next step waits on ids.
    static func idsLine(_ ids: [Int64]) -> String? {
        let unique = Set(ids).sorted()
        guard let low = unique.first, let high = unique.last else { return nil }
        if unique.count <= 10 { return "ids " + unique.map(String.init).joined(separator: " ") }
        if high - low + 1 == Int64(unique.count) {
            return "ids \(low)–\(high) (seq \(low) \(high) | dispatcher wait - waits for them all)"
        }
        return "ids \(low) … \(high) (\(unique.count) jobs; --json lists each)"
    }

    /// The error for a run the database stopped, saying what went in, what may have (a batch is
    /// one statement: whole or not at all, but a connection lost before its answer cannot say
    /// which), and how to go on; with `--json`, the summary so far goes to stdout first, with
    /// `error`, `resume_from_line` and `in_flight_lines`.
    private func interrupted(
        by error: any Error, path: String, lines inFlight: ClosedRange<Int>, submitted: Int, ids: [Int64],
        rejections: [Rejection]
    ) -> QueueError {
        let resumeLine = inFlight.lowerBound
        let reason = JobCommands.oneLine(
            (error as? QueueError)?.message ?? (error as? PostgresError)?.message ?? "\(error)")
        // Not connected, the batch was never sent, or the server answered with a refusal (one
        // statement, whole or not at all: a standby's read-only 25006 went as "may or may not have
        // gone in"): nothing is in doubt.
        let sentNothing = (error as? PostgresError)?.sentNothing == true
        // (Not a lost connection, 08, nor a server shutting down, 57P0x: the answer may be lost.)
        let state = (error as? PostgresError)?.sqlState ?? (error as? QueueError)?.sqlState
        let refused = !sentNothing && state.map { $0.errorClass != "08" && !$0.rawValue.hasPrefix("57P0") } ?? false
        // Lines of the unfinished batch already refused on reading are read again on the rerun.
        let rejections = rejections.filter { $0.line < resumeLine }
        if json {
            let summary: JSONValue = [
                // The keys of a whole run's summary; which keys named earlier jobs is not known here.
                "submitted": .number(Double(submitted)), "jobs": .number(Double(Set(ids).count)), "new_jobs": .null,
                "rejected": .number(Double(rejections.count)), "ids": .array(ids.map { .number(Double($0)) }),
                "rejections": .array(rejections.map { ["line": .number(Double($0.line)), "error": .string($0.reason)] }),
                "error": .string(reason), "resume_from_line": .number(Double(resumeLine)),
                "in_flight_lines": sentNothing || refused
                    ? [] : [.number(Double(inFlight.lowerBound)), .number(Double(inFlight.upperBound))],
            ]
            print(summary.jsonText)
            fflush(nil)  // whole, before the error goes to stderr
        }
        let source = path == "-" ? "stdin" : path
        let done =
            resumeLine == 1
            ? "nothing of \(source) was done before it"
            : "lines 1–\(resumeLine - 1) of \(source) were done (submitted \(submitted), rejected \(rejections.count))"
        let span = inFlight.count == 1 ? "line \(resumeLine)" : "lines \(resumeLine)–\(inFlight.upperBound)"
        if sentNothing || refused {
            let again =
                resumeLine == 1 ? "it again."
                : path == "-" ? "the rest from line \(resumeLine)."
                : "the rest: tail -n +\(resumeLine) \(path) | dispatcher submit --file - (same options)."
            return QueueError(
                .database,
                "\(reason); \(done); the lines from \(resumeLine) on were not "
                    + (refused ? "submitted (the database refused \(span) whole)" : "sent"),
                hint: (state == .readOnlySQLTransaction
                    ? "The database takes no writes (a standby, or read-only by setting): against the primary (with "
                        + "several hosts in DATABASE_URL, add target_session_attrs=read-write), submit "
                    : "Once the database is back, submit ") + again,
                sqlState: state)
        }
        return QueueError(
            .database,
            "\(reason); \(done); \(span) \(inFlight.count == 1 ? "was on its way" : "were on their way") and may or may "
                + "not have gone in (the answer was lost); "
                + "the lines after were not sent",
            hint: "Give every line an idempotency_key and submit the whole input again once the database is back: "
                + "lines that went in are not submitted twice. Without keys, see whether \(span) went in before "
                + (path == "-" ? "submitting the rest from line \(resumeLine)."
                    : "submitting the rest: tail -n +\(resumeLine) \(path) | dispatcher submit --file - (same options)."))
    }

    /// The next lines; a read that fails (a directory, a closed stdin, an I/O error) says how far
    /// the file had gone in, since the batches before it are submitted.
    private static func lines(_ reader: LineReader, _ count: Int, path: String, submitted: Int, rejected: Int)
        async throws -> [LineReader.Line]?
    {
        do {
            return try await reader.next(count: count)
        } catch {
            throw QueueError(
                .invalidInput,
                "cannot read \(path == "-" ? "stdin" : path): \(InputFile.reason(error))"
                    + (submitted + rejected == 0 ? "; nothing was submitted"
                        : "; the lines before it were: submitted \(submitted), rejected \(rejected)"),
                hint: "Give a readable JSONL file (or pipe one to --file -); submit the rest from where it stopped.")
        }
    }
}

/// Reads a file (or stdin) line by line on a Dispatch queue, never on the cooperative pool
/// (a read from a pipe can block for as long as the writer pleases). Lines are handed out as
/// bytes: whether they are text is for `Line.text()` to say, with the line's number.
final class LineReader: @unchecked Sendable {
    // Safe because every field below is only touched from `queue`.
    private let handle: FileHandle
    private let queue = DispatchQueue(label: "switchyard.line-reader")
    private var buffer: [UInt8] = []
    /// Where the next line starts in `buffer` (the bytes before it were handed out).
    private var start = 0
    private var lineNumber = 0
    private var atEnd = false
    /// The bytes of the current line dropped so far because it is longer than the limit.
    private var skipped = 0
    private let maximumLineBytes: Int

    /// One line, without its newline.
    struct Line {
        var number: Int
        var bytes: [UInt8]
        /// The line's length when it was too long to keep (its bytes are then dropped).
        var oversizedBytes: Int?

        /// The line as text.
        /// - Throws: `QueueError.invalidInput` when it is too long, not UTF-8, holds a NUL byte or
        ///   nests too deeply (`InputScreen`).
        func text() throws -> String {
            if let oversizedBytes {
                throw QueueError(
                    .invalidInput,
                    "the line is \(oversizedBytes) bytes, over the client's limit of \(InputScreen.maximumBytes) bytes",
                    hint: "The server refuses requests over its max_request_bytes setting (1 MiB by default).")
            }
            // A byte order mark that an editor put at the start of the file is not JSON.
            let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]
            let bytes = number == 1 && bytes.starts(with: byteOrderMark) ? Array(bytes.dropFirst(3)) : bytes
            do {
                return try InputScreen.text(bytes)
            } catch var error as QueueError {
                error.message = "the line " + error.message
                throw error
            }
        }
    }

    init(path: String, maximumLineBytes: Int = InputScreen.maximumBytes) throws {
        self.maximumLineBytes = maximumLineBytes
        if path == "-" {
            handle = FileHandle.standardInput
        } else {
            do {
                handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            } catch {
                throw QueueError(
                    .invalidInput, "cannot read \(path): \(InputFile.reason(error))",
                    hint: "Check that the file exists and is readable.")
            }
        }
    }

    /// The next lines (up to `count`) with their 1-based numbers; nil at the end.
    func next(count: Int) async throws -> [Line]? {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try self.readLines(count) }) }
        }
    }

    private func readLines(_ count: Int) throws -> [Line]? {
        var lines: [Line] = []
        while lines.count < count {
            if let newline = buffer[start...].firstIndex(of: 10) {
                lines.append(take(start..<newline))
                start = newline + 1
                continue
            }
            // Drop what was handed out, so the buffer holds one partial line at most.
            buffer.removeSubrange(0..<start)
            start = 0
            // A line longer than the limit: keep counting it, never holding more than the limit.
            if buffer.count > maximumLineBytes {
                skipped += buffer.count
                buffer.removeAll(keepingCapacity: true)
            }
            if atEnd {
                if !buffer.isEmpty || skipped > 0 { lines.append(take(0..<buffer.count)) }
                buffer.removeAll()
                break
            }
            // `read(upToCount:)` throws where `readData(ofLength:)` traps (a directory, a closed stdin).
            if let chunk = try handle.read(upToCount: 1 << 16), !chunk.isEmpty {
                buffer.append(contentsOf: chunk)
            } else {
                atEnd = true
            }
        }
        return lines.isEmpty ? nil : lines
    }

    /// The line made of the skipped bytes and `buffer[range]`.
    private func take(_ range: Range<Int>) -> Line {
        lineNumber += 1
        defer { skipped = 0 }
        if skipped > 0 || range.count > maximumLineBytes {
            return Line(number: lineNumber, bytes: [], oversizedBytes: skipped + range.count)
        }
        return Line(number: lineNumber, bytes: Array(buffer[range]), oversizedBytes: nil)
    }
}

/// A one-line progress display on stderr, redrawn in place, when stderr is a terminal.
struct Progress {
    let enabled: Bool
    let started = Date()

    func update(submitted: Int, rejected: Int) {
        guard enabled else { return }
        let rate = Double(submitted) / max(Date().timeIntervalSince(started), 0.001)
        let text = "\r\u{1B}[2Ksubmitted \(submitted)  rejected \(rejected)  (\(Int(rate))/s)"
        StandardStream.error.write(text)
    }

    func finish() {
        guard enabled else { return }
        StandardStream.error.write("\r\u{1B}[2K")
    }
}
