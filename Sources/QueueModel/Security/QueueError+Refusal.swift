import Postgres

extension QueueError {
    /// Whether the server refused one submission for a reason of its own — invalid input, or a
    /// tenant the caller's role may not submit for — rather than failing as a whole. A bulk
    /// submission reports such a job and goes on with the others.
    public var isSubmissionRefusal: Bool {
        (code == .invalidInput || sqlState == .insufficientPrivilege) && !isRoleRefusal
    }

    /// Whether Postgres itself refused the role (`permission denied for function submit`: no
    /// hint, unlike Switchyard's refusal of a tenant): nothing this role submits can succeed, so
    /// it is the run's error, not a line's, and not bad input.
    public var isRoleRefusal: Bool {
        sqlState == .insufficientPrivilege && hint == nil
    }
}
