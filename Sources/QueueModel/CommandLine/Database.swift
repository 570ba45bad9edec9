import Foundation
import Postgres
import Synchronization

/// Where a command's database is: `--database-url`, else `DATABASE_URL`.
public enum Database {
    /// The configuration a command should use.
    /// - Throws: `QueueError.invalidInput` when neither is set, saying how to set one.
    /// - Parameter asTenant: whether `--tenant` names the tenant the session acts for (not for a
    ///   bulk submit, whose lines may each name their own).
    public static func configuration(
        _ arguments: Arguments, applicationName: String, asTenant: Bool = true
    ) throws -> PostgresConfiguration {
        guard var configuration = try optionalConfiguration(arguments) else {
            throw QueueError(
                .invalidInput, "no database given",
                hint: "Set DATABASE_URL (e.g. postgres://user@localhost:5432/switchyard) or pass --database-url."
            )
        }
        configuration.applicationName = applicationName
        // A role mapped to `*` (a gateway) sees a tenant's jobs only with switchyard.tenant set:
        // the commands that take --tenant read as that tenant (`submit --tenant acme --wait` said
        // "not found" of the job it had just submitted).
        if asTenant, let tenant = arguments.value("tenant") {
            configuration = configuration.setting("switchyard.tenant", to: tenant)
        }
        return configuration
    }

    /// A pool for a command: it retries a database that is down or restarting for 15 s, and
    /// says so on stderr once (a command against a stopped server sat silent for 15 s, then
    /// failed).
    public static func pool(
        _ arguments: Arguments, applicationName: String, maxConnections: Int, asTenant: Bool = true
    ) throws -> PostgresPool {
        PostgresPool(
            try configuration(arguments, applicationName: applicationName, asTenant: asTenant),
            options: commandOptions(maxConnections: maxConnections))
    }

    /// Pool options for a command (see `pool(_:applicationName:maxConnections:)`).
    public static func commandOptions(maxConnections: Int) -> PostgresPool.Options {
        let options = PostgresPool.Options(maxConnections: maxConnections)
        let said = Mutex(false)
        let seconds = Int(options.connectRetryTimeout.components.seconds)
        var withNotice = options
        withNotice.onConnectRetry = { error in
            guard said.withLock({ done in defer { done = true }; return !done }) else { return }
            // Its first line only: the error that ends the wait says it whole (a walkthrough read
            // libpq's "Is the server running…" twice).
            let first = error.message.split(separator: "\n", maxSplits: 1).first.map(String.init) ?? error.message
            let line = "waiting for the database (retrying for about \(seconds) s; Ctrl-C stops): \(first)\n"
            FileHandle.standardError.write(Data(Secrets.redact(line).utf8))
        }
        return withNotice
    }

    /// The configuration from `--database-url` or `DATABASE_URL`, or nil when neither is set.
    public static func optionalConfiguration(_ arguments: Arguments) throws -> PostgresConfiguration? {
        if let url = arguments.value("database-url") { return try PostgresConfiguration(url) }
        return try PostgresConfiguration.fromEnvironment()
    }
}
