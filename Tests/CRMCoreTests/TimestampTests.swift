import CRMCore
import XCTest

/// Timestamps are kept inline as text: what goes in comes out, up to the longest PostgreSQL prints.
final class TimestampTests: XCTestCase {
    func testTextRoundTripsAndIsWrittenAsAJSONString() throws {
        let t = try XCTUnwrap(Timestamp("2026-11-28T21:53:07.123456Z"))
        XCTAssertEqual(t.text, "2026-11-28T21:53:07.123456Z")
        XCTAssertEqual(t, Timestamp("2026-11-28T21:53:07.123456Z"))
        XCTAssertNotEqual(t, Timestamp("2026-11-28T21:53:07.12345Z"))
        XCTAssertEqual(Timestamp().text, "")
        var out = JSONBytes(capacity: 0)
        out.string(t)
        out.string(Optional<Timestamp>.none)
        XCTAssertEqual(String(decoding: out.bytes, as: UTF8.self), #""2026-11-28T21:53:07.123456Z"null"#)
        XCTAssertEqual(JSON(t), .string("2026-11-28T21:53:07.123456Z"))
        XCTAssertEqual(JSON(Optional<Timestamp>.none), .null)
    }

    func testTheLongestPostgreSQLTimestampFitsAndLongerTextIsRefused() {
        let longest = "294276-12-31T23:59:59.999999+00 BC"
        XCTAssertEqual(Timestamp(longest)?.text, longest)
        let full = String(repeating: "9", count: Timestamp.capacity)
        XCTAssertEqual(Timestamp(full)?.text, full)
        XCTAssertNil(Timestamp(full + "9"))
        XCTAssertNil(Timestamp(count: Timestamp.capacity + 1) { _ in 0 })
    }

    /// JSON writes a timestamp without looking for escapes, so text that would need one (or
    /// is not printable ASCII) is refused: each such byte at every position of every length.
    func testTextThatJSONWouldEscapeIsRefused() {
        for length in 1...Timestamp.capacity {
            let plain = (0..<length).map { i in UInt8(ascii: "0") + UInt8(i % 10) }
            XCTAssertNotNil(Timestamp(count: length) { $0.update(fromContentsOf: plain) }, "length \(length)")
            for position in 0..<length {
                for bad: UInt8 in [0x00, 0x0A, 0x1F, 0x22, 0x5C, 0x7F, 0x80, 0xC3, 0xFF] {
                    var text = plain
                    text[position] = bad
                    XCTAssertNil(Timestamp(count: length) { $0.update(fromContentsOf: text) }, "\(bad) at \(position) of \(length)")
                }
            }
        }
        XCTAssertNil(Timestamp("2026-11-28T21:53:07\"Z"))
        XCTAssertEqual(Timestamp(" !#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~")?.text, " !#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~")
    }

    func testAnInitializerThatWritesLessKeepsOnlyWhatItWrote() {
        let t = Timestamp(count: 10) { out in
            out[0] = UInt8(ascii: "a")
            return 1
        }
        XCTAssertEqual(t?.text, "a")
    }
}

/// CRM types read from stored bytes name exactly the types their raw values name.
final class CRMTypeBytesTests: XCTestCase {
    /// The list writes a type as a literal: the same bytes as its name escaped.
    func testEachTypeIsWrittenAsItsNameIs() {
        for type in CRMType.allCases {
            var literal = JSONBytes(capacity: 0), escaped = JSONBytes(capacity: 0)
            literal.string(type)
            escaped.string(type.rawValue)
            XCTAssertEqual(String(decoding: literal.bytes, as: UTF8.self), String(decoding: escaped.bytes, as: UTF8.self))
        }
    }

    func testEveryNameAndNothingElse() {
        func type(_ text: String) -> CRMType? { Array(text.utf8).withUnsafeBufferPointer { CRMType(utf8: $0) } }
        for t in CRMType.allCases { XCTAssertEqual(type(t.rawValue), t) }
        for other in ["", "c", "creati", "creatioo", "Creatio", "hubspot ", "sales", "salesforcE", "zoho", "k\u{0}laviyo"] {
            XCTAssertNil(type(other), other)
        }
    }
}
