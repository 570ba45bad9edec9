import Foundation
import Postgres

/// Decides how a job runs under the background policy: within its price ceiling now, escalated
/// past it (cheapest model first) because its deadline is near, or postponed to the next cheap
/// window.
///
/// Pure: the worker's executor and the off-peak simulation make the same decisions with it.
public struct OffPeakPlanner: Sendable {
    public enum Decision: Sendable {
        /// Run this plan. `escalation` says why the ceiling was set aside, when it was.
        case run(RoutePlan, escalation: String?)
        /// No model may run it at the current price: try again then (without spending an attempt).
        case postpone(until: Date, reason: String)
    }

    public let router: Router
    public let policy: BackgroundPolicy
    private let schedules: [String: PriceSchedule]

    public init(router: Router, policy: BackgroundPolicy, schedules: [String: PriceSchedule]? = nil) {
        self.router = router
        self.policy = policy
        self.schedules = schedules
            ?? Dictionary(router.catalog.models.map { ($0.name, PriceSchedule($0)) }, uniquingKeysWith: { a, _ in a })
    }

    /// The request as the background policy lets it run now: within its rule's price ceiling and
    /// the background tiers. Nil when the policy does not bind it (interactive, a drain, no
    /// ceiling or tiers set).
    public func constrained(_ request: RoutingRequest, rule: RouteRule?, now: Date) -> RoutingRequest? {
        guard request.priority == .background, !policy.isDraining(at: now) else { return nil }
        let ceiling = policy.ceiling(for: rule)
        guard ceiling != nil || policy.tiers != nil else { return nil }
        var constrained = request
        constrained.maxCostPer1K = [request.maxCostPer1K, ceiling].compactMap { $0 }.min()
        constrained.allowedTiers = policy.tiers
        return constrained
    }

    public func decide(
        _ request: RoutingRequest, deadline: Date?, maxAttempts: Int, state: RoutingState, now: Date
    ) -> Decision {
        let unconstrained = router.plan(for: request, state: state, explain: false)
        // Only price (or tier) is the policy's business: if no model can take the job at any
        // price, say so (the executor handles unavailability), rather than waiting for a window.
        guard !unconstrained.attempts.isEmpty, let constrained = constrained(request, rule: unconstrained.rule, now: now)
        else {
            return .run(unconstrained, escalation: nil)
        }
        let ceiling = policy.ceiling(for: unconstrained.rule)
        let plan = router.plan(for: constrained, state: state, explain: false)
        if !plan.attempts.isEmpty { return .run(plan, escalation: nil) }

        // A rule whose primary may take minutes needs them before the deadline: with the 1.5 s
        // default, a job escalated 74 s before its deadline was cut at it, its 180 s call unfinished.
        let horizon = policy.escalationHorizon(maxAttempts: maxAttempts, primaryTimeoutMS: unconstrained.rule?.maxLatencyMS)
        // Both named when both apply: with tiers alone keeping the models out, "within the ceiling"
        // sent a walkthrough to raise a ceiling every model was under.
        let tiers = policy.tiers.map { "the background tiers (\($0.sorted().joined(separator: ", ")))" }
        let limit = [ceiling.map { "the background ceiling of $\($0)/1K" }, tiers].compactMap { $0 }
            .joined(separator: " and ")
        if let deadline, deadline.timeIntervalSince(now) <= horizon.seconds {
            let plan = cheapestFirst(unconstrained, request: request, at: now)
            return .run(
                plan,
                escalation: "deadline \(deadline.readableUTC) is \(Int(deadline.timeIntervalSince(now))) s away, "
                    + "within its escalation horizon of \(Int(horizon.seconds)) s, and no model is within \(limit) now"
                    + (plan.attempts.map(\.model.name) != unconstrained.attempts.map(\.model.name)
                        ? "; its models in the order of their price now, cheapest first" : "")
            )
        }
        // A model within the limit now that could not take the job (breaker open, budget spent)
        // is looked at again in five minutes, not at its next window.
        let schedules = eligibleSchedules(for: request, state: state)
        let availableLater = affordableNow(schedules, ceiling: ceiling, at: now)
        let window = availableLater ? now.addingTimeInterval(300) : nextAffordableWindow(schedules, ceiling: ceiling, after: now)
        let escalationPoint = deadline.map { $0.addingTimeInterval(-horizon.seconds) }
        let until = [window, escalationPoint].compactMap { $0 }.min() ?? now.addingTimeInterval(3600)
        // Said so that its user knows what ends the wait: a time, an escalation, or an operator.
        let escalates = escalationPoint.map { point in
            "; it runs above the ceiling from \(point.readableUTC), \(Int(horizon.seconds)) s before its deadline"
        }
        let reason: String
        if availableLater {
            reason = "the models within \(limit) cannot take it now (breaker open or rate budget spent); "
                + "looking again at \(until.readableUTC)"
        } else if let window {
            let first = escalationPoint.map { $0 < window } ?? false
            reason = "no model is within \(limit) until \(window.readableUTC)" + (first ? escalates ?? "" : "")
        } else {
            let change =
                tiers == nil
                ? "the ceiling is raised" : ceiling == nil ? "the tiers change" : "the ceiling or the tiers change"
            reason = "no model of its rule is within \(limit) at any hour"
                + (escalates
                    ?? "; it waits until \(change) or a drain begins (dispatcher background ceiling"
                    + (tiers == nil ? "" : " … --tiers") + " | drain), looking again hourly")
        }
        return .postpone(until: max(until, now.addingTimeInterval(1)), reason: reason)
    }

