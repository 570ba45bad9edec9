import Foundation
import QueueModel
import Testing
@testable import Worker

/// Simulated models: deterministic answers, seeded failure rates, latency from the injected clock,
/// outages. Every test here runs on a `ManualProviderClock`, so none waits for real time (except
/// the cancellation test, which is cancelled at once).
@Suite("Simulated provider")
struct SimulatedProviderTests {
    static func model(_ settings: JSONValue, name: String = "sim-a", contextWindow: Int = 8192) -> ModelSpec {
        ModelSpec(name: name, provider: .simulated, contextWindow: contextWindow, settings: settings)
    }

    static func call(_ model: ModelSpec, _ text: String = "hello", timeout: Duration = .seconds(60)) -> ProviderCall {
        ProviderCall(request: ProviderTestSupport.request(text), model: model, timeout: timeout)
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    @Test("the same request gets the same answer and token counts, whatever the process, salt or time")
    func deterministicAnswers() async throws {
        let model = Self.model(["latency_p50_ms": 100, "latency_p95_ms": 300])
        let first = SimulatedProvider(clock: ManualProviderClock(), salt: 1)
        let second = SimulatedProvider(clock: ManualProviderClock(start: Date(timeIntervalSince1970: 0)), salt: 2)
        let a = try await first.complete(Self.call(model, "What is a switchyard?"))
        let b = try await second.complete(Self.call(model, "What is a switchyard?"))
        #expect(a.response["choices"] == b.response["choices"])
        #expect(a.response["id"] == b.response["id"])
        #expect(a.usage == b.usage)
        let content = try #require(a.response["choices"]?[0]?["message"]?["content"]?.stringValue)
        #expect(content.hasPrefix("[sim-a] "))
        #expect(content.split(separator: " ").count - 1 == a.usage.completionTokens)
        #expect((16...160).contains(a.usage.completionTokens))
        #expect(a.usage.promptTokens == 4 + 6)  // 21 characters / 4, rounded up, plus 4 for the message
        #expect(a.response["usage"]?["total_tokens"]?.intValue == a.usage.totalTokens)

        let other = try await first.complete(Self.call(model, "What is a marshalling yard?"))
        #expect(other.response["choices"] != a.response["choices"])

        let capped = try await first.complete(
            ProviderCall(
                request: ProviderTestSupport.request("hello", extra: ["max_tokens": 5]), model: model,
                timeout: .seconds(60)))
        #expect(capped.usage.completionTokens == 5)
        #expect(capped.response["choices"]?[0]?["finish_reason"] == "length")
    }

    @Test("latency follows the P50/P95 it was given, slept on the injected clock")
    func latencyDistribution() async throws {
        let clock = ManualProviderClock()
        let provider = SimulatedProvider(clock: clock)
        let model = Self.model(["latency_p50_ms": 200, "latency_p95_ms": 800, "seed": 42])
        var latencies: [Double] = []
        for index in 0..<2000 {
            let reply = try await provider.complete(Self.call(model, "question \(index)"))
            latencies.append(Self.milliseconds(reply.latency))
        }
        #expect(clock.sleeps.map(Self.milliseconds) == latencies)
        latencies.sort()
        // ln X ~ N(ln 200, 0.843²). With n = 2000 the sample median's standard error in log space
        // is 1.2533·σ/√n = 0.024 and the sample P95's is √(0.95·0.05/n)/φ(1.645)·σ = 0.040; the
        // bounds are 5 standard errors: median in 200·e^±0.118, P95 in 800·e^±0.2.
        #expect((178...225).contains(latencies[1000]))
        #expect((655...977).contains(latencies[1900]))
    }

    @Test("error and 429 rates over many seeded calls, and the same seed repeats the same outcomes")
    func failureRates() async throws {
        let model = Self.model([
            "latency_p50_ms": 10, "latency_p95_ms": 20, "error_rate": 0.1, "rate_limit_rate": 0.05,
            "retry_after_ms": 750,
        ])
        func outcomes(_ provider: SimulatedProvider, count: Int) async -> [String] {
            var result: [String] = []
            for index in 0..<count {
                let error = await ProviderTestSupport.providerError {
                    try await provider.complete(Self.call(model, "q\(index)"))
                }
                if let error {
                    if error.code == .rateLimited {
                        #expect(error.retryAfter == .milliseconds(750))
                        #expect(
                            error.decision(remainingBudget: .seconds(5)) == .retrySameModel(after: .milliseconds(750)))
                    } else {
                        #expect(error.httpStatus == 500)
                        #expect(error.decision(remainingBudget: .seconds(5)) == .nextCandidate)
                    }
                }
                result.append(error?.code.rawValue ?? "ok")
            }
            return result
        }
        let run = await outcomes(SimulatedProvider(clock: ManualProviderClock()), count: 2000)
        // P(429) = 0.05 → 100 ± 49 (5σ, σ = √(2000·0.05·0.95) = 9.7);
        // P(500) = 0.95 · 0.1 = 0.095 → 190 ± 66 (5σ, σ = √(2000·0.095·0.905) = 13.1).
        let rateLimited = run.filter { $0 == "rate_limited" }.count
        let serverErrors = run.filter { $0 == "server_error" }.count
        #expect((51...149).contains(rateLimited))
        #expect((124...256).contains(serverErrors))
        let again = await outcomes(SimulatedProvider(clock: ManualProviderClock()), count: 200)
        #expect(Array(run.prefix(200)) == again)
    }

