import CLibPQ
import Foundation

/// The libpq calls every connection, listener and pipeline shares. All of them block; callers run
/// them on a connection's own thread.
enum LibPQ {
    /// Opens a `PGconn`, with UTC timestamps in ISO style and NOTICEs routed to `noticeSink`.
    static func connect(_ configuration: PostgresConfiguration, noticeSink: NoticeSink?) throws -> OpaquePointer {
        // Later keywords win, and the connection string comes last, so whatever it says overrides
        // these defaults ("expand_dbname" lets it be a URL or a key=value string).
        var keywords = [
            "application_name", "connect_timeout", "client_encoding", "keepalives", "keepalives_idle",
            "keepalives_interval", "keepalives_count",
        ]
        var values = [
            configuration.applicationName, String(configuration.connectTimeoutSeconds), "UTF8", "1", "10", "5", "3",
        ]
        if let timeout = configuration.tcpUserTimeoutMilliseconds {
            keywords.append("tcp_user_timeout")
            values.append(String(timeout))
        }
        keywords.append("dbname")
        values.append(configuration.connectionString)
        if let database = configuration.databaseOverride {
            keywords.append("dbname")
            values.append(database)
        }
        if let options = configuration.optionsWithSettings {
            keywords.append("options")
            values.append(options)
        }
        let handle = withCStringArray(keywords) { keywordPointers in
            withCStringArray(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let handle else {
            throw PostgresError(.connectionFailed, "could not allocate a libpq connection (out of memory)")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let reason = configuration.scrub(errorMessage(handle))
            PQfinish(handle)
            throw PostgresError(
                .connectionFailed, "could not connect to \(configuration.target): \(reason)",
                hint: connectionHint(reason)
            )
        }
        if let noticeSink {
            PQsetNoticeReceiver(handle, noticeReceiver, Unmanaged.passUnretained(noticeSink).toOpaque())
        }
        // Decoding relies on ISO dates in UTC; a server or role may default to something else.
        let timeZone = PQparameterStatus(handle, "TimeZone").map { String(cString: $0) }
        let dateStyle = PQparameterStatus(handle, "DateStyle").map { String(cString: $0) } ?? ""
        if timeZone != "UTC" || !dateStyle.hasPrefix("ISO") {
            let result = PQexec(handle, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
            defer { PQclear(result) }
            guard PQresultStatus(result) == PGRES_COMMAND_OK else {
                let reason = errorMessage(handle)
                PQfinish(handle)
                throw PostgresError(.connectionFailed, "could not set the session time zone: \(reason)")
            }
        }
        return handle
    }

    private static func connectionHint(_ reason: String) -> String {
        if reason.contains("password authentication failed") || reason.contains("no password supplied") {
            return "Check the user name and password in DATABASE_URL."
        }
        if reason.contains("database") && reason.contains("does not exist") {
            return "Create the database (createdb NAME) or fix its name in DATABASE_URL."
        }
        if reason.contains("SSL") || reason.contains("certificate") {
            return "Check sslmode in DATABASE_URL against what the server offers (require/verify-full need SSL on "
                + "the server; verify-ca/verify-full also need sslrootcert=FILE, the CA that signed the server's "
                + "certificate; verify-full connects only by a host name the certificate names)."
        }
        // PgBouncer before 1.20 takes no session settings at connect (--tenant sends one); later
        // ones only those listed in track_extra_parameters.
        if reason.contains("unsupported startup parameter") {
            return "A pooler (PgBouncer) refused a session setting sent at connect: --tenant sends switchyard.tenant "
                + "so. Add switchyard.tenant to PgBouncer's track_extra_parameters (1.20+), or run this command "
                + "against Postgres itself."
        }
        if reason.contains("too many connections for") {
            return "The role's or database's CONNECTION LIMIT is reached: raise it (ALTER ROLE … CONNECTION LIMIT n), "
                + "or open fewer connections (each worker opens up to 9, by its --concurrency; see the connection "
                + "budget in docs/deploy.md)."
        }
        if reason.contains("too many clients") || reason.contains("remaining connection slots are reserved") {
            return "The server has no connection slot free: raise its max_connections, or open fewer connections "
                + "(each worker opens up to 9, by its --concurrency; see the connection budget in docs/deploy.md), "
                + "or put PgBouncer in front."
        }
        // target_session_attrs refused every host that answered (libpq 14+'s words): named with
        // the hosts that did not answer, the "is the server running" hint sent a failover's
        // operator to look for a dead server, not for a standby not yet promoted.
        if reason.contains("session is read-only") || reason.contains("server is in hot standby mode") {
            return "No host in DATABASE_URL that answered takes writes (target_session_attrs): a standby waits to be "
                + "promoted, or the URL lists only standbys. During a failover, wait for the promotion; otherwise "
                + "add the primary's host to the URL (host=a,b&port=5432,5432)."
        }
        if reason.contains("role") && reason.contains("does not exist") {
            return "Create the role (createuser NAME) or fix the user name in DATABASE_URL."
        }
        return "Check that the server is running and accepts connections at that host and port, "
            + "and that DATABASE_URL is right."
    }

    /// libpq's notice receiver: turns a NOTICE into a `PostgresNotice` for the configured handler.
    private static let noticeReceiver: PQnoticeReceiver = { context, result in
        guard let context, let result else { return }
        let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
        guard let handler = sink.handler else { return }
        handler(
            PostgresNotice(
                severity: field(result, "S") ?? "NOTICE",
                sqlState: field(result, "C").map(SQLState.init),
                message: field(result, "M") ?? ""
            )
        )
    }

    // MARK: Results

    /// Turns a finished `PGresult` into rows, or its error into a `PostgresError`. Frees the result.
    static func rows(_ result: OpaquePointer?, _ handle: OpaquePointer) throws -> PostgresRows {
        guard let result else { throw connectionError(handle) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return copyRows(result)
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR:
            throw serverError(result, handle)
        case PGRES_PIPELINE_ABORTED:
            throw PostgresError(.server, "statement skipped: an earlier statement in the pipeline failed")
        default:
            let status = String(cString: PQresStatus(PQresultStatus(result)))
            throw PostgresError(.protocolViolation, "unexpected result status \(status)")
        }
    }

    private static func copyRows(_ result: OpaquePointer) -> PostgresRows {
        let fieldCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        var columns: [PostgresRows.Column] = []
        columns.reserveCapacity(fieldCount)
        for column in 0..<fieldCount {
            columns.append(
                .init(name: String(cString: PQfname(result, Int32(column))), type: .init(oid: PQftype(result, Int32(column))))
            )
        }
        var cells: [String?] = []
        cells.reserveCapacity(fieldCount * rowCount)
        for row in 0..<Int32(rowCount) {
            for column in 0..<Int32(fieldCount) {
                if PQgetisnull(result, row, column) == 1 {
                    cells.append(nil)
                } else {
                    let length = Int(PQgetlength(result, row, column))
                    let bytes = UnsafeRawPointer(PQgetvalue(result, row, column)!).assumingMemoryBound(to: UInt8.self)
                    cells.append(String(decoding: UnsafeBufferPointer(start: bytes, count: length), as: UTF8.self))
                }
            }
        }
        let tag = String(cString: PQcmdStatus(result))
        let affected = Int(String(cString: PQcmdTuples(result))) ?? rowCount
        return PostgresRows(columns: columns, cells: cells, affectedRows: affected, commandTag: tag)
    }

    static func serverError(_ result: OpaquePointer, _ handle: OpaquePointer) -> PostgresError {
        guard let sqlState = field(result, "C") else {
            // No SQLSTATE: libpq made this error up itself, usually because the connection broke.
            return connectionError(handle)
        }
        return PostgresError(
            .server,
            field(result, "M") ?? errorMessage(handle),
            sqlState: SQLState(sqlState),
            detail: field(result, "D"),
            hint: field(result, "H"),
            severity: field(result, "S"),
            constraint: field(result, "n")
        )
    }

    static func connectionError(_ handle: OpaquePointer) -> PostgresError {
        // libpq's text goes on with the server's CONTEXT (every PL/pgSQL frame of the statement
        // cut short, the statement's text with them): 2,776 characters in one log line.
        var message = errorMessage(handle)
        if let context = message.range(of: "\nCONTEXT:") { message = String(message[..<context.lowerBound]) }
        if PQstatus(handle) != CONNECTION_OK {
            return PostgresError(
                .connectionClosed, "the database connection was lost: \(message)",
                hint: "The server may have restarted or the network failed; retry on a new connection."
            )
        }
        return PostgresError(.protocolViolation, message.isEmpty ? "libpq reported an unknown error" : message)
    }

    static func closedError() -> PostgresError {
        PostgresError(.connectionClosed, "the connection is closed", hint: "Open a new connection.")
    }

    static func errorMessage(_ handle: OpaquePointer) -> String {
        guard let message = PQerrorMessage(handle) else { return "" }
        return String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// One field of an error or notice, by its protocol letter (libpq's `PG_DIAG_*` macros are
    /// character constants, which Swift does not import): S severity, C SQLSTATE, M message,
    /// D detail, H hint, n constraint name.
    private static func field(_ result: OpaquePointer, _ code: Unicode.Scalar) -> String? {
        PQresultErrorField(result, Int32(code.value)).map { String(cString: $0) }
    }

    // MARK: Parameters

    /// Rejects text that C would silently cut short at a NUL byte.
    static func checked(_ text: String) throws -> String {
        if text.utf8.contains(0) {
            throw PostgresError(
                .invalidParameter, "text contains a NUL byte (\\u0000), which Postgres text cannot hold",
                hint: "Remove the NUL bytes, or send binary data as bytea."
            )
        }
        return text
    }

    /// Lends libpq the parameters, all in one buffer: text ones as C strings (nil for NULL), binary
    /// ones as bytes with their lengths, formats and types.
    static func withParameters<T>(
        _ binds: [(any PostgresEncodable)?],
        _ body: (Parameters) throws -> T
    ) throws -> T {
        if binds.isEmpty { return try body(Parameters(count: 0)) }
        var buffer: [UInt8] = []
        var offsets: [Int?] = []
        offsets.reserveCapacity(binds.count)
        // Only when a parameter is binary: its type, length and format (text ones are 0, 0, 0).
        var binary: (types: [UInt32], lengths: [Int32], formats: [Int32])?
        for bind in binds {
            guard let bind else {
                offsets.append(nil)
                continue
            }
            let start = buffer.count
            if let value = bind.postgresBinary {
                if binary == nil {
                    binary = ([UInt32](repeating: 0, count: binds.count), [Int32](repeating: 0, count: binds.count),
                              [Int32](repeating: 0, count: binds.count))
                }
                binary!.types[offsets.count] = value.type
                binary!.lengths[offsets.count] = Int32(value.bytes.count)
                binary!.formats[offsets.count] = 1
                buffer.append(contentsOf: value.bytes)
                offsets.append(start)
                continue
            }
            buffer.append(contentsOf: bind.postgresText.utf8)
            // One pass to copy, one memchr over the copy (cheaper than scanning the String).
            let hasNUL = buffer.withUnsafeBufferPointer { all in
                memchr(all.baseAddress! + start, 0, all.count - start) != nil
            }
            if hasNUL {
                throw PostgresError(
                    .invalidParameter,
                    "parameter $\(offsets.count + 1) contains a NUL byte (\\u0000), which Postgres text cannot hold",
                    hint: "Remove the NUL bytes, or send binary data as bytea."
                )
            }
            offsets.append(start)
            buffer.append(0)
        }
        return try buffer.withUnsafeBufferPointer { (storage: UnsafeBufferPointer<UInt8>) throws -> T in
            let start = storage.baseAddress.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(bitPattern: 1)!
            let base = start.assumingMemoryBound(to: CChar.self)
            let pointers: [UnsafePointer<CChar>?] = offsets.map { offset in offset.map { base + $0 } }
            return try pointers.withUnsafeBufferPointer { (values: UnsafeBufferPointer<UnsafePointer<CChar>?>) throws -> T in
                var parameters = Parameters(count: Int32(binds.count), values: values.baseAddress)
                guard let binary else { return try body(parameters) }
                return try binary.types.withUnsafeBufferPointer { (types: UnsafeBufferPointer<UInt32>) throws -> T in
                    try binary.lengths.withUnsafeBufferPointer { (lengths: UnsafeBufferPointer<Int32>) throws -> T in
                        try binary.formats.withUnsafeBufferPointer { (formats: UnsafeBufferPointer<Int32>) throws -> T in
                            parameters.types = types.baseAddress
                            parameters.lengths = lengths.baseAddress
                            parameters.formats = formats.baseAddress
                            return try body(parameters)
                        }
                    }
                }
            }
        }
    }

    /// Bind parameters as `PQexecParams`/`PQsendQueryParams` take them; types, lengths and
    /// formats are nil when every parameter is text.
    struct Parameters {
        var count: Int32
        var values: UnsafePointer<UnsafePointer<CChar>?>? = nil
        var types: UnsafePointer<UInt32>? = nil
        var lengths: UnsafePointer<Int32>? = nil
        var formats: UnsafePointer<Int32>? = nil
    }

    private static func withCStringArray<T>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> T) -> T {
        let copies = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer($0) } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
