import Foundation
import QueueModel
import Testing

@Suite("Claim cursor: positions")
struct ClaimCursorUnitTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func job(_ id: Int64, _ priority: Priority = .interactive, runAt: Date, claimedAt: Date = now) -> Job {
        Job(id: id, priority: priority, request: [:], runAt: runAt, claimedAt: claimedAt)
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

    @Test("holds back to a second before the claim, so submissions still committing are not passed")
    func holdsBack() {
        var cursor = ClaimCursor()
        cursor.advance(past: [Self.job(9, runAt: Self.now.addingTimeInterval(-0.2))])
        #expect(cursor.interactive == .init(runAt: Self.now.addingTimeInterval(-1), id: .min))
    }
}
