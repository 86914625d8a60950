import CRMCore
import XCTest

final class JSONParserTests: XCTestCase {
    private func parse(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> JSON? {
        do { return try JSONParser.parse(text) } catch {
            XCTFail("\(text.debugDescription) should parse, got \(error)", file: file, line: line)
            return nil
        }
    }

    private func assertRejects(_ bytes: [UInt8], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let value = try JSONParser.parse(bytes)
            XCTFail("\(label) should be rejected, parsed as \(value)", file: file, line: line)
        } catch {
            XCTAssertGreaterThanOrEqual(error.offset, 0, file: file, line: line)
            XCTAssertLessThanOrEqual(error.offset, bytes.count, file: file, line: line)
            XCTAssertFalse(error.message.isEmpty, file: file, line: line)
        }
    }

    private func assertRejects(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        assertRejects(Array(text.utf8), text.debugDescription, file: file, line: line)
    }

    func testUnicodeEscapesAndSurrogatePairs() {
        XCTAssertEqual(parse(#""caf\u00e9""#), .string("café"))
        XCTAssertEqual(parse(#""\uD83D\uDE00 \ud83d\ude00""#), .string("😀 😀"))
        XCTAssertEqual(parse(#""\u0000\u001f""#), .string("\u{0}\u{1F}"))
        XCTAssertEqual(parse(#""\"\\\/\b\f\n\r\t""#), .string("\"\\/\u{8}\u{C}\n\r\t"))
        XCTAssertEqual(parse("\"日本語 ✓ 😀\""), .string("日本語 ✓ 😀"), "raw UTF-8 passes through")
    }

    func testAParseSaysWhetherAStringOrKeyHoldsNUL() {
        func containsNUL(_ text: String) -> Bool {
            var found = false
            XCTAssertNoThrow(try Array(text.utf8).withUnsafeBufferPointer { _ = try JSONParser.parse($0, containsNUL: &found) }, text)
            return found
        }
        XCTAssertTrue(containsNUL(#"{"a":"x\u0000"}"#))
        XCTAssertTrue(containsNUL(#"[{"\u0000":1}]"#))
        XCTAssertFalse(containsNUL(#"{"a":"x\\u0000","b":"\u0001"}"#), "an escaped backslash, then u0000")
    }

    func testReplacingNULReachesEveryStringAndKey() {
        let value: JSON = .object([("a\u{0}", .array([.string("\u{0}x\u{0}"), .int(1)])), ("b", .string("ok"))])
        XCTAssertEqual(value.replacingNUL(), .object([("a\u{FFFD}", .array([.string("\u{FFFD}x\u{FFFD}"), .int(1)])), ("b", .string("ok"))]))
        XCTAssertFalse(value.replacingNUL().jsonString.contains(#"\u0000"#))
    }

    func testNumbers() {
        XCTAssertEqual(parse("0"), .int(0))
        XCTAssertEqual(parse("-0"), .int(0))
        XCTAssertEqual(parse("123"), .int(123))
        XCTAssertEqual(parse("-42"), .int(-42))
        XCTAssertEqual(parse("9223372036854775807"), .int(Int64.max))
        XCTAssertEqual(parse("-9223372036854775808"), .int(Int64.min))
        XCTAssertEqual(parse("9223372036854775808"), .double(9223372036854775808.0), "beyond Int64 becomes a double")
        // Up to 18 characters the digits are summed directly; from 19 they go through Int64(String).
        XCTAssertEqual(parse("999999999999999999"), .int(999_999_999_999_999_999))
        XCTAssertEqual(parse("-99999999999999999"), .int(-99_999_999_999_999_999))
        XCTAssertEqual(parse("1000000000000000000"), .int(1_000_000_000_000_000_000))
        XCTAssertEqual(parse("[7,-8,0]"), [7, -8, 0])
        XCTAssertEqual(parse("1.5"), .double(1.5))
        XCTAssertEqual(parse("-1.5e-3"), .double(-0.0015))
        XCTAssertEqual(parse("1E+2"), .double(100))
        XCTAssertEqual(parse("2e2")?.intValue, 200)
        assertRejects("1e400")
    }

    func testStringsWithAndWithoutEscapes() {
        XCTAssertEqual(parse(#""""#), "")
        XCTAssertEqual(parse(#""plain text, no escapes at all""#), "plain text, no escapes at all")
        XCTAssertEqual(parse(#""a long unescaped prefix then \"quoted\" and \u00e9""#), "a long unescaped prefix then \"quoted\" and é")
        XCTAssertEqual(parse(#"{"k":"v","k2":"Zoë"}"#), ["k": "v", "k2": "Zoë"])
        assertRejects("\"unterminated")
        assertRejects("\"tab\tinside\"")
    }

    func testNestedRoundTrip() throws {
        let text = #"{"name":"Zoë \"Z\"","tags":["a",1,2.5,true,false,null],"nested":{"empty":{},"list":[[],[{}]]},"emoji":"\ud83d\ude00"}"#
        let value = try XCTUnwrap(parse(text))
        XCTAssertEqual(value["name"], .string("Zoë \"Z\""))
        XCTAssertEqual(value["tags"], [.string("a"), .int(1), .double(2.5), .bool(true), .bool(false), .null])
        XCTAssertEqual(value["nested"]?["list"], .array([.array([]), .array([.object([])])]))
        XCTAssertEqual(value["emoji"], "😀")
        // Serialised and parsed again: the same value, keys in the same order.
        let again = try JSONParser.parse(value.serialized())
        XCTAssertEqual(again, value)
        XCTAssertEqual(again.objectValue?.map(\.0), ["name", "tags", "nested", "emoji"])
        XCTAssertEqual(again.jsonString, value.jsonString)
    }

    func testDuplicateKeysKeepTheLastValue() {
        XCTAssertEqual(parse(#"{"a":1,"b":2,"a":3}"#)?.objectValue?.count, 2)
        XCTAssertEqual(parse(#"{"a":1,"b":2,"a":3}"#)?["a"], .int(3))
    }

    func testWhitespaceAroundValues() {
        XCTAssertEqual(parse(" \t\r\n{ \"a\" : [ 1 , 2 ] }\n "), ["a": [1, 2]])
        XCTAssertEqual(parse("{ \n}"), .object([]))
        XCTAssertEqual(parse(#"{ "e" : { } , "a" : [ ] }"#), ["e": .object([]), "a": []])
    }

    func testRejectsTrailingCommas() {
        assertRejects("[1,]")
        assertRejects(#"{"a":1,}"#)
        assertRejects("[,1]")
        assertRejects(#"{,}"#)
    }

    func testRejectsLoneSurrogates() {
        assertRejects(#""\ud800""#)
        assertRejects(#""\udc00""#)
        assertRejects(#""\ud800x""#)
        assertRejects(#""\ud800\u0041""#)
        assertRejects(#""\ude00\ud83d""#)
    }

    func testRejectsControlCharactersInStrings() {
        for byte: UInt8 in [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F] {
            assertRejects([0x22, 0x61, byte, 0x62, 0x22], "control byte \(byte) in a string")
        }
    }

    func testRejectsLeadingZerosAndOtherBadNumbers() {
        for text in ["01", "-01", "00", "007", "1.", ".5", "+1", "-", "1e", "1e+", "0x10", "NaN", "Infinity", "-Infinity", "1.2.3"] {
            assertRejects(text)
        }
    }

    func testRejectsOtherMalformedInput() {
        for text in ["", " ", "{", "[", "\"abc", #"{"a" 1}"#, #"{a:1}"#, "{'a':1}", "[1 2]", "tru", "nul", "{} x", "[] []",
                     #""\x""#, #""\u12""#, #""\u12G4""#, #"{"a":1"#] {
            assertRejects(text)
        }
    }

    func testRejectsInvalidUTF8() {
        assertRejects([0x22, 0xFF, 0x22], "0xFF in a string")
        assertRejects([0x22, 0xC3, 0x22], "truncated sequence")
        assertRejects([0x22, 0xC0, 0xAF, 0x22], "overlong encoding")
        assertRejects([0x22, 0xED, 0xA0, 0x80, 0x22], "encoded surrogate")
    }

    func testDeepNestingIsAnErrorNotACrash() {
        assertRejects(String(repeating: "[", count: 100_000))
        assertRejects(String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000))
        assertRejects(String(repeating: #"{"a":"#, count: 50_000))
        // Ordinary nesting is fine.
        XCTAssertNotNil(parse(String(repeating: "[", count: 30) + String(repeating: "]", count: 30)))
    }

    func testErrorOffsetPointsAtTheProblem() {
        XCTAssertThrowsError(try JSONParser.parse(#"{"email": }"#)) { error in
            XCTAssertEqual((error as? JSONParseError)?.offset, 10)
        }
        XCTAssertThrowsError(try JSONParser.parse("[1,2,]")) { error in
            XCTAssertEqual((error as? JSONParseError)?.offset, 5)
        }
    }
}

final class JSONWriterTests: XCTestCase {
    func testEscapesQuotesBackslashesAndControlCharacters() {
        XCTAssertEqual(JSON.string("a\"b\\c").jsonString, #""a\"b\\c""#)
        XCTAssertEqual(JSON.string("l1\nl2\r\tend").jsonString, #""l1\nl2\r\tend""#)
        XCTAssertEqual(JSON.string("\u{0}\u{1}\u{8}\u{C}\u{1F}").jsonString, #""\u0000\u0001\u0008\u000c\u001f""#)
        XCTAssertEqual(JSON.string("</script> é 😀").jsonString, "\"</script> é 😀\"", "non-ASCII stays UTF-8")
        // Longer than the writer's first buffer, escapes at both ends and in between.
        let long = "\"" + String(repeating: "abc\\", count: 100) + "\u{7F}\n"
        XCTAssertEqual(try JSONParser.parse(JSON.string(long).serialized()), .string(long))
        XCTAssertEqual(JSON.object([("", .string(""))]).jsonString, #"{"":""}"#)
    }

    func testEveryStringRoundTrips() throws {
        var all = ""
        for scalar in (0..<0x80).compactMap(Unicode.Scalar.init) { all.unicodeScalars.append(scalar) }
        all += "é中😀\u{2028}\u{FFFF}"
        let value = JSON.object([(all, .string(all))])
        XCTAssertEqual(try JSONParser.parse(value.serialized()), value)
    }

    func testNumbersAndLiterals() {
        XCTAssertEqual(JSON.int(-7).jsonString, "-7")
        for n: Int64 in [0, 9, 10, -1, 1_234_567_890, .max, .min] { XCTAssertEqual(JSON.int(n).jsonString, String(n)) }
        XCTAssertEqual(JSON.double(-1e14).jsonString, "-100000000000000.0")
        XCTAssertEqual(JSON.double(1e17).jsonString, String(1e17), "from 1e15 on: Swift's own shortest form")
        XCTAssertEqual(JSON.double(2.5).jsonString, "2.5")
        XCTAssertEqual(JSON.double(3).jsonString, "3.0")
        XCTAssertEqual(JSON.double(.nan).jsonString, "null")
        XCTAssertEqual(JSON.double(.infinity).jsonString, "null")
        XCTAssertEqual(JSON.array([.null, .bool(true), .bool(false)]).jsonString, "[null,true,false]")
    }

    func testObjectsKeepTheirKeyOrder() {
        let value: JSON = .object([("z", 1), ("a", [2, "x"]), ("m", .object([]))])
        XCTAssertEqual(value.jsonString, #"{"z":1,"a":[2,"x"],"m":{}}"#)
    }
}
