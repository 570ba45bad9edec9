import Foundation
@testable import QueueModel
import Synchronization
import Testing

@Suite("Logger: formats and redaction")
struct LoggerTests {
    /// Lines one logger wrote.
    final class Lines: Sendable {
        let all = Mutex<[String]>([])
        func logger(_ format: Logger.Format) -> Logger {
            Logger(label: "test", format: format) { line in self.all.withLock { $0.append(line) } }
        }
    }

    @Test("a key with characters each format escapes (/, \", \\) is redacted in JSON and logfmt lines alike",
          arguments: [Logger.Format.json, .logfmt])
    func escapedSecret(format: Logger.Format) {
        let secret = "sk-test/abc\"def\\ghi+jkl=="
        Secrets.register(secret)
        let lines = Lines()
        lines.logger(format).error("provider said: \(secret)", ["body": "{\"key\": \"\(secret)\"}"])
        let line = lines.all.withLock { $0.joined() }
        #expect(line.contains("[REDACTED]"))
        for fragment in ["abc", "def", "ghi+jkl"] {
            #expect(!line.contains(fragment), "part of the key reached the line: \(line)")
        }
    }

    @Test("logfmt escapes carriage returns and tabs, so a value cannot rewrite or forge a line")
    func controlCharacters() {
        let lines = Lines()
        lines.logger(.logfmt).warning("m", ["body": "ok\rlevel=error forged\tx"])
        let line = lines.all.withLock { $0.joined() }
        #expect(!line.contains("\r") && !line.contains("\t"))
        #expect(line.contains(#"body="ok\rlevel=error forged\tx""#))
    }

    @Test("log settings in any case are understood; an unknown one keeps the default and says so")
    func settings() {
        let lines = Lines()
        let upper = Logger(label: "t", environment: ["SWITCHYARD_LOG_LEVEL": "WARN", "SWITCHYARD_LOG_FORMAT": "JSON"]) { line in
            lines.all.withLock { $0.append(line) }
        }
        #expect(upper.level == .warning && upper.format == .json)
        #expect(lines.all.withLock { $0.isEmpty })
        let typo = Logger(label: "t", environment: ["SWITCHYARD_LOG_LEVEL": "verbose"]) { line in
            lines.all.withLock { $0.append(line) }
        }
        #expect(typo.level == .info)
        #expect(lines.all.withLock { $0.contains { $0.contains("SWITCHYARD_LOG_LEVEL=verbose is not a level") } })
        // Set but blank is unset; spaces around a value are not part of it.
        lines.all.withLock { $0.removeAll() }
        let blank = Logger(label: "t", environment: ["SWITCHYARD_LOG_LEVEL": " ", "SWITCHYARD_LOG_FORMAT": " json "]) { line in
            lines.all.withLock { $0.append(line) }
        }
        #expect(blank.level == .info && blank.format == .json)
        #expect(lines.all.withLock { $0.isEmpty })
    }

    @Test("in JSON lines, numbers are numbers")
    func jsonNumbers() throws {
        let lines = Lines()
        let logger = Logger(label: "t", format: .json) { line in lines.all.withLock { $0.append(line) } }
        logger.info("call", ["latency_ms": 4, "ratio": 0.5, "job": Int64(42), "model": "gpt-4", "port": "8080"])
        let line = try #require(lines.all.withLock { $0.first })
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["latency_ms"] as? Int == 4)
        #expect(object["ratio"] as? Double == 0.5)
        #expect(object["job"] as? Int == 42)
        #expect(object["model"] as? String == "gpt-4")
        #expect(object["port"] as? String == "8080", "a string stays a string")
        // Slashes as written: "http:\/\/…" is valid JSON, but a walkthrough could not grep it.
        logger.info("serving", ["url": "http://127.0.0.1:9464/metrics"])
        #expect(lines.all.withLock { $0.last }?.contains(#""url":"http://127.0.0.1:9464/metrics""#) == true)
    }

    @Test("in JSON lines, fields added with `with` keep their type, and booleans are booleans")
    func jsonTypedContext() throws {
        let lines = Lines()
        let logger = Logger(label: "t", format: .json) { line in lines.all.withLock { $0.append(line) } }
            .with("job", Int64(789)).with("attempt", 1).with("model", "gpt-4")
        logger.info("routed job", ["poll_only": false])
        let line = try #require(lines.all.withLock { $0.first })
        #expect(line.contains(#""job":789"#) && line.contains(#""attempt":1"#), "\(line)")
        #expect(line.contains(#""model":"gpt-4""#) && line.contains(#""poll_only":false"#), "\(line)")
    }

    @Test("a secret is redacted whole or cut short, compared as bytes (8 of them may end inside a character)")
    func secretBytes() {
        let secret = "ключ-секретный-2026"  // 2-byte letters
        Secrets.register(secret)
        #expect(Secrets.redact("a \(secret) b") == "a [REDACTED] b")
        #expect(Secrets.redact("cut: \(secret.dropLast(5))!") == "cut: [REDACTED]!")
        #expect(Secrets.redact("клю alone") == "клю alone")  // 6 bytes
    }

    /// The ways a provider was seen to echo a key that kept part of it readable (a review's fake
    /// provider): each must leave no 8 characters of the key.
    @Test("any 8 bytes of a key are hidden: split, masked, percent-encoded, in base64, upper-cased")
    func secretFragments() throws {
        let key = "zq8VX3mbN7pLw2Rt/QaK9+uYe4HsDf6J"
        Secrets.register(key)
        let echoes = [
            "bad credential \(key.prefix(10)) \(key.dropFirst(10))",
            "The key ending in \(key.suffix(15)) is revoked",
            "redirect to https://x.test/?k=\(key.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)",
            "token \(Data("Bearer \(key)".utf8).base64EncodedString()) rejected",
            "t=\(Data(key.utf8).base64EncodedString())&u=\(Data("ab\(key)".utf8).base64EncodedString())",
            "t=\(Data("a\(key)".utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_"))",
            key.uppercased(),
        ]
        for echo in echoes {
            let clean = Secrets.redact(echo)
            #expect(clean.contains("[REDACTED]"), "\(echo) → \(clean)")
            for form in Secrets.writtenForms(of: Array(key.utf8)) {
                let text = String(decoding: form, as: UTF8.self).lowercased()
                for start in 0...(text.count - 8) {
                    let piece = String(text.dropFirst(start).prefix(8))
                    #expect(!clean.lowercased().contains(piece), "\(echo) → \(clean) still holds \(piece)")
                }
            }
        }
        // Seven characters in a row are not enough to hide ordinary text.
        #expect(Secrets.redact("zq8VX3m and QaK9+uY") == "zq8VX3m and QaK9+uY")
    }

    @Test("durations in log lines are to the millisecond: 1.735, not 1.7349999999999999")
    func loggedSeconds() {
        let delay = Duration(secondsComponent: 1, attosecondsComponent: 734_999_999_999_999_900)
        #expect(delay.loggedSeconds == 1.735)
        let line = Mutex("")
        Logger(label: "t", level: .info) { text in line.withLock { $0 = text } }
            .info("attempt failed", ["retry_in_s": delay.loggedSeconds])
        #expect(line.withLock { $0 }.contains("retry_in_s=1.735"), "\(line.withLock { $0 })")
    }
}
