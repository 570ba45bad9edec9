import Foundation
import QueueModel

extension StatusSection {
    /// Throughput, errors, latency and cost of the jobs that finished in the window.
    static let overview = StatusSection(key: "overview", title: "THROUGHPUT AND LATENCY") { context in
        let stats = try await context.observability.jobStats(window: context.window, at: context.at)
        guard let total = stats.first(where: { $0.dimension == "total" }) else {
            return StatusOutput(
                lines: ["no jobs finished in the last \(StatusFormat.window(context.window))"],
                json: ["total": JobStats.emptyTotal.json, "by_priority": [], "by_tier": [], "by_provider": []])
        }
        var lines = [
            "\(total.jobs) job\(total.jobs == 1 ? "" : "s") finished (\(StatusFormat.rate(total.jobsPerMinute))/min): "
                + "\(total.succeeded) succeeded, \(total.failed) failed, \(total.expired) expired — "
                + "error rate \(StatusFormat.percent(total.errorRate)), "
                + "fallbacks \(StatusFormat.percent(total.fallbackRate)), "
                + "timeouts \(StatusFormat.percent(total.timeoutRate))",
            "cost \(StatusFormat.money(total.cost)) (\(StatusFormat.money(total.costPerRequest)) per answered job), "
                + "tokens \(total.tokensIn) in / \(total.tokensOut) out",
        ]
        var table = TextTable(
            ["", "jobs", "/min", "errors", "latency P50", "P95", "P99", "queue wait P50", "P95", "P99"],
            rightAligned: Set(1...9))
        // Tiers in their order (primary, secondary, tertiary, then a failed job's "(none)"), not by
        // their jobs: "primary, secondary, (none), tertiary" read as a ranking.
        let tierOrder = ["primary", "secondary", "tertiary"]
        let rows = stats.filter { $0.dimension == "total" || $0.dimension == "priority" }
            + stats.filter { $0.dimension == "tier" }.sorted {
                (tierOrder.firstIndex(of: $0.subject) ?? tierOrder.count) < (tierOrder.firstIndex(of: $1.subject) ?? tierOrder.count)
            }
        for row in rows {
            table.append([
                row.dimension == "total" ? "all" : row.subject, String(row.jobs), StatusFormat.rate(row.jobsPerMinute),
                StatusFormat.percent(row.errorRate), StatusFormat.milliseconds(row.latencyP50MS),
                StatusFormat.milliseconds(row.latencyP95MS), StatusFormat.milliseconds(row.latencyP99MS),
                StatusFormat.milliseconds(row.queueWaitP50MS), StatusFormat.milliseconds(row.queueWaitP95MS),
                StatusFormat.milliseconds(row.queueWaitP99MS),
            ])
        }
        lines += [""] + table.lines
        return StatusOutput(
            lines: lines,
            json: [
                "total": total.json,
                "by_priority": .array(stats.filter { $0.dimension == "priority" }.map(\.json)),
                "by_tier": .array(stats.filter { $0.dimension == "tier" }.map(\.json)),
                "by_provider": .array(stats.filter { $0.dimension == "provider" }.map(\.json)),
            ])
    }

