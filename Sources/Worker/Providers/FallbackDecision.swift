import QueueModel

/// What the fallback executor does after an attempt failed: the taxonomy's second half.
///
/// | failure                                          | decision                              |
/// |--------------------------------------------------|---------------------------------------|
/// | 429 `rate_limit_exceeded`, wait fits the budget  | `retrySameModel(after:)`              |
/// | 429 `rate_limit_exceeded`, no wait or too long   | `nextCandidate`                       |
/// | 5xx, 529, timeout, connection failure            | `nextCandidate`                       |
/// | undecodable 2xx body, unsupported by the API     | `nextCandidate`                       |
/// | 4xx: this model does not take a parameter        | `nextCandidate` (breaker not told)    |
/// | (`unsupported_parameter`, `unsupported_value`)   |                                       |
/// | context-length error                             | `largerContext`                       |
/// | 429 `insufficient_quota`, 404,                   | `nextCandidateAndMarkUnhealthy`       |
/// | unusable catalog entry                           |                                       |
/// | 401, 403                                         | `nextCandidateRefusedHere`            |
/// | the key's variable unset on this worker          | `nextCandidateAndSkipHere`            |
/// | any other 4xx                                    | `failJob`                             |
public enum FallbackDecision: Sendable, Hashable {
    /// Wait this long (the provider's `retry-after`), then call the same model again.
    case retrySameModel(after: Duration)
    /// Try the plan's next candidate.
    case nextCandidate
    /// Try the next candidate whose context window is larger than this model's; fail the job if
    /// there is none.
    case largerContext
    /// Try the next candidate, and mark this model unhealthy fleet-wide: it will keep failing for
    /// every job until someone fixes its key, quota or catalog entry.
    case nextCandidateAndMarkUnhealthy
    /// Try the next candidate, and stop calling this model from this worker only: what is wrong
    /// (the model's key missing from this worker's environment, a TLS opt-in this worker's
    /// operator has not confirmed) is this worker's, so the fleet's breaker is left alone and
    /// other workers keep the model.
    case nextCandidateAndSkipHere
    /// Try the next candidate: the provider refused this worker (a 401 or 403: its key, its
    /// address, its account). It stops calling the model for `breaker_open_seconds`, then tries
    /// again, and tells the fleet, whose breaker opens once every live worker has been refused: one
    /// worker on a stale key took the model out for every worker, whose keys were good.
    case nextCandidateRefusedHere
    /// Stop: the request itself is at fault, and no model would accept it.
    case failJob
}

extension ProviderError {
    /// What to do after this failure.
    ///
    /// Pure: the same error and budget give the same decision. The executor bounds how often it
    /// retries one model; this only says whether the provider's wait fits.
    /// - Parameter remainingBudget: the time left for the job (its deadline, or the plan's
    ///   remaining latency budget); a 429 is retried on the same model only if its wait fits.
    /// - Returns: the decision for the executor to switch on.
    public func decision(remainingBudget: Duration) -> FallbackDecision {
        if isThisWorkerOnly { return .nextCandidateAndSkipHere }
        switch code {
        case .rateLimited:
            guard let retryAfter, retryAfter <= remainingBudget else { return .nextCandidate }
            return .retrySameModel(after: retryAfter)
        case .contextLengthExceeded:
            return .largerContext
        case .unauthorized:
            return .nextCandidateRefusedHere
        case .quotaExhausted, .modelNotFound, .misconfigured:
            return .nextCandidateAndMarkUnhealthy
        case .badRequest:
            return .failJob
        default:
            // serverError, overloaded, timedOut, connectionFailed, invalidResponse,
            // unsupportedRequest, and codes
            // added later: another model may well succeed.
            return .nextCandidate
        }
    }

    /// What to do after any error an adapter threw: `ProviderError`s by the taxonomy, anything
    /// else (an adapter bug) by trying the next candidate.
    ///
    /// `CancellationError` is not a provider failure: check `Task.isCancelled` (the worker is
    /// shutting down) before asking.
    public static func decision(for error: any Error, remainingBudget: Duration) -> FallbackDecision {
        (error as? ProviderError)?.decision(remainingBudget: remainingBudget) ?? .nextCandidate
    }
}
