import Foundation
import Postgres
import QueueModel
import Testing

@testable import Worker

/// A job's stored cost when the provider's prompt cache served or stored part of its prompt: a
/// real Postgres, a routing worker and the fake provider answering with cache counts.
@Suite("Cached prompt tokens priced end to end")
struct CachedTokenCostTests {
    /// `gpt` (OpenAI, primary; cache reads at 0.5×, writes not priced) falls back to `claude`
    /// (Anthropic; reads at 0.1×, writes at 1.25×), which is sold at half price for input and a
    /// quarter for output all day.
    static func catalog(_ server: FakeProviderServer) -> String {
        """
        {
          "models": {
            "gpt":    {"provider": "openai", "base_url": "\(server.openAIBaseURL)", "api_key_env": "FAKE_KEY",
                       "price_per_1k_input": 0.0025, "price_per_1k_output": 0.01, "price_per_1k_cached_input": 0.00125},
            "claude": {"provider": "anthropic", "base_url": "\(server.anthropicBaseURL)", "api_key_env": "FAKE_KEY",
                       "upstream_model": "claude-test", "price_per_1k_input": 0.003, "price_per_1k_output": 0.015,
                       "price_per_1k_cached_input": 0.0003, "price_per_1k_cache_write": 0.00375,
                       "price_windows": [{"start": "00:00", "end": "24:00", "input_multiplier": 0.5,
                                          "output_multiplier": 0.25}]}
          },
          "routing_rules": {"chat": {"primary": "gpt", "fallback": "claude"}}
        }
        """
    }

    struct Stored {
        var model: String
        var tokensIn: Int
        var cost: Decimal
        var baseCost: Decimal
        var primaryCost: Decimal
        var trail: [JSONValue]
    }

