import Foundation
import QueueModel

/// The one way to call a provider without verifying its TLS certificate, and everything that
/// stands in its way.
///
/// Certificates are verified by default, always. Skipping verification takes two keys turned by
/// two different people: the catalog entry asks for it (`"settings": {"insecure_skip_tls_verify":
/// true}`), and the operator of each worker confirms it by naming the model in the worker's
/// environment (`SWITCHYARD_INSECURE_TLS_MODELS=local-vllm`, or `*` for every model that asks).
/// Either alone is refused with an error that says what is missing; a worker with the variable
/// set logs a warning at every start. FoundationNetworking on Linux cannot skip verification at
/// all (libcurl's checks are not exposed), so there the confirmed request is refused too: trust
/// the server's CA in the system store instead, which keeps verification on.
public struct InsecureTLS: Sendable {
    /// The worker's environment variable that confirms the catalog's request.
    public static let environmentVariable = "SWITCHYARD_INSECURE_TLS_MODELS"
    /// The key in a model's `settings` that asks for it.
    public static let catalogSetting = "insecure_skip_tls_verify"

    /// The models this worker's operator confirmed; `*` confirms every model that asks.
    public let confirmedModels: Set<String>

    /// Reads the confirmation from the environment.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let names = environment[Self.environmentVariable]?.split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        confirmedModels = Set((names ?? []).filter { !$0.isEmpty })
    }

    /// Whether this platform's HTTP client can skip certificate verification at all.
    public static var isSupported: Bool {
        #if canImport(FoundationNetworking)
            false
        #else
            true
        #endif
    }

    /// The warning a worker logs at start while the variable is set, or nil.
    public var startWarning: String? {
        guard !confirmedModels.isEmpty else { return nil }
        let which =
            confirmedModels.contains("*")
            ? "every model whose catalog entry asks"
            : confirmedModels.sorted()
                .joined(separator: ", ")
        let effect =
            Self.isSupported
            ? "their traffic, API keys included, can be read and changed by anyone on the network path"
            : "this platform cannot skip verification, so calls to those models will be refused"
        return "\(Self.environmentVariable) is set: TLS certificate verification may be skipped for \(which); "
            + effect
    }

    /// Whether a call to `model` at `url` skips certificate verification.
    /// - Returns: false unless the catalog asks, the environment confirms, the URL is https and the
    ///   platform can do it.
    /// - Throws: `ProviderError.misconfigured` when the catalog asks and the worker has not
    ///   confirmed it, or cannot do it: the call is never made, verified or not.
    func skipsVerification(for model: ModelSpec, url: URL) throws -> Bool {
        guard model.settings[Self.catalogSetting]?.boolValue == true, url.scheme?.lowercased() == "https" else {
            return false
        }
        guard confirmedModels.contains(model.name) || confirmedModels.contains("*") else {
            throw ProviderError(
                .misconfigured,
                "model \(model.name) asks to skip TLS certificate verification (settings.\(Self.catalogSetting)), "
                    + "but this worker's operator has not confirmed it",
                hint: "prefer trusting the server's CA (e.g. update-ca-certificates); to skip verification anyway, "
                    + "start the worker with \(Self.environmentVariable)=\(model.name)",
                model: model.name, isThisWorkerOnly: true)
        }
        guard Self.isSupported else {
            throw ProviderError(
                .misconfigured,
                "model \(model.name) asks to skip TLS certificate verification, which FoundationNetworking on this "
                    + "platform cannot do",
                hint: "add the server's CA certificate to the system trust store (/usr/local/share/ca-certificates, "
                    + "then update-ca-certificates) and remove settings.\(Self.catalogSetting)",
                model: model.name, isThisWorkerOnly: true)
        }
        return true
    }
}
