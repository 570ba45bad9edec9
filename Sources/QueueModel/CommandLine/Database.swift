import Postgres

/// Where a command's database is: `--database-url`, else `DATABASE_URL`.
public enum Database {
    /// The configuration a command should use.
    /// - Throws: `QueueError.invalidInput` when neither is set, saying how to set one.
    public static func configuration(
        _ arguments: Arguments, applicationName: String
    ) throws -> PostgresConfiguration {
        guard var configuration = try optionalConfiguration(arguments) else {
            throw QueueError(
                .invalidInput, "no database given",
                hint: "Set DATABASE_URL (e.g. postgres://user@localhost:5432/switchyard) or pass --database-url."
            )
        }
        configuration.applicationName = applicationName
        return configuration
    }

    /// The configuration from `--database-url` or `DATABASE_URL`, or nil when neither is set.
    public static func optionalConfiguration(_ arguments: Arguments) throws -> PostgresConfiguration? {
        if let url = arguments.value("database-url") { return try PostgresConfiguration(url) }
        return try PostgresConfiguration.fromEnvironment()
    }
}
