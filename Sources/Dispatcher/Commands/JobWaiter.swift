import Foundation
import Postgres
import QueueModel
import Synchronization

/// Waits for jobs to finish: LISTENs on switchyard_results, then checks (so a job that finished
/// before the LISTEN is not missed), and checks again after any reconnect (notifications sent
/// while the connection was down are lost), waiting on for the jobs still running.
struct JobWaiter {
    let store: QueueStore
    /// Said under the lines of unknown ids (`JobCommands.notFoundHint(tenant:)`).
    var notFoundHint = JobCommands.notFoundHint(tenant: nil)

    static let finalStatuses: Set<String> = ["succeeded", "failed", "cancelled", "expired"]

    /// Waits, prints each job's outcome as it finishes, and returns the exit status.
    func wait(for ids: [Int64], timeout: Duration, json: Bool) async throws -> Int32 {
        // From the start: the wait for the database counts against it.
        let deadline = ContinuousClock.now + timeout
        // Through the pool first, which waits out a database that is down or restarting as
        // every other command does (the listening connection alone failed at once), for no
        // longer than the caller's timeout (a review's --timeout 2s took 15 s).
        let patience = Task {
            try await Task.sleep(for: timeout)
            store.pool.stopRetryingConnects()
        }
        defer { patience.cancel() }
        _ = try await store.pool.query("SELECT 1")
        // Asked now, under the same patience: asked after the first look, a database gone by then
        // held the wait past its timeout (the pool retrying to connect).
        let live = try? await store.liveWorkers()
        patience.cancel()
        let notifications: any AsyncSequence<PostgresListenEvent, Never> & Sendable
        let onStandby: Bool
        do {
            notifications = try await store.pool.listen(on: ["switchyard_results"])
            onStandby = false
        } catch let error as PostgresError where error.sqlState == .readOnlySQLTransaction {
            onStandby = true
            // A standby takes no LISTEN ("cannot execute LISTEN during recovery": a failover
            // walkthrough's wait on a replica failed so, even for jobs already finished). Its
            // results are read as on the primary, asked for every second instead.
            notifications = AsyncStream { continuation in
                let asking = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(1))
                        continuation.yield(.reconnected)
                    }
                }
                continuation.onTermination = { _ in asking.cancel() }
            }
        }
        var pending = Set(ids)
        var statuses: [Int64: String] = [:]
        var results: [Int64: JSONValue] = [:]
        let printed = PrintedOnce()

        /// `last`: the final look, after which a job not found is reported so.
        func check(_ candidates: Set<Int64>, last: Bool = false) async throws {
            let found = try await store.statuses(of: Array(candidates))
            for id in candidates {
                guard let status = found[id] else {
                    // A replica may not have the job yet: waited for until the timeout (a review's
                    // wait on a lagging standby said "not found" at once).
                    if onStandby && !last {
                        printError("warning: job \(id) is not on this replica (yet): it may lag behind the primary; waiting")
                        continue
                    }
                    statuses[id] = "not_found"
                    pending.remove(id)
                    continue
                }
                statuses[id] = status
                if Self.finalStatuses.contains(status) {
                    pending.remove(id)
                    // Printed as it landed: fetched again only for --json, which prints them all.
                    guard json || !printed.contains(id) else { continue }
                    if let result = try await store.result(of: id) {
                        results[id] = result
                        if !json && printed.first(id) { print(Self.summary(id: id, result: result)) }
                    }
                }
            }
            fflush(nil)
        }

        try await check(pending)
        if !pending.isEmpty, live == 0 {
            // Waited out in silence, a newcomer's first job looked stuck (status knew why).
            printError(
                "warning: no worker has sent a heartbeat in the last 30 s: the jobs stay queued until one runs "
                    + "(worker --concurrency 16)")
        }
        // A job held for its tenant's limits runs only when an operator or a new period releases
        // it: said at once, not found out at the timeout.
        let held = pending.filter { statuses[$0] == "held" }.sorted()
        if let first = held.first, let reason = try? await store.waiting(of: [first])[first]?.tenantHold {
            printError(
                "note: \(held.count == 1 ? "job \(first) is" : "\(held.count) jobs are") held: "
                    + StatusFormat.printable(reason))
        }
        if !pending.isEmpty {
            let waiting = pending
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await Task.sleep(until: deadline)
                }
                group.addTask {
                    var remaining = waiting
                    var lostConnectionSaid = false
                    for await event in notifications {
                        var changed: Set<Int64> = []
                        switch event {
                        case .notification(let notification):
                            for part in notification.payload.split(separator: ",") {
                                if let id = Int64(part), remaining.contains(id) { changed.insert(id) }
                            }
                        case .reconnected:
                            if lostConnectionSaid && !onStandby {
                                lostConnectionSaid = false
                                printError("the connection to the database is back")
                            }
                            // Notifications sent while the connection was down are lost: ask which
                            // jobs finished meanwhile. (Not all of them did: a blip is no timeout.)
                            // Asked up to three times (the pool may still be reconnecting); if it
                            // cannot say, keep waiting: the last check says.
                            var found: [Int64: String]?
                            for pause in [0, 200, 1000] as [Int64] {
                                try? await Task.sleep(for: .milliseconds(pause))
                                found = try? await store.statuses(of: Array(remaining))
                                if found != nil { break }
                            }
                            guard let found else { continue }
                            changed = remaining.filter { found[$0].map(Self.finalStatuses.contains) ?? !onStandby }
                        case .disconnected(let reason):
                            // Said once, as it happens: a wait on a server that died printed nothing
                            // until its timeout (a failover walkthrough's 240 s).
                            if !lostConnectionSaid {
                                lostConnectionSaid = true
                                printError(
                                    "warning: lost the connection to the database (\(JobCommands.oneLine(reason))); "
                                        + "waiting for it to come back, until the timeout")
                            }
                            continue
                        }
                        if changed.isEmpty { continue }
                        remaining.subtract(changed)
                        // Each outcome as it lands, not all at the end (as the docs promise).
                        if !json {
                            for id in changed.sorted() {
                                guard let result = try? await store.result(of: id), printed.first(id) else { continue }
                                print(Self.summary(id: id, result: result))
                            }
                            fflush(nil)  // a pipe or a file sees each line as it is printed, too
                        }
                        if remaining.isEmpty { return }
                    }
                }
                // Whichever ends first: every job finished, or the timeout.
                _ = try await group.next()
                group.cancelAll()
            }
            if ContinuousClock.now >= deadline {
                // Past the caller's time, the last look is tried once: against a database that is
                // down it waited out 15 s of connection retries, then failed (exit 1, not 4).
                store.pool.stopRetryingConnects()
                do {
                    try await check(pending, last: true)
                } catch {
                    printError("warning: could not look at the jobs once more after the timeout: \(error)")
                }
            } else {
                try await check(pending, last: true)
            }
        }

        // Why the unfinished ones wait (a blip reading it leaves the bare statuses).
        let waiting = pending.isEmpty ? [:] : ((try? await store.waiting(of: Array(pending))) ?? [:])
        if json {
            let items: [JSONValue] = ids.map { id in
                results[id] ?? Self.unfinishedJSON(id, status: statuses[id] ?? "unknown", waiting: waiting[id])
            }
            print(JSONValue.array(items).prettyText)
        } else {
            for id in ids where !(Self.finalStatuses.contains(statuses[id] ?? "")) {
                let status = statuses[id] ?? "unknown"
                // As `cancel` says it.
                let line = "\(id)  " + (status == "not_found" ? "not found" : Self.describe(status, waiting[id]))
                print(StatusFormat.printable(line))
            }
        }
        if statuses.values.contains("not_found") {
            if !json { printError("hint: \(notFoundHint)") }
            return ExitCode.notFound
        }
        if !pending.isEmpty {
            // Said: a walkthrough's exit 4 came with the jobs' lines and nothing on why it ended.
            if !json {
                printError(
                    "timed out after \(Arguments.format(timeout)): \(pending.count) of \(ids.count) "
                        + "\(ids.count == 1 ? "job" : "jobs") not finished (wait again, or a longer --timeout)")
            }
            return ExitCode.timedOut
        }
        return ids.allSatisfy({ statuses[$0] == "succeeded" }) ? ExitCode.success : ExitCode.jobNotSucceeded
    }

    /// A job not finished yet as `wait --json` and `result --json` print it: its id and status,
    /// and when it runs next and why (`run_at`, `waiting_reason`, the gate's and its tenant's holds)
    /// when that could be read.
    static func unfinishedJSON(_ id: Int64, status: String, waiting: QueueStore.Waiting?) -> JSONValue {
        var item: JSONValue = ["job_id": .number(Double(id)), "status": .string(status)]
        guard let waits = waiting else { return item }
        item["run_at"] = .string(waits.runAt.postgresText)
        item["waiting_reason"] = waits.reason.map(JSONValue.string) ?? .null
        if waits.paused { item["background_paused"] = true }
        if let held = waits.held { item["background_held"] = .string(held) }
        if let hold = waits.tenantHold { item["tenant_held"] = .string(hold) }
        if let cap = waits.tenantAtCap {
            item["tenant_at_cap"] = [
                "running": .number(Double(cap.running)),
                "max_running": cap.maxRunning.map { .number(Double($0)) } ?? .null,
                "max_per_minute": cap.maxPerMinute.map { .number(Double($0)) } ?? .null,
            ]
        }
        return item
    }

    /// A job's status in the queue, with when it may run and why a worker put it back:
    /// `scheduled until 2026-11-28 22:00:00 UTC: no model is within …`, `queued; put back: attempt 1
    /// of 3 failed: …`.
    static func describe(_ status: String, _ waiting: QueueStore.Waiting?) -> String {
        if status == "held", let hold = waiting?.tenantHold { return "held: \(hold)" }
        guard let waiting, status == "scheduled" || status == "queued" else { return status }
        var text = status == "scheduled" ? "scheduled until \(StatusFormat.clock(waiting.runAt)) UTC" : status
        if let reason = waiting.reason { text += status == "scheduled" ? ": \(reason)" : "; put back: \(reason)" }
        if waiting.paused { text += "; background work is paused (dispatcher background resume)" }
        if let held = waiting.held { text += "; background work is held back: \(held)" }
        if let cap = waiting.tenantAtCap, let limit = cap.maxRunning {
            text += "; its tenant runs \(cap.running) \(cap.running == 1 ? "job" : "jobs") at once, its cap of \(limit): it "
                + "starts as they end (dispatcher tenants max-running)"
        }
        if let rate = waiting.tenantAtCap?.maxPerMinute {
            text += "; its tenant has started as many jobs as its rate of \(rate) a minute allows: it starts in turn, one "
                + "every \(TenantLimits.startInterval(perMinute: rate)) (dispatcher tenants max-per-minute)"
        }
        return text
    }

    /// The jobs whose line was printed, so each is printed once whoever gets to it first.
    final class PrintedOnce: Sendable {
        private let ids = Mutex<Set<Int64>>([])
        /// True the first time `id` is asked for (it is then printed).
        func first(_ id: Int64) -> Bool { ids.withLock { $0.insert(id).inserted } }
        func contains(_ id: Int64) -> Bool { ids.withLock { $0.contains(id) } }
    }

    /// One line per finished job: id, status, model, latency, and the answer or the error.
    static func summary(id: Int64, result: JSONValue) -> String {
        let status = result["status"]?.stringValue ?? "?"
        var parts = ["\(id)", status]
        if let model = result["model"]?.stringValue { parts.append(model) }
        if let latency = result["latency_ms"]?.doubleValue { parts.append(String(format: "%.0fms", latency)) }
        if status == "succeeded" {
            // The answer cut to its first `summaryLength` characters, marked so, and the notes on
            // how it finished kept after it (a walkthrough's answer cut by max_tokens read as
            // whole: the cut took its "(finish_reason: length)").
            let answer = answerParts(result["response"])
            var text = answer.lines.joined(separator: " ").replacingOccurrences(of: "\n", with: " ")
            if text.count > summaryLength { text = String(text.prefix(summaryLength)) + "…" }
            parts.append(([text] + answer.notes).filter { !$0.isEmpty }.joined(separator: " "))
        } else if let message = result["error"]?["message"]?.stringValue {
            parts.append(message)
        }
        // The answer and the error are a model's or a provider's text: one line, nothing a
        // terminal would act on.
        return StatusFormat.printable(parts.joined(separator: "  "))
    }

    /// What the answer says, for people: the first choice's text, else its refusal or its tool
    /// calls (an answer of tool calls alone printed nothing), with how it finished when not
    /// `stop`, and how many more choices there are (`result ID --json` shows them).
    static func answerText(_ response: JSONValue?) -> String {
        let answer = answerParts(response)
        return (answer.lines + answer.notes).joined(separator: "\n")
    }

    /// How much of an answer a line of `wait` shows (`result ID --content` prints it whole).
    static let summaryLength = 200

    /// `answerText`'s lines: what the answer says, and the notes on how it finished.
    static func answerParts(_ response: JSONValue?) -> (lines: [String], notes: [String]) {
        let choices = response?["choices"]?.arrayValue ?? []
        guard let choice = choices.first else { return ([], []) }
        let message = choice["message"]
        var lines: [String] = []
        if let content = message?["content"]?.stringValue, !content.isEmpty { lines.append(content) }
        if let refusal = message?["refusal"]?.stringValue, !refusal.isEmpty { lines.append("refusal: \(refusal)") }
        for call in message?["tool_calls"]?.arrayValue ?? [] {
            let name = call["function"]?["name"]?.stringValue ?? "?"
            lines.append("tool call \(name)(\(call["function"]?["arguments"]?.stringValue ?? ""))")
        }
        var notes: [String] = []
        if let reason = choice["finish_reason"]?.stringValue, reason != "stop", reason != "tool_calls" {
            notes.append("(finish_reason: \(reason))")
        }
        if choices.count > 1 { notes.append("(\(choices.count - 1) more choices: dispatcher result --json)") }
        return (lines, notes)
    }
}
