import Foundation
import QueueModel
import Testing
@testable import Worker

/// Rate-limit headers, read so routing can lower a model's budget before a 429.
@Suite("Provider rate-limit headers")
struct RateLimitInfoTests {
    static let now = Date(timeIntervalSince1970: 1_750_000_000)

    @Test("OpenAI's x-ratelimit-* headers, with Go-style reset durations")
    func openAIHeaders() throws {
        let info = try #require(
            RateLimitInfo(
                headers: [
                    "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "7",
                    "x-ratelimit-reset-requests": "6m0s", "x-ratelimit-limit-tokens": "30000",
                    "x-ratelimit-remaining-tokens": "1234", "x-ratelimit-reset-tokens": "20ms",
                ], now: Self.now))
        #expect(info.requestLimit == 500)
        #expect(info.remainingRequests == 7)
        #expect(info.requestsReset == .seconds(360))
        #expect(info.tokenLimit == 30000)
        #expect(info.remainingTokens == 1234)
        #expect(info.tokensReset == .milliseconds(20))
        #expect(info.exhaustedUntil == nil)
    }

    @Test("Anthropic's anthropic-ratelimit-* headers, with RFC 3339 reset times")
    func anthropicHeaders() throws {
        let info = try #require(
            RateLimitInfo(
                headers: [
                    "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
                    "anthropic-ratelimit-requests-reset": "2025-06-15T15:06:50Z",
                    "anthropic-ratelimit-input-tokens-remaining": "9000",
                    "anthropic-ratelimit-output-tokens-remaining": "800",
                ], now: Date(timeIntervalSince1970: 1_750_000_000)))  // 2025-06-15T15:06:40Z
        #expect(info.requestLimit == 50)
        #expect(info.remainingRequests == 0)
        #expect(info.requestsReset == .seconds(10))
        #expect(info.remainingTokens == 800)
        #expect(info.exhaustedUntil == .seconds(10))
    }

    @Test("no rate-limit headers → nil; reset durations in every form")
    func durations() {
        #expect(RateLimitInfo(headers: ["content-type": "application/json"], now: Self.now) == nil)
        #expect(RateLimitInfo.parseGoDuration("1h2m3.5s") == .milliseconds(3_723_500))
        #expect(RateLimitInfo.parseGoDuration("150us") == .microseconds(150))
        #expect(RateLimitInfo.parseGoDuration("soon") == nil)
        #expect(RateLimitInfo.parseReset("2.5", now: Self.now) == .milliseconds(2500))
        #expect(
            RateLimitInfo.retryAfter(headers: ["retry-after-ms": "250", "retry-after": "9"], now: Self.now)
                == .milliseconds(250))
        #expect(
            RateLimitInfo.retryAfter(headers: ["retry-after": "Sun, 15 Jun 2025 15:06:45 GMT"], now: Self.now)
                == .seconds(5))
    }

    /// A review's proxy answered `Retry-After: inf` (and a 200 with `x-ratelimit-reset-tokens:
    /// 1e30`): the worker stopped on a Duration overflow, and every worker that claimed the job next.
    @Test("a wait past what a Duration holds is read as a day, never a crash; NaN and negatives as none")
    func hugeWaits() {
        let day = Duration.seconds(86_400)
        for text in ["inf", "1e300", "1e400", "99999999"] {
            #expect(RateLimitInfo.retryAfter(headers: ["retry-after": text], now: Self.now) == day, "\(text)")
            #expect(RateLimitInfo.retryAfter(headers: ["retry-after-ms": text], now: Self.now) != nil, "\(text)")
        }
        #expect(RateLimitInfo.retryAfter(headers: ["retry-after-ms": "1e400"], now: Self.now) == day)
        #expect(RateLimitInfo.retryAfter(headers: ["retry-after": "nan"], now: Self.now) == nil)
        #expect(RateLimitInfo.retryAfter(headers: ["retry-after": "-5"], now: Self.now) == nil)
        #expect(RateLimitInfo.parseGoDuration("99999999999999999999999h") == day)
        #expect(RateLimitInfo.parseReset("1e30", now: Self.now) == day)
        #expect(RateLimitInfo.parseReset("9999-12-31T23:59:59Z", now: Self.now) == day)
        let info = RateLimitInfo(
            headers: ["x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1e30"], now: Self.now)
        #expect(info?.tokensReset == day)
        // A worker pauses the model no longer than longestPause, however long the provider asked.
        var budget = RateBudget(model: ModelSpec(name: "m", provider: .openai), workers: 1, now: Self.now)
        budget.apply(try! #require(info), workers: 1, now: Self.now)
        #expect(budget.pausedUntil == Self.now.addingTimeInterval(RateLimitInfo.longestPause.seconds))
    }
}
