/// A 64-bit hash that is the same in every process, on every machine, in every run.
///
/// Swift's `Hasher` (and so `hashValue`) is seeded per process: two workers would disagree about
/// where a key belongs. This is FNV-1a, written out, followed by a 64-bit finalizer (from
/// MurmurHash3/SplitMix64) so that keys differing in one byte land far apart on a hash ring.
public enum StableHash {
    /// Hashes the UTF-8 bytes of a string.
    public static func hash(_ text: String) -> UInt64 {
        var state: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            state ^= UInt64(byte)
            state &*= 0x0000_0100_0000_01b3
        }
        return mix(state)
    }

    /// The finalizer on its own: spreads a 64-bit value over all 64 bits.
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 33)) &* 0xff51_afd7_ed55_8ccd
        z = (z ^ (z >> 33)) &* 0xc4ce_b9fe_1a85_ec53
        return z ^ (z >> 33)
    }

    /// The hash as 16 lowercase hex digits.
    public static func hex(_ text: String) -> String {
        let digits = String(hash(text), radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
