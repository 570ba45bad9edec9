/// A consistent-hash ring: each member owns many points (virtual nodes) on a 64-bit circle, in
/// proportion to its weight, and a key belongs to the first member clockwise from the key's hash.
///
/// Every position comes from `StableHash` (FNV-1a plus a finalizer), never Swift's per-process
/// `Hasher`, so every worker on every machine maps a key to the same member. Adding or removing
/// one of N members moves only the keys that member gains or loses, about 1/N of them; skipping a
/// member during a walk (because it is unhealthy) moves only that member's keys, each to the next
/// member on the ring.
public struct HashRing: Sendable, Hashable {
    /// Points per unit of weight. 160 (as ketama uses) keeps each member's share of keys within a
    /// few percent of its weight's share.
    public static let pointsPerWeight = 160

    private struct Point: Sendable, Hashable {
        var position: UInt64
        var member: Int
    }

    /// The members, in the order given.
    public let members: [String]
    private let points: [Point]
    /// How many members own at least one point.
    private let placedMembers: Int

    /// A ring of these members; a member's point count is `pointsPerWeight × weight`, rounded,
    /// at least 1 for a positive weight. Members with weight 0 own no keys.
    public init(members: [(name: String, weight: Double)]) {
        self.members = members.map(\.name)
        var points: [Point] = []
        for (index, member) in members.enumerated() where member.weight > 0 {
            let count = max(1, Int((Double(Self.pointsPerWeight) * member.weight).rounded()))
            points.reserveCapacity(points.count + count)
            for replica in 0..<count {
                points.append(Point(position: StableHash.hash("\(member.name)#\(replica)"), member: index))
            }
        }
        // Ties (vanishingly rare) break by name, so the order never depends on the input order.
        let names = self.members
        self.points = points.sorted { ($0.position, names[$0.member]) < ($1.position, names[$1.member]) }
        self.placedMembers = Set(points.map(\.member)).count
    }

    /// Equal-weight members.
    public init(members: [String]) {
        self.init(members: members.map { ($0, 1.0) })
    }

    /// Where a key lands on the circle.
    public static func position(of key: String) -> UInt64 { StableHash.hash(key) }

    /// The member that owns a key, or nil for an empty ring.
    public func owner(of key: String) -> String? {
        walk(from: key).first
    }

    /// The first member, clockwise from the key, that `accept` allows (walking past the others).
    public func owner(of key: String, where accept: (String) -> Bool) -> String? {
        var found: String?
        walk(from: key) { member in
            if accept(member) {
                found = member
                return false
            }
            return true
        }
        return found
    }

    /// Every member with points, in the order a walk clockwise from the key meets them: the
    /// owner first, then where its keys would go if it were skipped, and so on.
    public func walk(from key: String) -> [String] {
        var order: [String] = []
        walk(from: key) { member in
            order.append(member)
            return true
        }
        return order
    }

    /// Calls `visit` with each distinct member clockwise from the key until it returns false.
    private func walk(from key: String, _ visit: (String) -> Bool) {
        guard !points.isEmpty else { return }
        let position = Self.position(of: key)
        // The first point at or after the key's position (wrapping to the start).
        var low = 0
        var high = points.count
        while low < high {
            let middle = (low + high) / 2
            if points[middle].position < position { low = middle + 1 } else { high = middle }
        }
        var seen = [Bool](repeating: false, count: members.count)
        var remaining = placedMembers
        var index = low
        for _ in 0..<points.count where remaining > 0 {
            let member = points[index % points.count].member
            index += 1
            guard !seen[member] else { continue }
            seen[member] = true
            remaining -= 1
            if !visit(members[member]) { return }
        }
    }
}
