import Foundation
import QueueModel

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// What the HTTP adapters share: the endpoint URL from the catalog's base URL, the API key from
/// the environment, and the POST request around a JSON body.
enum ProviderEndpoint {
    /// `{base}{path}`, with the base's trailing slashes removed and a duplicated version segment
    /// avoided (a base of `https://api.anthropic.com/v1` and a path of `/v1/messages` give
    /// `https://api.anthropic.com/v1/messages`).
    /// - Throws: `ProviderError.misconfigured` when the result is not an http(s) URL.
    static func url(for model: ModelSpec, defaultBase: String, path: String) throws -> URL {
        var base = (model.baseURL?.isEmpty == false ? model.baseURL! : defaultBase)
        while base.hasSuffix("/") { base.removeLast() }
        var path = path
        if base.hasSuffix("/v1"), path.hasPrefix("/v1/") { path.removeFirst(3) }
        guard let url = URL(string: base + path), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https", url.host != nil
        else {
            throw ProviderError(
                .misconfigured, "the base URL \"\(base)\" of model \(model.name) is not an http(s) URL",
                hint: "fix base_url in the catalog (e.g. https://api.openai.com/v1) and import it again",
                model: model.name)
        }
        return url
    }

    /// The model's API key, read from the environment variable its catalog entry names, and
    /// registered with `Secrets` so no log line can show it; nil when the entry names none (local
    /// servers such as vLLM or Ollama need no key).
    /// - Throws: `ProviderError.missingAPIKey` naming the variable (never a value) when it is
    ///   unset or empty.
    static func apiKey(for model: ModelSpec, environment: [String: String]) throws -> String? {
        guard let variable = model.apiKeyEnv, !variable.isEmpty else { return nil }
        if let refusal = KeyVariables(environment: environment).refusal(of: variable) {
            throw ProviderError(
                .missingAPIKey, "model \(model.name)'s api_key_env is not read: \(refusal)",
                hint: KeyVariables.hint(for: variable),
                model: model.name)
        }
        guard let key = environment[variable]?.trimmingCharacters(in: .whitespacesAndNewlines), !key.isEmpty else {
            throw ProviderError(
                .missingAPIKey,
                "the environment variable \(variable), named by model \(model.name)'s api_key_env, is "
                    + missing(variable, in: environment) + " in this worker's environment",
                hint:
                    "set \(variable) in the worker's environment and restart it, or change api_key_env in the catalog",
                model: model.name)
        }
        Secrets.register(key)
        return key
    }

    /// A JSON POST with the given headers, plus any static (non-secret) headers from the model's
    /// `settings.headers` object, e.g. OpenRouter's `HTTP-Referer`.
    static func post(_ url: URL, body: JSONValue, headers: [String: String], model: ModelSpec) -> URLRequest {
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        // Who calls, for the provider's logs (it said "worker (unknown version) curl/7.88.1");
        // a model's `headers` may set another.
        request.setValue("switchyard-worker/\(SwitchyardVersion.current)", forHTTPHeaderField: "User-Agent")
        for (name, value) in model.settings["headers"]?.objectValue ?? [:] {
            guard let value = value.stringValue else { continue }
            // Import refuses these now; one stored before is still sent, and hidden as a key is.
            if ModelSetting.carriesCredentials(header: name) { Secrets.register(value) }
            request.setValue(value, forHTTPHeaderField: name)
        }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.httpBody = Data(body.jsonText.utf8)
        return request
    }

    /// The request body as an object.
    /// - Throws: `ProviderError.badRequest` when the job's request is not a JSON object.
    static func requestObject(_ call: ProviderCall) throws -> [String: JSONValue] {
        guard let object = call.request.objectValue else {
            throw ProviderError(
                .badRequest, "the request is \(call.request.typeName), not a chat-completions object",
                hint: "submit an object such as {\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                model: call.model.name)
        }
        return object
    }

    /// A provider's body as JSON, its decoded strings redacted (the raw text hides a key whose
    /// characters are escaped); a UTF-8 byte order mark before it is skipped, as RFC 8259 lets a
    /// parser do (some servers send one).
    /// - Throws: why it is not JSON this worker can read, and where: "not valid JSON: an
    ///   unpaired surrogate at byte 20" (a number past ±1.8e308, nesting past 512 levels, …).
    static func decodedBody(_ body: Data) throws -> JSONValue {
        Secrets.redact(try JSONValue(parsing: withoutByteOrderMark(body)))
    }

    /// The body without a UTF-8 byte order mark at its start.
    static func withoutByteOrderMark(_ body: Data) -> Data {
        body.starts(with: [0xEF, 0xBB, 0xBF]) ? Data(body.dropFirst(3)) : body
    }

    /// A 2xx body that carries an error instead of an answer (some proxies, e.g. OpenRouter, do
    /// this): the status to classify it as (its numeric code; else 429 for a quota or rate limit,
    /// 400 for a context too long, 502 for the rest), or nil when the body is not such an error.
    static func embeddedErrorStatus(_ body: JSONValue) -> Int? {
        guard body["choices"] == nil, body["content"] == nil, let error = body["error"], !error.isNull else {
            return nil
        }
        if let code = error["code"]?.intValue, (400...599).contains(code) { return code }
        // A code in words ("context_length_exceeded") says what kind of failure it is, as the
        // same words in a 4xx body would: a context too small is not the provider's outage.
        let text = ["code", "type", "message"].compactMap { error[$0]?.stringValue }.joined(separator: " ").lowercased()
        if ProviderError.isQuota(text) || text.contains("rate_limit") || text.contains("rate limit") { return 429 }
        if ProviderError.isContextLength(text) { return 400 }
        return 502
    }

    /// How a key variable that gives no key is missing: "not set", or "set but blank".
    static func missing(_ variable: String, in environment: [String: String]) -> String {
        environment[variable] == nil ? "not set" : "set but blank"
    }
}
