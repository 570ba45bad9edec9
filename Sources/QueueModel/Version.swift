/// The version of this build, recorded in worker heartbeats.
public enum SwitchyardVersion {
    public static let current = "0.1.0"
}