    static func stored(_ job: Int64, in pool: PostgresPool) async throws -> Stored {
        let row = try #require(
            try await pool.query(
                """
                SELECT model, tokens_in, cost, base_cost, primary_cost, attempts::text AS attempts
                FROM switchyard.results WHERE job_id = $1
                """, [job]
            ).first)
        return Stored(
            model: try row.decode("model"), tokensIn: try row.decode("tokens_in"), cost: try row.decode("cost"),
            baseCost: try row.decode("base_cost"), primaryCost: try row.decode("primary_cost"),
            trail: try JSONValue(parsing: try row.decode("attempts", as: String.self)).arrayValue ?? [])
    }

    /// Runs a `chat` job to its end; returns its id.
    static func run(_ store: QueueStore) async throws -> Int64 {
        let result = try await FallbackExecutionTests.submitAndWait(store, FallbackExecutionTests.chat())
        #expect(result["status"] == "succeeded", "\(result)")
        return Int64(try #require(result["job_id"]?.intValue))
    }

    @Test("cost, base cost and primary cost charge cache reads and writes at the models' cache prices")
    func storedCosts() async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog(server).utf8))
                try await server.script([
                    // The first call answers with 1,536 of 2,000 prompt tokens from the cache; later ones fail.
                    "gpt": [
                        [
                            "usage": [
                                "prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100,
                                "prompt_tokens_details": ["cached_tokens": 1536],
                            ]
                        ],
                        ["kind": "server_error"],
                    ],
                    "claude-test": [
                        "usage": [
                            "input_tokens": 100, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 50,
                            "output_tokens": 30,
                        ]
                    ],
                ])
                let store = QueueStore(pool: pool)
                let environment = ["FAKE_KEY": "sk-c4Vn8Qz2Lw7Xm5Tr9Kp3"]
                try await FallbackExecutionTests.withRoutingWorker(on: pool, environment: environment) {
                    // One after the other: the first takes gpt's first answer, the second its 500.
                    let openAI = try await Self.run(store)
                    let anthropic = try await Self.run(store)

                    // 464 × $0.0025 + 1,536 × $0.00125 + 100 × $0.01, per 1K (2,000 × $0.0025 + … was $0.006).
                    let gpt = try await Self.stored(openAI, in: pool)
                    #expect(gpt.model == "gpt" && gpt.tokensIn == 2000)
                    #expect(gpt.cost == Decimal(string: "0.00408"))
                    #expect(gpt.baseCost == gpt.cost && gpt.primaryCost == gpt.cost)
                    #expect(gpt.trail.last?["cached_tokens"] == 1536)
                    #expect(gpt.trail.last?["cache_write_tokens"] == nil)

                    let claude = try await Self.stored(anthropic, in: pool)
                    #expect(claude.model == "claude" && claude.tokensIn == 160)
                    // List: 100 × $0.003 + 50 × $0.0003 + 10 × $0.00375 + 30 × $0.015, per 1K.
                    #expect(claude.baseCost == Decimal(string: "0.0008025"))
                    // In the window: the input part (all three prices) × 0.5, the output × 0.25.
                    #expect(claude.cost == Decimal(string: "0.00028875"))
                    // The same split on gpt at its prices (writes at its input price: it has no write price):
                    // 100 × $0.0025 + 50 × $0.00125 + 10 × $0.0025 + 30 × $0.01, per 1K.
                    #expect(claude.primaryCost == Decimal(string: "0.0006375"))
                    #expect(claude.trail.map { $0["model"] } == ["gpt", "claude"])
                    #expect(claude.trail.first?["cached_tokens"] == nil)
                    #expect(claude.trail.last?["cached_tokens"] == 50)
                    #expect(claude.trail.last?["cache_write_tokens"] == 10)
                }
            }
        }
    }
    @Test("an answer without usage is priced on an estimate, not stored as free, and its trail says so")
    func missingUsage() async throws {
        try await withFakeProviderServer { server in
            try await TestDatabase.withMigratedPool { pool in
                _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog(server).utf8))
                // Some OpenAI-compatible servers leave usage out (or send null).
                try await server.script(["gpt": ["usage": nil, "content": "The capital of Norway is Oslo."]])
                let store = QueueStore(pool: pool)
                try await FallbackExecutionTests.withRoutingWorker(on: pool, environment: ["FAKE_KEY": "sk-u7Kp2Zq9Lw4Xn6Vr3Tm8"]) {
                    let job = try await Self.run(store)
                    let stored = try await Self.stored(job, in: pool)
                    let prompt = PromptEstimate(request: FallbackExecutionTests.chat().request).promptTokens
                    let completion = PromptEstimate.tokens(in: "The capital of Norway is Oslo.")
                    #expect(stored.model == "gpt" && stored.tokensIn == prompt && prompt > 0)
                    // At gpt's prices: 0.0025 in, 0.01 out, per 1K (it was stored as $0).
                    let expected = (Decimal(prompt) * Decimal(string: "0.0025")! + Decimal(completion) * Decimal(string: "0.01")!) / 1000
                    #expect(stored.cost == expected, "\(stored.cost) vs \(expected)")
                    #expect(stored.trail.last?["usage_estimated"] == true)

                    // Counts written as strings are no counts: estimated too (they were read as 0).
                    try await server.script(["gpt": ["usage": ["prompt_tokens": "5", "completion_tokens": "7"], "content": "Oslo."]])
                    let strings = try await Self.stored(try await Self.run(store), in: pool)
                    #expect(strings.tokensIn == prompt && strings.trail.last?["usage_estimated"] == true)

                    // Negative counts (read as 0: a free call) and one count alone (the other priced
                    // as 0) are no report of the call either.
                    for usage: JSONValue in [["prompt_tokens": -5, "completion_tokens": -7], ["prompt_tokens": 5]] {
                        try await server.script(["gpt": ["usage": usage, "content": "Oslo."]])
                        let odd = try await Self.stored(try await Self.run(store), in: pool)
                        #expect(odd.tokensIn == prompt && odd.trail.last?["usage_estimated"] == true, "\(usage)")
                        #expect((odd.cost ?? 0) > 0, "\(usage)")
                    }

                    // A reported usage is taken as it is, and the trail says nothing of estimates.
                    try await server.script(["gpt": ["usage": ["prompt_tokens": 7, "completion_tokens": 0]]])
                    let reported = try await Self.stored(try await Self.run(store), in: pool)
                    #expect(reported.tokensIn == 7 && reported.cost == Decimal(string: "0.0000175"))
                    #expect(reported.trail.last?["usage_estimated"] == nil)
                }
            }
        }
    }
}