    /// Live jobs per partition and the oldest one waiting.
    static let queue = StatusSection(key: "queue", title: "QUEUE") { context in
        let depth = try await context.observability.queueDepth()
        var table = TextTable(
            ["partition", "queued", "scheduled", "running", "with deadline", "oldest waiting"],
            rightAligned: [1, 2, 3, 4])
        for row in depth {
            let oldest = row.oldestJobID.map { "job \($0), \(StatusFormat.seconds(row.oldestWaitSeconds))" }
            table.append([
                row.priority, String(row.queued), String(row.scheduled), String(row.running), String(row.withDeadline),
                oldest ?? StatusFormat.none,
            ])
        }
        // Who is waiting: an on-call walkthrough's surge was one tenant's 10,000 jobs ahead of the
        // others', which only SQL on switchyard.jobs could show. The three with most jobs due and
        // unclaimed per partition, read only when some are queued.
        var lines = table.lines
        var siblings: [String: JSONValue] = [:]
        if depth.contains(where: { $0.queued > 0 }) {
            // A role that may read the queue's figures but not its rows gets the table alone.
            let byPriority = (try? await context.observability.queuedByTenant()) ?? []
            for partition in byPriority {
                // (Jobs without a tenant count as one, "(none)", as above.)
                let others = partition.otherTenants == 0 ? "" : "; \(partition.otherTenants) more "
                    + (partition.otherTenants == 1 ? "tenant" : "tenants")
                    + (partition.othersWithoutTenant ? " (or none)" : "") + " with \(partition.otherQueued) "
                    + (partition.otherQueued == 1 ? "job" : "jobs")
                lines.append(
                    "\(partition.priority) queued by tenant: "
                        + partition.tenants.map { "\($0.tenant.map(StatusFormat.printable) ?? "(none)") \($0.queued)" }
                        .joined(separator: ", ") + others)
            }
            siblings["queued_by_tenant"] = .object(Dictionary(
                byPriority.map { partition in
                    (partition.priority, JSONValue.array(partition.tenants.map {
                        ["tenant": $0.tenant.map(JSONValue.string) ?? .null, "queued": .number(Double($0.queued))]
                    }))
                }, uniquingKeysWith: { first, _ in first }))
            let others = byPriority.filter { $0.otherTenants > 0 }
            if !others.isEmpty {
                siblings["queued_by_other_tenants"] = .object(Dictionary(
                    others.map { ($0.priority, ["tenants": .number(Double($0.otherTenants)), "queued": .number(Double($0.otherQueued))]) },
                    uniquingKeysWith: { first, _ in first }))
            }
        }
        // Tenants paused or over their budgets (sql/0088): their jobs are in neither column above.
        if let held = try? await TenantLimits.held(in: context.pool), !held.isEmpty {
            lines.append(
                "held for their tenants' limits: "
                    + Self.mostJobs(held.map { ($0.tenant, $0.jobs, $0.paused ? "paused" : "budget spent") })
                    + "; dispatcher tenants says why")
            siblings["held_tenants"] = .array(held.map {
                ["tenant": .string($0.tenant), "jobs": .number(Double($0.jobs)), "reason": .string($0.reason)]
            })
        }
        // Tenants whose due jobs wait for their caps (sql/0096): queued, and no worker takes them.
        if let capped = try? await TenantLimits.atCap(in: context.pool), !capped.isEmpty {
            lines.append(
                "waiting for their tenants' caps: " + Self.mostJobs(capped.map { ($0.tenant, $0.queued, $0.caps) })
                    + "; dispatcher tenants max-running and max-per-minute raise them")
            siblings["tenants_at_cap"] = .array(capped.map {
                ["tenant": .string($0.tenant), "queued": .number(Double($0.queued)), "running": .number(Double($0.running)),
                 "max_running": $0.maxRunning.map { .number(Double($0)) } ?? .null,
                 "max_per_minute": $0.maxPerMinute.map { .number(Double($0)) } ?? .null]
            })
        }
        // A network walkthrough's worker held 29 jobs for 15 minutes on a dead connection: status
        // showed "running 29" and a fresh heartbeat, nothing of how long they had run.
        if depth.contains(where: { $0.running > 0 }),
            let longest = try? await context.observability.longestRunning()
        {
            if longest.seconds >= Self.longRunningSeconds {
                lines.append(
                    "running longest: job \(longest.job), \(StatusFormat.seconds(longest.seconds)) on "
                        + "\(StatusFormat.printable(longest.worker)) (past its calls' timeouts, it may be stuck: its "
                        + "worker's log says why)")
            }
            siblings["longest_running"] = [
                "job_id": .number(Double(longest.job)), "worker": .string(longest.worker),
                "running_s": .number(longest.seconds),
            ]
        }
        return StatusOutput(lines: lines, json: .array(depth.map(\.json)), siblings: siblings)
    }

    /// How long a job runs before status names it under the queue.
    static let longRunningSeconds = 300.0

