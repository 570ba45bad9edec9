import Foundation

extension Router {
    /// The kept models in the order to try them, and what the strategy did.
    struct Ordering {
        var strategy: RoutingStrategy
        var reason: String
        /// Indices into the evaluations ordered (moving indices, not evaluations, spares copying
        /// and releasing every evaluation's fields at each step).
        var models: [Int]
        /// Extra facts per model (ring notes).
        var notes: [String: [String]] = [:]
        /// For a `hash` rule and a job with a key: the key's home model on the ring.
        var home: String? = nil
    }

    /// Orders the kept models by the rule's strategy. Every strategy breaks ties by the rule's
    /// order (primary first), so the result never depends on sort stability.
    /// - Parameters:
    ///   - kept: indices into `evaluations` of the models that passed the filters.
    func order(
        _ kept: [Int], of evaluations: [Evaluation], rule: RouteRule, ring: HashRing?, request: RoutingRequest,
        scoringClass: TaskClass, state: RoutingState, explain: Bool = true
    ) -> Ordering {
        var strategy = rule.strategy
        var prefix = ""
        if strategy == .hash {
            if let key = request.affinityKey, !key.isEmpty {
                return hashOrdering(kept, of: evaluations, rule: rule, ring: ring, key: key, explain: explain)
            }
            strategy = rule.strategyWithoutAffinity
            prefix = "hash rule, but the job has no affinity key: "
        }
        // Only a weighted or round_robin rule draws by it: hashed there, not for every plan.
        let key = request.affinityKey.flatMap { $0.isEmpty ? nil : $0 }
        func sorted<Key: Comparable>(by key: (Evaluation) -> Key) -> [Int] {
            kept.sorted {
                (key(evaluations[$0]), evaluations[$0].index) < (key(evaluations[$1]), evaluations[$1].index)
            }
        }
        let models: [Int]
        let reason: String
        switch strategy {
        case .ordered, .hash:
            models = kept
            reason = "ordered: primary, then the fallbacks as listed"
        // A job with a key draws by the key, not the sequence: the same key draws the same model
        // (rendezvous hashing; a model that leaves takes only its own keys along). Drawn per job, a
        // walkthrough's conversations on a weighted rule had 191 of 200 split over two or three models.
        case .roundRobin where key != nil, .weighted where key != nil:
            let seed = StableHash.hash(key ?? "")
            let byWeight = strategy == .weighted
            models = sorted { -Self.weightedKey(for: $0, sequence: seed, weighted: byWeight) }
            reason = "\(strategy.rawValue): drawn by the affinity key (the same key draws the same model"
                + (byWeight ? ", in proportion to weight)" : ")")
        case .roundRobin:
            let start = kept.isEmpty ? 0 : Int(state.sequence % UInt64(kept.count))
            models = Array(kept[start...] + kept[..<start])
            reason = "round_robin: sequence \(state.sequence) starts at model \(start + 1) of \(kept.count)"
        case .weighted:
            models = sorted { -Self.weightedKey(for: $0, sequence: state.sequence) }
            reason = "weighted: a draw by weight seeded with sequence \(state.sequence)"
        case .leastBusy:
            models = sorted { $0.inFlight }
            reason = "least_busy: fewest requests in flight first"
        case .lowestLatency:
            // Unmeasured models go first, so they get measured (as LiteLLM's latency routing does);
            // one called but never answered (only fast failures) goes last.
            models = sorted { $0.latencyEWMAMS ?? ($0.hasCalls ? .infinity : -1) }
            reason = "lowest_latency: lowest latency EWMA first (unmeasured models first, to measure them)"
        case .cheapest:
            models = sorted { $0.priceValue }
            reason = "cheapest: lowest average price per 1K first, among models meeting the quality floor"
        case .bestQuality:
            models = sorted { -($0.score ?? -1) }
            reason = "best_quality: highest \(scoringClass.capabilityNames.joined(separator: " or ")) score first"
        }
        return Ordering(strategy: strategy, reason: prefix + reason, models: models)
    }

