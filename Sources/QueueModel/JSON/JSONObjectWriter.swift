import Foundation

/// Writes one JSON object member by member, straight to UTF-8, for documents bound for `jsonb`
/// (the write-back's trail entries): no intermediate `JSONValue` tree; nil members are left out.
struct JSONObjectWriter: ~Copyable {
    private var first = true

    /// Opens the object (`{`); `close` ends it.
    init(into output: inout [UInt8]) {
        output.append(0x7B)
    }

    mutating func key(_ name: StaticString, into output: inout [UInt8]) {
        if !first { output.append(0x2C) }
        first = false
        output.append(0x22)
        output.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        output.append(0x22)
        output.append(0x3A)
    }

    mutating func text(_ name: StaticString, _ value: String?, into output: inout [UInt8]) {
        guard let value else { return }
        key(name, into: &output)
        JSONValue.writeString(value, into: &output, storable: true)
    }

    mutating func number(_ name: StaticString, _ value: Double?, into output: inout [UInt8]) {
        guard let value else { return }
        key(name, into: &output)
        JSONValue.writeNumber(value, into: &output)
    }

    mutating func bool(_ name: StaticString, _ value: Bool?, into output: inout [UInt8]) {
        guard let value else { return }
        key(name, into: &output)
        output.append(contentsOf: value ? Array("true".utf8) : Array("false".utf8))
    }

    consuming func close(into output: inout [UInt8]) {
        output.append(0x7D)
    }
}
