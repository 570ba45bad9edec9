import Foundation
import QueueModel

/// A month of LLM traffic in simulated time: jobs arrive, the off-peak planner decides when and
/// where each runs (the same decisions a worker makes), simulated models answer or fail by their
/// error rates, and every outcome is priced at the instant it ran.
///
/// Deterministic: the same options give the same results, run after run.
struct OffPeakSimulation {
    struct Options {
        var jobs = 100_000
        var days = 30
        var simpleShare = 0.6
        var backgroundShare = 0.3
        /// Share of background jobs with a short (4 h) deadline instead of 24 h.
        var urgentShare = 0.1
        var start = ISO8601Parsing.date("2026-11-02T00:00:00Z")!
        var seed: UInt64 = 42
    }

    /// One finished job, as the results table will hold it.
    struct Outcome {
        var id: Int64
        var priority: Priority
        var taskClass: String
        var model: String
        var tier: String
        var tokensIn: Int
        var tokensOut: Int
        var cost: Decimal
        var baseCost: Decimal
        var primaryCost: Decimal
        /// The model's average price per 1K at the instant it ran (what the ceiling compares).
        var pricePer1K: Decimal
        var createdAt: Date
        var finishedAt: Date
        var attempts: Int
        var escalation: String?
    }

    struct Summary {
        var outcomes: [Outcome] = []
        var postponements = 0
        var failed = 0
        var largestBacklog = 0
        var backgroundWaitSeconds: [Double] = []
    }

    let catalog: Catalog
    let policy: BackgroundPolicy
    let options: Options

    func run() -> Summary {
        let router = Router(catalog: catalog)
        let schedules = Dictionary(catalog.models.map { ($0.name, PriceSchedule($0)) }, uniquingKeysWith: { a, _ in a })
        let planner = OffPeakPlanner(router: router, policy: policy, schedules: schedules)
        var random = SplitMix(seed: options.seed)
        var summary = Summary()

        // Arrivals over the period, busier in (UTC) working hours.
        struct Pending {
            var id: Int64
            var priority: Priority
            var simple: Bool
            var created: Date
            var deadline: Date?
            var at: Date
            var attempt = 1
        }
        var queue: [Pending] = []
        let span = Double(options.days) * 86_400
        for index in 0..<options.jobs {
            var offset = random.next() * span
            let hour = offset.truncatingRemainder(dividingBy: 86_400) / 3600
            if (hour < 7 || hour > 20) && random.next() < 0.5 { offset = Double(Int(offset / 86_400)) * 86_400 + (8 + random.next() * 12) * 3600 }
            let created = options.start.addingTimeInterval(offset)
            let background = random.next() < options.backgroundShare
            let deadline = background ? created.addingTimeInterval(random.next() < options.urgentShare ? 4 * 3600 : 86_400) : nil
            queue.append(Pending(id: Int64(index + 1), priority: background ? .background : .interactive,
                                 simple: random.next() < options.simpleShare, created: created, deadline: deadline, at: created))
        }
        queue.sort { $0.at < $1.at }
        var waiting: [Pending] = []  // postponed, by time

        var next = 0
        while next < queue.count || !waiting.isEmpty {
            let job: Pending
            if let first = waiting.first, next >= queue.count || first.at < queue[next].at {
                job = waiting.removeFirst()
            } else {
                job = queue[next]
                next += 1
            }
            summary.largestBacklog = max(summary.largestBacklog, waiting.count)
            let taskClass = job.simple ? "simple_queries" : "complex_reasoning"
            let prompt = job.simple ? 120 + Int(random.next() * 200) : 800 + Int(random.next() * 1600)
            let output = job.simple ? 60 + Int(random.next() * 120) : 300 + Int(random.next() * 700)
            let body: JSONValue = [
                "messages": [["role": "user", "content": .string(String(repeating: "x", count: prompt * 4))]],
                "max_tokens": .number(Double(output)),
            ]
            var state = RoutingState(sequence: UInt64(job.id))
            for (name, schedule) in schedules where !schedule.windows.isEmpty {
                state[name].averagePricePer1K = schedule.averagePricePer1K(at: job.at)
            }
            let request = RoutingRequest(body: body, taskClass: taskClass, priority: job.priority)
            switch planner.decide(request, deadline: job.deadline, maxAttempts: 3, state: state, now: job.at) {
            case .postpone(let until, _):
                summary.postponements += 1
                var later = job
                later.at = until
                let position = waiting.firstIndex { $0.at > until } ?? waiting.count
                waiting.insert(later, at: position)
            case .run(let plan, let escalation):
                var finished = false
                for attempt in plan.attempts {
                    let errorRate = attempt.model.settings["error_rate"]?.doubleValue ?? 0
                    if random.next() < errorRate { continue }
                    let latency = (attempt.model.settings["latency_p50_ms"]?.doubleValue ?? 500) / 1000
                    let ran = job.at.addingTimeInterval(latency)
                    let primary = plan.rule.flatMap { catalog.model(named: $0.primary) } ?? attempt.model
                    summary.outcomes.append(
                        Outcome(
                            id: job.id, priority: job.priority, taskClass: taskClass, model: attempt.model.name,
                            tier: attempt.tier.rawValue, tokensIn: prompt, tokensOut: output,
                            cost: schedules[attempt.model.name]!.cost(tokensIn: prompt, tokensOut: output, at: job.at),
                            baseCost: Pricing.cost(of: attempt.model, tokensIn: prompt, tokensOut: output),
                            primaryCost: Pricing.cost(of: primary, tokensIn: prompt, tokensOut: output),
                            pricePer1K: schedules[attempt.model.name]!.averagePricePer1K(at: job.at),
                            createdAt: job.created, finishedAt: ran, attempts: job.attempt, escalation: escalation
                        )
                    )
                    if job.priority == .background { summary.backgroundWaitSeconds.append(job.at.timeIntervalSince(job.created)) }
                    finished = true
                    break
                }
                if !finished {
                    // Every model failed this time: retry later, as a worker does (2 s, 4 s backoff).
                    if job.attempt < 3 {
                        var retry = job
                        retry.attempt += 1
                        retry.at = job.at.addingTimeInterval(2 * pow(2, Double(job.attempt - 1)))
                        let position = waiting.firstIndex { $0.at > retry.at } ?? waiting.count
                        waiting.insert(retry, at: position)
                    } else {
                        summary.failed += 1
                    }
                }
            }
        }
        return summary
    }
}

/// A small, fast, seedable random number generator (SplitMix64), so simulations repeat exactly.
struct SplitMix {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    /// A number in [0, 1).
    mutating func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53)
    }
}