    /// An Efraimidis–Spirakis key: sorting by it descending is a weighted draw without
    /// replacement, and each model's key depends only on its name and the sequence (`weighted`
    /// false: every model of positive weight weighs the same).
    static func weightedKey(for evaluation: Evaluation, sequence: UInt64, weighted: Bool = true) -> Double {
        let weight = weighted ? evaluation.entry?.spec.weight ?? 0 : 1
        guard weight > 0 else { return -.infinity }
        let bits = StableHash.mix((sequence &* 0x9E37_79B9_7F4A_7C15) ^ StableHash.hash(evaluation.name))
        let unit = (Double(bits >> 11) + 0.5) / 9_007_199_254_740_992  // in (0, 1)
        return log(unit) / weight
    }

    /// Consistent hashing with bounded load.
    ///
    /// The key's owner is the first model clockwise from the key on the rule's ring. Models that
    /// were dropped (unhealthy, too small, over budget) are walked past, so only their keys move,
    /// each to the next model on the ring. A model already at its bounded load — in flight ≥
    /// ⌈(1 + ε) × (total in flight + 1) × its share of the weight⌉ — is walked past too, so a hot
    /// key spills to the next model instead of piling up (Mirrokni et al., "Consistent Hashing
    /// with Bounded Loads"); it stays in the plan as a later fallback.
    private func hashOrdering(
        _ kept: [Int], of evaluations: [Evaluation], rule: RouteRule, ring: HashRing?, key: String, explain: Bool
    ) -> Ordering {
        let ring = ring ?? HashRing(members: [String]())
        // Which kept model each ring member is (by the member indices computed with the ring, so
        // no name is hashed or compared here); -1 for none.
        var keptByMember = [Int](repeating: -1, count: ring.members.count)
        for chosen in kept {
            if let member = evaluations[chosen].ringMember { keptByMember[member] = chosen }
        }
        let walk = ring.memberWalk(from: key)
        let isHomeKept = walk.first.map { keptByMember[$0] >= 0 } ?? false
        var onRing: [Int] = []
        onRing.reserveCapacity(kept.count)
        for member in walk where keptByMember[member] >= 0 { onRing.append(keptByMember[member]) }
        let epsilon = rule.loadEpsilon
        let totalInFlight = onRing.reduce(0) { $0 + evaluations[$1].inFlight }
        let totalWeight = onRing.reduce(0.0) { $0 + (evaluations[$1].entry?.spec.weight ?? 0) }
        var notes: [String: [String]] = [:]
        var within: [Int] = []
        var over: [Int] = []
        within.reserveCapacity(onRing.count)
        for chosen in onRing {
            let inFlight = evaluations[chosen].inFlight
            let share = (evaluations[chosen].entry?.spec.weight ?? 0) / max(totalWeight, .leastNormalMagnitude)
            let capacity = Int(((1 + epsilon) * Double(totalInFlight + 1) * share).rounded(.up))
            if inFlight < capacity {
                within.append(chosen)
            } else {
                over.append(chosen)
                guard explain else { continue }
                notes[evaluations[chosen].name, default: []].append(
                    "over bounded load (\(inFlight) in flight ≥ cap \(capacity)): "
                        + "spilled to the next on the ring"
                )
            }
        }
        let offRing = kept.filter { !onRing.contains($0) }
        let home = walk.first.map { ring.members[$0] }
        guard explain else {
            return Ordering(strategy: .hash, reason: "hash", models: within + over + offRing, home: home)
        }
        for chosen in offRing {
            notes[evaluations[chosen].name, default: []].append("not on the ring (weight 0 or disabled)")
        }
        var reason = "hash on affinity key \"\(key)\" (ring position \(StableHash.hex(key)), ε = \(epsilon))"
        if let home {
            reason += isHomeKept ? "; home model \(home)" : "; its home model \(home) was dropped, walked on"
            notes[home, default: []].append("home of this key on the ring")
        }
        return Ordering(strategy: .hash, reason: reason, models: within + over + offRing, notes: notes, home: home)
    }
}
