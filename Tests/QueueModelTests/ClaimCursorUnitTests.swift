import Foundation
import QueueModel
import Testing

@Suite("Claim cursor: positions")
struct ClaimCursorUnitTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func job(
        _ id: Int64, _ priority: Priority = .interactive, tenant: String? = nil, runAt: Date, claimedAt: Date = now
    ) -> Job {
        Job(id: id, priority: priority, tenant: tenant, request: [:], runAt: runAt, claimedAt: claimedAt)
    }

    @Test("moves to the last job claimed in each partition, never back")
    func advances() {
        var cursor = ClaimCursor()
        let old = Self.now.addingTimeInterval(-60)
        cursor.advance(past: [Self.job(3, runAt: old), Self.job(7, runAt: old), Self.job(5, .background, runAt: old)])
        #expect(cursor.interactive == .init(runAt: old, id: 7))
        #expect(cursor.background == .init(runAt: old, id: 5))
        cursor.advance(past: [Self.job(2, runAt: old)])
        #expect(cursor.interactive == .init(runAt: old, id: 7))
        cursor.reset()
        #expect(cursor == ClaimCursor())
    }

    @Test("a partition's jobs of several tenants do not move it: each tenant's share stands anywhere in the queue")
    func sharedClaims() {
        var cursor = ClaimCursor()
        let old = Self.now.addingTimeInterval(-60)
        cursor.advance(past: [
            Self.job(3, tenant: "acme", runAt: old), Self.job(9_000, tenant: "globex", runAt: old),
            Self.job(5, .background, tenant: "acme", runAt: old), Self.job(6, .background, tenant: "acme", runAt: old),
        ])
        #expect(cursor.interactive == nil)
        #expect(cursor.background == .init(runAt: old, id: 6))
        // A tenant's jobs and an operator's (no tenant) are two.
        cursor.advance(past: [
            Self.job(7, .background, tenant: "acme", runAt: old), Self.job(8, .background, runAt: old),
        ])
        #expect(cursor.background == .init(runAt: old, id: 6))
    }

    @Test("a capped tenant's jobs do not move it; the claim's others do, as they would alone")
    func cappedTenants() {
        var cursor = ClaimCursor()
        let old = Self.now.addingTimeInterval(-60)
        var capped = Self.job(9_000, tenant: "acme", runAt: old)
        capped.tenantCapped = true
        cursor.advance(past: [capped])
        #expect(cursor.interactive == nil)
        cursor.advance(past: [capped, Self.job(4, runAt: old), Self.job(5, runAt: old)])
        #expect(cursor.interactive == .init(runAt: old, id: 5))
    }

    @Test("holds back to a second before the claim, so submissions still committing are not passed")
    func holdsBack() {
        var cursor = ClaimCursor()
        cursor.advance(past: [Self.job(9, runAt: Self.now.addingTimeInterval(-0.2))])
        #expect(cursor.interactive == .init(runAt: Self.now.addingTimeInterval(-1), id: .min))
    }
}
