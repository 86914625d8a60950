import XCTest

@testable import CRMCore

/// The string writer skips eight bytes at a time while none needs an escape; it must write
/// exactly what escaping byte by byte writes, wherever the escapes fall.
final class JSONEscapeTests: XCTestCase {
    private func reference(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x22]
        for b in bytes {
            switch b {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x0A: out += Array(#"\n"#.utf8)
            case 0x0D: out += Array(#"\r"#.utf8)
            case 0x09: out += Array(#"\t"#.utf8)
            case 0..<0x20: out += Array(String(format: "\\u%04x", b).utf8)
            default: out.append(b)
            }
        }
        return out + [0x22]
    }

    private func written(_ bytes: [UInt8]) -> [UInt8] {
        var out = JSONBytes(capacity: 0)
        bytes.withUnsafeBufferPointer { out.writeEscaped($0) }
        return out.bytes
    }

    func testRandomStringsOfEveryKindOfByte() {
        // Bytes next to the edges of each test: controls, space, quote, backslash, DEL, UTF-8.
        let alphabet: [UInt8] = [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x61, 0x7F, 0x80, 0xA0, 0xC3, 0xA9, 0xDC, 0xE2, 0xFF]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let length = Int.random(in: 0...40, using: &generator)
            // Mostly plain text with a few others, so that clean 8-byte words and dirty ones mix.
            let bytes = (0..<length).map { _ in
                Int.random(in: 0..<4, using: &generator) == 0 ? alphabet.randomElement(using: &generator)! : UInt8(ascii: "a")
            }
            XCTAssertEqual(written(bytes), reference(bytes), "\(bytes)")
        }
    }

    func testEachEscapeAtEveryPositionOfALongString() {
        for special: UInt8 in [0x00, 0x0A, 0x1F, 0x22, 0x5C] {
            for position in 0..<24 {
                var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: 24)
                bytes[position] = special
                XCTAssertEqual(written(bytes), reference(bytes), "\(special) at \(position)")
            }
        }
    }

    func testTheWordTestAgreesWithTheByteTest() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100_000 {
            var word = generator.next() as UInt64
            // Make matches common: force some bytes to the interesting values.
            for lane in 0..<8 where Int.random(in: 0..<6, using: &generator) == 0 {
                let value = [0x00, 0x1F, 0x20, 0x22, 0x5C, 0x80, 0xFF, 0x21][Int.random(in: 0..<8, using: &generator)] as UInt64
                word = word & ~(0xFF << (8 * UInt64(lane))) | value << (8 * UInt64(lane))
            }
            let bytes = (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * UInt64($0))) }
            let expected = bytes.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }
            XCTAssertEqual(JSONBytes.anyNeedsEscape(word), expected, String(word, radix: 16))
        }
    }
}