    @Test("a latency beyond the attempt's budget is a timeout after exactly the budget")
    func timeouts() async throws {
        let clock = ManualProviderClock()
        let provider = SimulatedProvider(clock: clock)
        let model = Self.model(["latency_p50_ms": 2000, "latency_p95_ms": 3000])
        var timedOut = 0
        for index in 0..<50 {
            let error = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(model, "q\(index)", timeout: .seconds(1)))
            }
            guard let error else { continue }
            #expect(error.code == .timedOut)
            #expect(error.latency == .seconds(1))
            #expect(error.decision(remainingBudget: .seconds(5)) == .nextCandidate)
            #expect(clock.sleeps.last == .seconds(1))
            timedOut += 1
        }
        // P(latency ≤ 1 s) = Φ(ln(0.5)/0.2465) = Φ(−2.81) = 0.25 %: at most a few of 50 answer.
        #expect(timedOut >= 45)
    }

    @Test("scheduled outage windows fail every call while in force, with the fault asked for")
    func outageWindows() async throws {
        let clock = ManualProviderClock(start: Date(timeIntervalSince1970: 1_750_000_000))
        let provider = SimulatedProvider(clock: clock)
        let model = Self.model([
            "mode": "instant",
            "outages": [
                ["start": "2025-06-15T15:07:40Z", "end": "2025-06-15T15:08:40Z", "fault": "server_error"],
                [1_750_000_300, 1_750_000_360],
                ["start": 1_750_000_600, "fault": "overloaded"],
            ],
        ])
        func outcome() async -> String {
            let error = await ProviderTestSupport.providerError { try await provider.complete(Self.call(model)) }
            return error.map { "\($0.code) \($0.httpStatus ?? 0)" } ?? "ok"
        }
        #expect(await outcome() == "ok")  // T
        clock.advance(by: .seconds(60))
        #expect(await outcome() == "server_error 503")  // T+60: inside [T+60, T+120)
        clock.advance(by: .seconds(59))
        #expect(await outcome() == "server_error 503")
        clock.advance(by: .seconds(1))
        #expect(await outcome() == "ok")  // T+120: the end is exclusive
        clock.advance(by: .seconds(180))
        #expect(await outcome() == "server_error 503")  // T+300, the [start, end] pair form
        clock.advance(by: .seconds(60))
        #expect(await outcome() == "ok")
        clock.advance(by: .seconds(240))
        #expect(await outcome() == "overloaded 529")  // T+600, open-ended
        clock.advance(by: .seconds(86_400))
        #expect(await outcome() == "overloaded 529")
    }

    @Test("outage faults: timeout holds the attempt for its budget; quota marks the model unhealthy; 401 refuses this worker")
    func outageFaults() async throws {
        let clock = ManualProviderClock()
        let provider = SimulatedProvider(clock: clock)
        for (fault, code, decision) in [
            ("timeout", ProviderError.Code.timedOut, FallbackDecision.nextCandidate),
            ("unauthorized", .unauthorized, .nextCandidateRefusedHere),
            ("quota", .quotaExhausted, .nextCandidateAndMarkUnhealthy),
            ("rate_limited", .rateLimited, .retrySameModel(after: .milliseconds(200))),
        ] {
            let model = Self.model(["outages": [["fault": .string(fault)]], "retry_after_ms": 200])
            let error = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(model, timeout: .seconds(3)))
            }
            #expect(error?.code == code)
            #expect(error?.decision(remainingBudget: .seconds(5)) == decision)
        }
        #expect(clock.sleeps == [.seconds(3)])
    }

    @Test("an outage file fails every call while it exists (how a demo takes a model down mid-run)")
    func outageFile() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-outage-\(UUID())").path
        let provider = SimulatedProvider(clock: ManualProviderClock())
        let model = Self.model(["mode": "instant", "outage_file": .string(path), "outage_fault": "overloaded"])
        #expect(try await provider.complete(Self.call(model)).httpStatus == 200)
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        let down = await ProviderTestSupport.providerError { try await provider.complete(Self.call(model)) }
        #expect(down?.code == .overloaded)
        try FileManager.default.removeItem(atPath: path)
        #expect(try await provider.complete(Self.call(model)).httpStatus == 200)
    }

    @Test("instant mode: no latency and no random failures, whatever the rates say")
    func instantMode() async throws {
        let clock = ManualProviderClock()
        let provider = SimulatedProvider(clock: clock)
        let model = Self.model([
            "mode": "instant", "error_rate": 1, "rate_limit_rate": 1, "latency_p50_ms": 5000, "latency_p95_ms": 9000,
        ])
        for index in 0..<100 {
            let reply = try await provider.complete(Self.call(model, "q\(index)", timeout: .milliseconds(1)))
            #expect(reply.latency == .zero)
        }
        #expect(clock.sleeps.isEmpty)
    }

    @Test("a prompt plus max_tokens beyond the context window is a context-length error")
    func contextWindow() async throws {
        let provider = SimulatedProvider(clock: ManualProviderClock())
        let model = Self.model(["mode": "instant"], contextWindow: 100)
        let request = ProviderTestSupport.request("hello", extra: ["max_tokens": 200])
        let error = await ProviderTestSupport.providerError {
            try await provider.complete(ProviderCall(request: request, model: model, timeout: .seconds(1)))
        }
        #expect(error?.code == .contextLengthExceeded)
        #expect(error?.providerCode == "context_length_exceeded")
        #expect(error?.decision(remainingBudget: .seconds(5)) == .largerContext)
        #expect(try await provider.complete(Self.call(model)).httpStatus == 200)
    }

    @Test("bad settings name the field and mark the model unhealthy")
    func badSettings() async throws {
        let provider = SimulatedProvider(clock: ManualProviderClock())
        for (settings, field) in [
            (["error_rate": 2] as JSONValue, "error_rate"),
            (["latency_p50_ms": 500, "latency_p95_ms": 100], "latency_p95_ms"),
            (["mode": "turbo"], "mode"),
            (["outages": [["start": "next tuesday"]]], "next tuesday"),
            (["outage_fault": "gremlins"], "gremlins"),
        ] {
            let error = await ProviderTestSupport.providerError {
                try await provider.complete(Self.call(Self.model(settings)))
            }
            #expect(error?.code == .misconfigured)
            #expect(error?.message.contains(field) == true)
            #expect(error?.decision(remainingBudget: .seconds(5)) == .nextCandidateAndMarkUnhealthy)
        }
    }

    @Test("settings changed in the catalog apply to the next call of the same provider, checked again")
    func changedSettings() async throws {
        let clock = ManualProviderClock()
        let provider = SimulatedProvider(clock: clock)
        #expect(try await provider.complete(Self.call(Self.model(["mode": "instant"]))).latency == .zero)
        let broken = await ProviderTestSupport.providerError {
            try await provider.complete(Self.call(Self.model(["mode": "instant", "error_rate": 2])))
        }
        #expect(broken?.code == .misconfigured)
        let slow = Self.model(["latency_p50_ms": 200, "latency_p95_ms": 220, "seed": 7])
        #expect(try await provider.complete(Self.call(slow)).latency > .milliseconds(100))
        #expect(clock.sleeps.count == 1)
        #expect(try await provider.complete(Self.call(Self.model(["mode": "instant"]))).latency == .zero)
    }

    @Test("cancelling the task ends a simulated call at once")
    func cancellation() async throws {
        let factory = ProviderFactory(concurrency: 4, environment: [:])
        let model = Self.model(["latency_p50_ms": 60_000, "latency_p95_ms": 90_000])
        let provider = factory.provider(for: model)
        let task = Task { try await provider.complete(Self.call(model, timeout: .seconds(600))) }
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("a cancelled call returned an answer")
        } catch {
            #expect(error is CancellationError)
        }
    }
}
