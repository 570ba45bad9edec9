@testable import Postgres
import Testing

@Suite("Connection strings")
struct ConfigurationTests {
    @Test("URLs and key=value strings both parse, and the target never shows the password")
    func targets() throws {
        let url = try PostgresConfiguration("postgres://alice:s3cret-pass@db.example.com:6432/orders?sslmode=require")
        #expect(url.target == "postgres://alice@db.example.com:6432/orders")
        #expect(!url.description.contains("s3cret-pass"))

        let pairs = try PostgresConfiguration("host=/run/pg port=5433 user=bob password=hunter22 dbname=app")
        #expect(pairs.target == "postgres://bob@/app?host=/run/pg&port=5433")
        // As a URI reads them: an IPv6 address bracketed, a directory's & and space encoded.
        #expect(try PostgresConfiguration("host=::1 port=5432 user=u dbname=d").target == "postgres://u@[::1]:5432/d")
        #expect(
            try PostgresConfiguration("host='/tmp/a&b c' port=5432 user=u dbname=d").target
                == "postgres://u@/d?host=/tmp/a%26b%20c&port=5432")
        #expect(!"\(pairs)".contains("hunter22"))

        let other = url.withDatabase("reports")
        #expect(other.target == "postgres://alice@db.example.com:6432/reports")
        #expect(other.databaseOverride == "reports")
    }

    @Test("a malformed string is an invalid-configuration error with an example of a good one")
    func malformed() {
        let error = #expect(throws: PostgresError.self) { try PostgresConfiguration("host=a port") }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.hint?.contains("postgres://") == true)
    }

    @Test("a string libpq cannot parse is refused without quoting its password")
    func unparsablePassword() {
        let url = #expect(throws: PostgresError.self) { try PostgresConfiguration("postgres://sub_a:Pw%zzTopSecret@localhost/x") }
        #expect(url?.message.contains("invalid percent-encoded token") == true, "\(String(describing: url))")
        #expect(url?.hint?.contains("% in the user name or password as %25") == true, "\(String(describing: url))")
        #expect(url?.message.contains("TopSecret") == false, "\(String(describing: url))")
        let pairs = #expect(throws: PostgresError.self) { try PostgresConfiguration("host=a password='hunter22") }
        #expect(pairs?.message.contains("hunter22") == false, "\(String(describing: pairs))")
        // Without a password, libpq's words stay whole: they name what to fix.
        let plain = #expect(throws: PostgresError.self) { try PostgresConfiguration("postgres://localhost/x?nosuch=1") }
        #expect(plain?.message.contains("\"nosuch\"") == true, "\(String(describing: plain))")
    }
}

/// An operator's compose password `p@ss:w/rd#1`, unencoded in the URL: libpq took `p` as the
/// password and the rest as host, port and database; the error printed them, and the scrubber took
/// every p out of libpq's words.
@Suite("Connection strings with an unencoded password")
struct UnencodedPasswordTests {
    @Test("a URL whose password holds an unencoded @, : or / is refused, without quoting it, with how to encode it")
    func refused() {
        for url in [
            "postgres://sp_user:p@ss:w/rd#1@127.0.0.1:5491/switchyard",
            "postgres://sp_user:pa/ss@127.0.0.1:5491/switchyard",
            "postgresql://u:a@b@db.example.com/app",
        ] {
            let error = #expect(throws: PostgresError.self) { try PostgresConfiguration(url) }
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.message.contains("ss:w") == false && error?.message.contains("127.0.0.1") == false, "\(String(describing: error))")
            #expect(error?.hint?.contains("@ as %40") == true, "\(String(describing: error))")
        }
        // Encoded, the same password reads.
        #expect((try? PostgresConfiguration("postgres://sp_user:p%40ss%3Aw%2Frd%231@127.0.0.1:5491/switchyard"))?.target
            == "postgres://sp_user@127.0.0.1:5491/switchyard")
        #expect((try? PostgresConfiguration("postgres://u@h1:5432,h2:5433/app")) != nil)
        // An @ in the database name, as written or encoded, is no password's (a review's were refused).
        #expect((try? PostgresConfiguration("postgres://u@h:5432/my@db"))?.target == "postgres://u@h:5432/my@db")
        #expect((try? PostgresConfiguration("postgres://u@h:5432/my%40db"))?.target == "postgres://u@h:5432/my@db")
        #expect((try? PostgresConfiguration("postgres://u:pw@[::1]:5432/db?application_name=a@b")) != nil)
    }

    @Test("a short password is scrubbed where it stands alone, not out of every word")
    func shortPasswords() throws {
        let short = try PostgresConfiguration("postgres://u:p@localhost:1/x")
        #expect(short.scrub("invalid port: p (password p)") == "invalid port: ******** (password ********)")
        let long = try PostgresConfiguration("postgres://u:hunter22x@localhost:1/x")
        #expect(long.scrub("FATAL: password hunter22x!hunter22xy") == "FATAL: password ********!********y")
    }
}

@Suite("Session settings")
struct SessionSettingTests {
    @Test("a setting goes to libpq's options after the string's own, spaces and backslashes escaped")
    func options() throws {
        let plain = try PostgresConfiguration("postgres://u@h/db")
        #expect(plain.optionsWithSettings == nil)
        #expect(plain.setting("switchyard.tenant", to: "acme").optionsWithSettings == "-c switchyard.tenant=acme")
        // A tab or newline splits options too: escaped like a space.
        #expect(plain.setting("switchyard.tenant", to: "a\tb\nc").optionsWithSettings == "-c switchyard.tenant=a\\\tb\\\nc")
        let given = try PostgresConfiguration("postgres://u@h/db?options=-c%20statement_timeout%3D5s")
        #expect(given.setting("switchyard.tenant", to: #"big co\x"#).optionsWithSettings
            == #"-c statement_timeout=5s -c switchyard.tenant=big\ co\\x"#)
    }
}

@Suite("Connection strings for other processes")
struct EffectiveConnectionStringTests {
    @Test("the database override is applied to URLs (with or without a path or query) and key=value strings")
    func override() throws {
        #expect(try PostgresConfiguration("postgres://u:p@h:5432/app?sslmode=require").withDatabase("t1")
            .effectiveConnectionString == "postgres://u:p@h:5432/t1?sslmode=require")
        #expect(try PostgresConfiguration("postgresql://u@h").withDatabase("t1").effectiveConnectionString
            == "postgresql://u@h/t1")
        #expect(try PostgresConfiguration("host=/tmp port=5 user=u").withDatabase("t1").effectiveConnectionString
            == "host=/tmp port=5 user=u dbname=t1")
        #expect(try PostgresConfiguration("host=/tmp").effectiveConnectionString == "host=/tmp")
    }
}
