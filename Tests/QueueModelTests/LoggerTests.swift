import Foundation
import QueueModel
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
}
