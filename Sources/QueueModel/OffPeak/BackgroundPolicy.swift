import Foundation
import Postgres

/// The rules background work runs by: a price ceiling, allowed tiers, pause and drain, and when a
/// deadline overrides them. Read from `switchyard.settings`; the claim's gate
/// (`switchyard.background_gate`) applies the same rules in SQL.
public struct BackgroundPolicy: Sendable, Hashable {
    /// The global ceiling on the price per 1K tokens (input and output averaged); nil for none.
    public var maxCostPer1K: Decimal?
    /// The price tiers background work may use; nil for any.
    public var tiers: Set<String>?
    public var paused: Bool
    /// Until then, ceilings are ignored.
    public var drainUntil: Date?
    /// A fixed escalation horizon; nil for the default formula.
    public var escalationSeconds: Double?
    /// `switchyard.background_policy_version()` when read from the database: a postponement
    /// names the version it was decided under, and is not kept if the policy has changed since.
    public var version: String?

    public init(
        maxCostPer1K: Decimal? = nil, tiers: Set<String>? = nil, paused: Bool = false, drainUntil: Date? = nil,
        escalationSeconds: Double? = nil
    ) {
        self.maxCostPer1K = maxCostPer1K
        self.tiers = tiers
        self.paused = paused
        self.drainUntil = drainUntil
        self.escalationSeconds = escalationSeconds
    }

    /// The ceiling for jobs of a rule: the rule's `background_max_cost_per_1k` setting, else the
    /// global one.
    public func ceiling(for rule: RouteRule?) -> Decimal? {
        if let setting = rule?.settings[RouteRule.SettingsKey.backgroundMaxCostPer1K],
            let text = setting.doubleValue.map({ String($0) }) ?? setting.stringValue, let value = Self.price(text)
        {
            return value
        }
        return maxCostPer1K
    }

    /// A ceiling's text as a number, when the whole of it is one (as `switchyard.background_gate`
    /// reads it: "0.002", " 2e-3 "); nil otherwise ("0.002abc", "cheap"), and the ceiling is
    /// ignored. `Decimal(string:)` alone reads the number at the start of "0.00005abc".
    public static func price(_ text: String) -> Decimal? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.wholeMatch(of: /[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,4})?/) != nil else { return nil }
        return Decimal(string: trimmed)
    }

    /// A `background_tiers` value as the tier names it lists: "cheap, open_source" names
    /// `cheap` and `open_source` (spaces around a name are not part of it); nil when it lists none.
    public static func tiers(_ text: String) -> Set<String>? {
        let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return names.isEmpty ? nil : Set(names)
    }

    /// Whether ceilings are suspended at an instant (drain).
    public func isDraining(at instant: Date) -> Bool {
        drainUntil.map { $0 > instant } ?? false
    }

    /// How close a deadline must be for a job to run whatever the price: the setting, or every
    /// attempt at every tier's latency target (the primary's: the rule's `max_latency_ms`, else
    /// 1.5 s; then 3 + 10 s) plus retry backoff, plus a minute. The same formula as
    /// `switchyard.escalation_horizon`, which takes the largest `max_latency_ms` of any rule (it
    /// lets jobs through the gate; this decides, per rule, when one runs).
    public func escalationHorizon(maxAttempts: Int, primaryTimeoutMS: Int? = nil) -> Duration {
        if let escalationSeconds { return .milliseconds(Int64(escalationSeconds * 1000)) }
        let attempts = max(maxAttempts, 1)
        var backoff = 0.0
        if attempts > 1 { for k in 1..<attempts { backoff += min(2 * pow(2, Double(k - 1)), 300) } }
        let perAttempt = Double(primaryTimeoutMS ?? 1500) / 1000 + 13
        return .milliseconds(Int64((perAttempt * Double(attempts) + backoff + 60) * 1000))
    }

    // MARK: Settings

    /// Reads the policy from `switchyard.settings`.
    public static func load(_ pool: PostgresPool) async throws -> BackgroundPolicy {
        // The version in the same statement: it is the version of exactly these values.
        let rows = try await pool.query(
            """
            SELECT name, value, switchyard.background_policy_version() AS version
            FROM switchyard.settings WHERE name LIKE 'background\\_%'
            """
        )
        var values: [String: String] = [:]
        for row in rows { values[try row.decode("name")] = try row.decode("value", as: String.self) }
        func text(_ name: String) -> String? { values[name].flatMap { $0.isEmpty ? nil : $0 } }
        var policy = BackgroundPolicy(
            maxCostPer1K: text("background_max_cost_per_1k").flatMap(Self.price),
            tiers: text("background_tiers").flatMap(Self.tiers),
            paused: text("background_paused") == "true",
            drainUntil: text("background_drain_until").flatMap { ISO8601Parsing.date($0) },
            escalationSeconds: text("background_escalation_seconds").flatMap(Double.init)
        )
        policy.version = try rows.first?.decode("version", as: String.self)
        return policy
    }

    /// Sets one of the `background_*` settings (workers follow at once: NOTIFY switchyard_settings).
    public static func set(_ name: String, to value: String, in pool: PostgresPool) async throws {
        let rows = try await pool.query("UPDATE switchyard.settings SET value = $2 WHERE name = $1", [name, value])
        guard rows.affectedRows == 1 else {
            throw QueueError(.notFound, "no setting named \(name)", hint: "Run `dispatcher migrate` to create it.")
        }
    }
}

/// What the claim gate says now.
public struct BackgroundGate: Sendable, Hashable {
    public var isOpen: Bool
    public var reason: String
    public var nextOpenAt: Date?

    /// Asks `switchyard.background_gate` (at an instant, by default now).
    public static func check(_ pool: PostgresPool, at instant: Date? = nil) async throws -> BackgroundGate {
        guard let row = try await pool.query(
            "SELECT is_open, reason, next_open_at FROM switchyard.background_gate(coalesce($1::timestamptz, now()))",
            [instant]
        ).first else {
            throw QueueError(.database, "switchyard.background_gate returned nothing")
        }
        return BackgroundGate(
            isOpen: try row.decode("is_open"), reason: try row.decode("reason"),
            nextOpenAt: try row.decode("next_open_at", as: Date?.self)
        )
    }
}
