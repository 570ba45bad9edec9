import Dispatch
import Foundation
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
        while let lines = await reader.next(count: batchSize) {
            var batch: [(line: Int, submission: Submission)] = []
            for (number, text) in lines where !text.trimmingCharacters(in: .whitespaces).isEmpty {
                do {
                    batch.append((number, try Submission.parse(line: text, defaults: defaults)))
                } catch let error as QueueError {
                    rejections.append(Rejection(line: number, reason: error.message))
                }
            }
            do {
                ids += try await store.submit(batch: batch.map(\.submission))
                submitted += batch.count
            } catch let error as QueueError where error.code == .invalidInput {
                // Someone in this batch is invalid: find out who, one by one.
                for item in batch {
                    do {
                        ids.append(try await store.submit(item.submission))
                        submitted += 1
                    } catch let error as QueueError where error.code == .invalidInput {
                        rejections.append(Rejection(line: item.line, reason: error.message))
                    }
                }
            }
            progress.update(submitted: submitted, rejected: rejections.count)
        }
        progress.finish()
        rejections.sort { $0.line < $1.line }
        if json {
            let summary: JSONValue = [
                "submitted": .number(Double(submitted)), "rejected": .number(Double(rejections.count)),
                "ids": .array(ids.map { .number(Double($0)) }),
                "rejections": .array(rejections.map { ["line": .number(Double($0.line)), "error": .string($0.reason)] }),
            ]
            print(summary.jsonText)
        } else {
            print("submitted \(submitted), rejected \(rejections.count)")
            for rejection in rejections.prefix(100) { print("  line \(rejection.line): \(rejection.reason)") }
            if rejections.count > 100 { print("  … and \(rejections.count - 100) more (use --json for all)") }
        }
        return rejections.isEmpty ? ExitCode.success : ExitCode.invalidInput
    }
}

/// Reads a file (or stdin) line by line on a Dispatch queue, never on the cooperative pool
/// (a read from a pipe can block for as long as the writer pleases).
final class LineReader: @unchecked Sendable {
    // Safe because every field below is only touched from `queue`.
    private let handle: FileHandle
    private let queue = DispatchQueue(label: "switchyard.line-reader")
    private var buffer = Data()
    private var lineNumber = 0
    private var atEnd = false

    init(path: String) throws {
        if path == "-" {
            handle = FileHandle.standardInput
        } else {
            guard let opened = FileHandle(forReadingAtPath: path) else {
                throw QueueError(.invalidInput, "cannot read \(path)", hint: "Check that the file exists and is readable.")
            }
            handle = opened
        }
    }

    /// The next lines (up to `count`) with their 1-based numbers; nil at the end.
    func next(count: Int) async -> [(Int, String)]? {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.readLines(count)) }
        }
    }

    private func readLines(_ count: Int) -> [(Int, String)]? {
        var lines: [(Int, String)] = []
        while lines.count < count {
            if let newline = buffer.firstIndex(of: 10) {
                let line = buffer[buffer.startIndex..<newline]
                buffer.removeSubrange(buffer.startIndex...newline)
                lineNumber += 1
                lines.append((lineNumber, String(decoding: line, as: UTF8.self)))
                continue
            }
            if atEnd {
                if !buffer.isEmpty {
                    lineNumber += 1
                    lines.append((lineNumber, String(decoding: buffer, as: UTF8.self)))
                    buffer.removeAll()
                }
                break
            }
            let chunk = handle.readData(ofLength: 1 << 16)
            if chunk.isEmpty { atEnd = true } else { buffer.append(chunk) }
        }
        return lines.isEmpty ? nil : lines
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
        FileHandle.standardError.write(Data(text.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }
}