    /// The plan with its models in the order of their price now, cheapest first (equal prices keep
    /// the plan's order), for a job escalated past its ceiling: the ceiling is lifted as little as
    /// it can be. A cost walkthrough's escalated jobs all ran on the rule's primary at 4.5 times
    /// the price of the model in the same rule they would have waited for, and in a simulated
    /// month 2% of the background jobs (the escalated) cost 87% of it. Positions, tiers and
    /// timeouts follow the new order (the rule's max_latency_ms stays the first attempt's). A
    /// model the request names stays first: the caller chose it.
    func cheapestFirst(_ plan: RoutePlan, request: RoutingRequest, at now: Date) -> RoutePlan {
        guard plan.attempts.count > 1, Router.requestedModel(in: request.body) == nil else { return plan }
        let priced = plan.attempts.enumerated().map { index, attempt in
            (index: index, attempt: attempt, price: schedules[attempt.model.name]?.averagePricePer1K(at: now))
        }
        let sorted = priced.sorted { left, right in
            switch (left.price, right.price) {
            case (let a?, let b?) where a != b: a < b
            case (.some, nil): true
            case (nil, .some): false
            default: left.index < right.index
            }
        }
        guard sorted.map(\.index) != Array(plan.attempts.indices) else { return plan }
        var reordered = plan
        reordered.attempts = sorted.enumerated().map { position, entry in
            RoutePlan.Attempt(
                model: entry.attempt.model, position: position,
                timeout: position == 0 ? plan.rule?.maxLatencyMS.map { Duration.milliseconds($0) } : nil)
        }
        return reordered
    }

    /// The models the router would give the request at some price, within the policy's tiers, with
    /// their price schedules: those it keeps, and those it drops only for a reason that passes
    /// (a breaker, a budget, a price over the ceiling). Asked of the router itself, not worked out
    /// again here: a review's image job waited on a model in its window that takes no images, and
    /// a job of a rule with a quality floor for the window of a model under it, each told "breaker
    /// open or rate budget spent" and put back every 5 min for the whole window. Planned with its
    /// explanation, which the worker's hot path skips: only for a job about to be postponed.
    private func eligibleSchedules(for request: RoutingRequest, state: RoutingState) -> [PriceSchedule] {
        router.plan(for: request, state: state, explain: true).explanation.candidates.compactMap { candidate in
            guard !candidate.isDroppedForGood, let schedule = schedules[candidate.model],
                policy.tiers.map({ $0.contains(schedule.model.tier) }) ?? true
            else { return nil }
            return schedule
        }
    }

    /// Whether one of `schedules` is within the ceiling at its price now.
    private func affordableNow(_ schedules: [PriceSchedule], ceiling: Decimal?, at now: Date) -> Bool {
        schedules.contains { schedule in ceiling.map { schedule.averagePricePer1K(at: now) <= $0 } ?? true }
    }

    /// When the first of `schedules` is next priced within the ceiling: a price changes only when a
    /// window opens or closes (a discount opens, a surcharge ends), so the first such time at which
    /// one fits.
    private func nextAffordableWindow(_ schedules: [PriceSchedule], ceiling: Decimal?, after now: Date) -> Date? {
        let changes = Set(schedules.flatMap { $0.priceChanges(after: now) }).sorted()
        return changes.first { instant in
            schedules.contains { schedule in ceiling.map { schedule.averagePricePer1K(at: instant) <= $0 } ?? true }
        }
    }
}

extension Date {
    /// `2026-11-28 16:30:00 UTC`: a time in a reason people read (`wait` printed "scheduled until
    /// 2026-11-28 16:30:00 UTC: … until 2026-11-28T16:30:00.000000Z", one time in two forms).
    public var readableUTC: String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: self)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d UTC", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0,
            parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0)
    }
}
