import Foundation

/// How a rule picks among its models.
public enum RoutingStrategy: String, Sendable, Hashable, Codable, CaseIterable {
    /// Primary first, then the fallbacks in the order given (the default).
    case ordered
    case roundRobin = "round_robin"
    case weighted
    /// Fewest requests in flight.
    case leastBusy = "least_busy"
    /// Lowest recent latency (EWMA).
    case lowestLatency = "lowest_latency"
    /// Cheapest model that meets the quality floor.
    case cheapest
    /// Highest capability score for the task class.
    case bestQuality = "best_quality"
    /// Consistent hashing on the job's affinity key (other jobs use `ordered`).
    case hash
}

/// A position in a job's plan; each has a latency target that bounds one attempt.
public enum Tier: String, Sendable, Hashable, Codable, CaseIterable {
    case primary, secondary, tertiary

    /// Default per-attempt latency targets: primary 1.5 s, secondary 3 s, tertiary 10 s.
    public var defaultLatencyTarget: Duration {
        switch self {
        case .primary: .milliseconds(1500)
        case .secondary: .seconds(3)
        case .tertiary: .seconds(10)
        }
    }

    /// The tier of the attempt at a position in a plan (0 = primary; 2 and later = tertiary).
    public static func at(position: Int) -> Tier {
        switch position {
        case 0: .primary
        case 1: .secondary
        default: .tertiary
        }
    }
}

/// The routing rule for one task class (`switchyard.routes`).
public struct RouteRule: Sendable, Hashable, Codable {
    public var taskClass: String
    public var primary: String
    /// Ordered fallbacks, tried after the primary.
    public var fallbacks: [String]
    public var strategy: RoutingStrategy
    /// The most a request may cost per 1K tokens (input and output averaged); nil for no limit.
    public var maxCostPer1K: Decimal?
    /// Overrides the primary tier's latency target for this class.
    public var maxLatencyMS: Int?
    /// The lowest capability score (0–100) a model needs for this class.
    public var qualityFloor: Int?
    /// Anything else the rule carries (kept as given).
    public var settings: JSONValue

    public init(
        taskClass: String, primary: String, fallbacks: [String] = [], strategy: RoutingStrategy = .ordered,
        maxCostPer1K: Decimal? = nil, maxLatencyMS: Int? = nil, qualityFloor: Int? = nil, settings: JSONValue = [:]
    ) {
        self.taskClass = taskClass
        self.primary = primary
        self.fallbacks = fallbacks
        self.strategy = strategy
        self.maxCostPer1K = maxCostPer1K
        self.maxLatencyMS = maxLatencyMS
        self.qualityFloor = qualityFloor
        self.settings = settings
    }

    /// Every model the rule names, primary first.
    public var models: [String] { [primary] + fallbacks }
}
