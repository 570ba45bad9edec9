/// Checks submission input a client reads from a file or stdin before it is parsed or sent:
/// what Postgres would refuse with a less helpful message, and what libpq would silently mangle
/// (it sends text parameters as C strings, so a NUL would cut a value short).
///
/// The server stays the authority on every configurable limit (`max_request_bytes`,
/// `max_request_depth`, … in `switchyard.settings`); these are the structural checks that only the
/// client can make, with limits far above the server's defaults.
public enum InputScreen {
    /// The largest request or JSONL line a client reads, in bytes (the server's own limit,
    /// `max_request_bytes`, is 1 MiB by default).
    public static let maximumBytes = 64 << 20
    /// The deepest nesting of objects and arrays a client parses (the server's own limit,
    /// `max_request_depth`, is 32 by default).
    public static let maximumDepth = 256

    /// The bytes as text, when they are valid UTF-8 without NUL bytes, no longer than
    /// `maximumBytes` and nested no deeper than `maximumDepth`.
    /// - Throws: `QueueError.invalidInput` naming the byte (1-based) where the input goes wrong.
    public static func text(_ bytes: [UInt8]) throws -> String {
        if bytes.count > maximumBytes {
            throw QueueError(
                .invalidInput, "is \(bytes.count) bytes, over the client's limit of \(maximumBytes) bytes",
                hint: "The server refuses requests over its max_request_bytes setting (1 MiB by default); shorten it.")
        }
        if let offset = bytes.firstIndex(of: 0) {
            throw QueueError(
                .invalidInput, "contains a NUL byte (0x00) at byte \(offset + 1)",
                hint: "JSON text cannot hold raw NUL bytes: remove them (is this a binary file?).")
        }
        if let (offset, byte) = firstInvalidUTF8(bytes) {
            throw QueueError(
                .invalidInput,
                "is not valid UTF-8: byte \(offset + 1) (0x\(String(byte, radix: 16, uppercase: true))) does not "
                    + "begin a well-formed UTF-8 character",
                hint: "Save the input as UTF-8, e.g. iconv -f LATIN1 -t UTF-8 FILE.")
        }
        if let offset = firstTooDeep(bytes) {
            throw QueueError(
                .invalidInput,
                "nests objects and arrays deeper than \(maximumDepth) levels (at byte \(offset + 1))",
                hint: "Flatten it; the server refuses requests nested deeper than its max_request_depth setting "
                    + "(32 by default).")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Refuses a NUL character (`\u0000`) in any string or key: Postgres's `jsonb` cannot store it,
    /// and a text parameter would be cut short at it.
    /// - Parameter path: how to name `value` in the message (`request`, or empty for an envelope).
    /// - Throws: `QueueError.invalidInput` naming the field.
    public static func checkStrings(_ value: JSONValue, path: String) throws {
        switch value {
        case .string(let text):
            if text.utf8.contains(0) {
                throw QueueError(
                    .invalidInput,
                    "\(path.isEmpty ? "the value" : path) contains a NUL character (\\u0000), which cannot be stored",
                    hint: "Remove it; Postgres text and jsonb cannot hold NUL.")
            }
        case .array(let elements):
            for (index, element) in elements.enumerated() {
                try checkStrings(element, path: "\(path)[\(index)]")
            }
        case .object(let members):
            for key in members.keys.sorted() {
                let named = Self.path(path, key)
                if key.utf8.contains(0) {
                    throw QueueError(
                        .invalidInput, "\(path.isEmpty ? "the input" : path) has a key with a NUL character (\\u0000)",
                        hint: "Remove it; Postgres text and jsonb cannot hold NUL.")
                }
                try checkStrings(members[key]!, path: named)
            }
        case .null, .bool, .number, .exactNumber:
            return
        }
    }

    /// `request.messages`, or `request["odd key"]` for a key that is not a plain identifier.
    static func path(_ base: String, _ key: String) -> String {
        let plain =
            !key.isEmpty
            && key.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == 0x5F
            }
        if plain { return base.isEmpty ? key : "\(base).\(key)" }
        let quoted = JSONValue.string(String(key.prefix(60))).jsonText
        return "\(base)[\(quoted)]"
    }

    /// The offset and value of the first byte that does not begin a well-formed UTF-8 sequence
    /// (overlong forms, surrogates, values past U+10FFFF and cut-short sequences included), or nil.
    static func firstInvalidUTF8(_ bytes: [UInt8]) -> (Int, UInt8)? {
        var index = 0
        while index < bytes.count {
            let lead = bytes[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            // The allowed range of the second byte depends on the lead (Unicode table 3-7).
            let length: Int
            var second: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; second = 0xA0...0xBF
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; second = 0x80...0x9F
            case 0xF0: length = 4; second = 0x90...0xBF
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; second = 0x80...0x8F
            default: return (index, lead)
            }
            for offset in 1..<length {
                let position = index + offset
                let allowed = offset == 1 ? second : 0x80...0xBF
                // A character cut short or continued wrongly is reported where it begins.
                guard position < bytes.count, allowed.contains(bytes[position]) else { return (index, lead) }
            }
            index += length
        }
        return nil
    }

    /// The offset of the first `[` or `{` (outside strings) nested deeper than `maximumDepth`.
    static func firstTooDeep(_ bytes: [UInt8]) -> Int? {
        var depth = 0
        var inString = false
        var escaped = false
        for (offset, byte) in bytes.enumerated() {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == 0x5C {
                    escaped = true
                } else if byte == 0x22 {
                    inString = false
                }
                continue
            }
            switch byte {
            case 0x22: inString = true
            case 0x5B, 0x7B:
                depth += 1
                if depth > maximumDepth { return offset }
            case 0x5D, 0x7D: depth = max(0, depth - 1)
            default: break
            }
        }
        return nil
    }
}