    /// Worker processes and their heartbeats.
    static let workers = StatusSection(key: "workers", title: "WORKERS") { context in
        let workers = try await context.observability.workers()
        guard !workers.isEmpty else {
            return StatusOutput(lines: ["no workers have reported (start one: worker --concurrency 16)"], json: [])
        }
        var table = TextTable(
            ["worker", "host", "version", "in flight", "leased", "concurrency", "heartbeat", "up since"],
            rightAligned: [3, 4, 5])
        // Rows of workers that stopped without deregistering (killed, crashed) stay a day, until
        // prune: after a few crashes they buried the live ones. Those silent over ten minutes are
        // counted, not listed (--json lists them).
        let gone = workers.filter { !$0.alive && $0.heartbeatAgeSeconds > Self.goneAfterSeconds }
        for worker in workers where worker.alive || worker.heartbeatAgeSeconds <= Self.goneAfterSeconds {
            table.append([
                worker.id, worker.hostname ?? StatusFormat.none, worker.version ?? StatusFormat.none,
                // A stale worker's count is its last heartbeat's, beside leases already rescued (an
                // on-call walkthrough read "15 in flight, 0 leased" of a killed worker).
                worker.alive ? String(worker.inFlight) : StatusFormat.none, String(worker.leased),
                String(worker.concurrency),
                worker.alive
                    ? "\(StatusFormat.seconds(worker.heartbeatAgeSeconds)) ago"
                    : "STALE \(StatusFormat.seconds(worker.heartbeatAgeSeconds)) ago",
                StatusFormat.clock(worker.startedAt),
            ])
        }
        let alive = workers.filter(\.alive)
        let summary =
            "\(alive.count) alive of \(workers.count); \(alive.reduce(0) { $0 + $1.inFlight }) of "
            + "\(alive.reduce(0) { $0 + $1.concurrency }) slots busy at their last heartbeat"
        var lines = [summary] + (table.lines.count > 1 ? table.lines : [])
        // A model a worker skips is out of its plans while the others call it: its jobs may wait
        // for a worker with the model's key, and only that worker's log said why.
        for worker in alive where !worker.skippedModels.isEmpty {
            for (model, reason) in worker.skippedModels.sorted(by: { $0.key < $1.key }) {
                lines.append(
                    "\(StatusFormat.printable(worker.id)) skips \(StatusFormat.printable(model)): "
                        + StatusFormat.printable(reason))
            }
        }
        if let latest = gone.map(\.heartbeatAgeSeconds).min() {
            lines.append(
                // "more" only beside rows listed: alone, "1 more" read as another worker than the
                // summary's one (a walkthrough's).
                "\(gone.count)\(table.lines.count > 1 ? " more" : "") stopped without deregistering, silent for "
                    + "\(StatusFormat.seconds(latest)) or more (status --json lists them; prune removes rows a day "
                    + "old)")
        }
        // A network walkthrough's cut had 30 jobs taken from a live worker and their answers
        // refused, and status said nothing of it (only the worker logs and the trails did).
        var siblings: [String: JSONValue] = [:]
        if let rescues = try? await context.observability.rescues(window: context.window, at: context.at) {
            let total = rescues.reduce(0) { $0 + $1.jobs }
            let failed = rescues.reduce(0) { $0 + $1.failed }
            if total > 0 {
                lines.append(
                    "leases run out in the last \(StatusFormat.window(context.window)): \(total) job\(total == 1 ? "" : "s") "
                        + "taken back from "
                        + rescues.map { "\(StatusFormat.printable($0.worker)) (\($0.jobs))" }.joined(separator: ", ")
                        + (failed == total
                            ? " and failed, no attempt left" : " and run again"
                                + (failed > 0 ? " (\(failed) failed instead, no attempt left)" : ""))
                        + "; an answer such a worker sends later is refused")
            }
            siblings["rescued_jobs"] = .array(
                rescues.map {
                    [
                        "worker": .string($0.worker), "jobs": .number(Double($0.jobs)),
                        "failed": .number(Double($0.failed)),
                    ]
                })
        }
        return StatusOutput(lines: lines, json: .array(workers.map(\.json)), siblings: siblings)
    }

    /// How long a stopped worker's row is listed before it is only counted.
    static let goneAfterSeconds = 600.0

    /// The three tenants with most jobs, `acme 120 (paused)`, and how many more with how many jobs:
    /// a review's 2,000 held tenants made a line of 44,000 characters.
    static func mostJobs(_ tenants: [(tenant: String, jobs: Int, why: String)]) -> String {
        let sorted = tenants.sorted { ($0.jobs, $1.tenant) > ($1.jobs, $0.tenant) }
        let rest = sorted.dropFirst(3)
        return sorted.prefix(3).map { "\(StatusFormat.printable($0.tenant)) \($0.jobs) (\($0.why))" }.joined(separator: ", ")
            + (rest.isEmpty ? "" : "; \(rest.count) more \(rest.count == 1 ? "tenant" : "tenants") with "
                + "\(rest.map(\.jobs).reduce(0, +)) jobs")
    }
}
