import QueueModel

extension ModelSpec {
    /// Checks the settings this model's adapter reads before a call, so a value of the wrong type
    /// (`"default_max_tokens": "4096"`, `"headers": [...]`) fails the call instead of going out
    /// as the default. Import refuses such values; this catches a catalog stored before it did.
    /// - Throws: `ProviderError.misconfigured` naming the model, the setting and the type it must be.
    func checkSettings() throws {
        guard let problem = ModelSetting.problems(in: settings, provider: provider).first else { return }
        throw ProviderError(
            .misconfigured, "model \(name)'s settings.\(problem.key) \(problem.message)",
            hint: "\(problem.hint) in the catalog, and import it again", model: name)
    }
}
