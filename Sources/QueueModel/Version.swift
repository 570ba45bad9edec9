/// The version of this build, recorded in worker heartbeats and printed by `--version`: the
/// release, and the schema version its migrations reach, so that the workers of two builds side
/// by side (a rolling upgrade) tell apart in `dispatcher status`.
public enum SwitchyardVersion {
    public static let current = "0.1.0+schema.\(Migration.all.map(\.version).max() ?? 0)"
}
