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
    /// Each member's point indices into `points`, ascending (empty for weight 0): where a walk
    /// first meets a member is found by a binary search of its own points.
    private let pointsByMember: [[Int]]

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
        var pointsByMember = [[Int]](repeating: [], count: members.count)
        for (index, point) in self.points.enumerated() { pointsByMember[point.member].append(index) }
        self.pointsByMember = pointsByMember
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

    /// Every member with points, in the order a walk clockwise from the key meets them: the
    /// owner first, then where its keys would go if it were skipped, and so on.
    public func walk(from key: String) -> [String] {
        memberWalk(from: key).map { members[$0] }
    }

    /// `walk(from:)` as indices into `members`.
    ///
    /// A walk meets each member first at that member's first point at or after the key's (wrapping
    /// past the end), so ordering the members by how far on that point lies gives the walk without
    /// stepping over the points of members already met: a walk is a binary search per member, not
    /// a scan of the circle (which for the last of a dozen members meets most of its points).
    func memberWalk(from key: String) -> [Int] {
        guard !points.isEmpty else { return [] }
        let position = Self.position(of: key)
        // The first point at or after the key's position (wrapping to the start).
        let start = Self.firstIndex(in: points.indices) { points[$0].position >= position }
        var met: [(distance: Int, member: Int)] = []
        met.reserveCapacity(members.count)
        for (member, indices) in pointsByMember.enumerated() where !indices.isEmpty {
            let next = Self.firstIndex(in: indices.indices) { indices[$0] >= start }
            let distance = next < indices.count ? indices[next] - start : indices[0] + points.count - start
            met.append((distance, member))
        }
        // Distances are distinct: each is a different point's.
        met.sort { $0.distance < $1.distance }
        return met.map(\.member)
    }

    /// The first index in `range` for which `isAtOrAfter` holds (it must hold for every index after
    /// that one too), or `range.upperBound` when none does.
    private static func firstIndex(in range: Range<Int>, where isAtOrAfter: (Int) -> Bool) -> Int {
        var low = range.lowerBound
        var high = range.upperBound
        while low < high {
            let middle = (low + high) / 2
            if isAtOrAfter(middle) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
