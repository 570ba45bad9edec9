import Foundation

/// Which environment variables a catalog may name as a model's API key (`api_key_env`).
///
/// The catalog names a variable and a `base_url`, and a worker sends that variable's value to
/// that address: a security review's admin named `DATABASE_URL` and `AWS_SECRET_ACCESS_KEY` with
/// its own server as `base_url`, and the workers sent it their database password and the cloud
/// key. The worker's connection to Postgres is never a provider's key, so no catalog may name it
/// (`refusal(of:)`: the import refuses it, `sql/0085` the table, and workers read none). Beyond
/// it, a worker's operator may list the only variables its catalog may use
/// (`SWITCHYARD_KEY_VARIABLES=OPENAI_API_KEY,ANTHROPIC_API_KEY`): a model naming another is
/// skipped on that worker, as one whose key is missing.
public struct KeyVariables: Sendable {
    /// The worker's environment variable that lists the variables its catalog may name.
    public static let environmentVariable = "SWITCHYARD_KEY_VARIABLES"

    /// The variables this worker's operator allows; nil for any (but the worker's connection's).
    public let allowed: Set<String>?
    /// Entries of the list that are no variable's name (`OPENAI_API_KEY ANTHROPIC_API_KEY`, names
    /// apart with spaces): an operator's walkthrough's were taken without a word, and each model
    /// was skipped as not allowed.
    public let malformed: [String]

    /// Reads the list from the environment; set but empty, it allows no variable.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let names = environment[Self.environmentVariable]?.split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        allowed = names.map(Set.init)
        malformed = (names ?? []).filter { name in
            name.first.map { $0 == "_" || ($0.isASCII && $0.isLetter) } != true
                || !name.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
        }
    }

    /// Why no catalog may name `variable` as a key, or nil: the worker's connection to Postgres
    /// (`DATABASE_URL`, and libpq's variables: `PGPASSWORD`, `PGHOST`, …, capitals after `PG`).
    public static func refusal(of variable: String) -> String? {
        if variable == "DATABASE_URL"
            || (variable.hasPrefix("PG") && variable.count > 2 && variable.allSatisfy { $0.isASCII && $0.isUppercase })
        {
            return "\(variable) is the worker's connection to Postgres, not a provider's key: a model would send it "
                + "to its base_url"
        }
        return nil
    }

    /// What to do about a refused variable: name another in the catalog, or (when only this
    /// worker's list leaves it out) list it.
    public static func hint(for variable: String) -> String {
        refusal(of: variable) != nil
            ? "name the variable that holds the provider's key in the model's api_key_env (dispatcher models import)"
            : "name the provider's key variable in api_key_env, or add \(variable) to \(environmentVariable) on this worker"
    }

    /// Why this worker does not send `variable`'s value to a model's provider, or nil.
    public func refusal(of variable: String) -> String? {
        if let refusal = Self.refusal(of: variable) { return refusal }
        if let allowed, !allowed.contains(variable) {
            return "\(variable) is not among the variables this worker's \(Self.environmentVariable) allows"
        }
        return nil
    }
}
