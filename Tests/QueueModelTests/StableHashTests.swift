import QueueModel
import Testing

@Suite("Stable hash")
struct StableHashTests {
    // FNV-1a 64 of "" is 0xcbf29ce484222325 and of "a" 0xaf63dc4c8601ec8c (the published test
    // vectors); these pin the finalized values too. If they change, every affinity key in every
    // deployment moves to another model.
    @Test(
        "fixed values, the same in every process, machine and release",
        arguments: [
            ("", 0xefd0_1f60_ba99_2926 as UInt64), ("a", 0x82a2_a958_a9be_ce5b), ("conv-42", 0xcc79_d43e_d6a1_f0be),
            ("tenant-acme", 0x9405_3cd6_f160_6a63),
        ]
    )
    func fixedValues(text: String, expected: UInt64) {
        #expect(StableHash.hash(text) == expected)
    }

    @Test("hex is 16 digits")
    func hex() {
        #expect(StableHash.hex("a") == "82a2a958a9bece5b")
        #expect(StableHash.hex("").count == 16)
    }
}
