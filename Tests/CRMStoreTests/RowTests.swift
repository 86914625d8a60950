import XCTest

@testable import CRMStore

/// Reading values out of a result row (no database needed).
final class RowTests: XCTestCase {
    private func row(_ pairs: [(String, String?)]) -> Row { ResultData.rows(columns: pairs.map(\.0), values: [pairs.map(\.1)])[0] }

    func testTimestampsBecomeISO8601UTC() {
        // Sessions run with TimeZone=UTC and DateStyle=ISO: PostgreSQL's text is "date time+00",
        // with as many fractional digits as the value has.
        let r = row([("a", "2026-11-28 21:53:07.123456+00"), ("b", "2026-11-28 21:53:07+00"), ("c", nil), ("d", "2026-11-28 21:53:07.5+00")])
        XCTAssertEqual(r.timestamp("a")?.text, "2026-11-28T21:53:07.123456Z")
        XCTAssertEqual(r.timestamp("b")?.text, "2026-11-28T21:53:07Z")
        XCTAssertEqual(r.timestamp("d")?.text, "2026-11-28T21:53:07.5Z")
        XCTAssertNil(r.timestamp("c"))
        XCTAssertNil(r.timestamp("missing"))
    }

    func testOnlyTheFirstSpaceAndAZeroOffsetAreRewritten() {
        // Not what a session here produces, but nothing is lost or invented if it ever happens.
        let r = row([("offset", "2026-11-28 21:53:07+01"), ("plain", "2026-11-28"), ("short", "+00"), ("two", "a b c+00")])
        XCTAssertEqual(r.timestamp("offset")?.text, "2026-11-28T21:53:07+01")
        XCTAssertEqual(r.timestamp("plain")?.text, "2026-11-28")
        XCTAssertEqual(r.timestamp("short")?.text, "+00")
        XCTAssertEqual(r.timestamp("two")?.text, "aTb cZ")
    }

    func testValuesByPositionAndPositionsPastTheEnd() {
        // Two rows: a position past the first row's columns must not read the next row's.
        let rows = ResultData.rows(columns: ["flag", "json", "at"], values: [["t", "[1]", "2026-11-28 21:53:07+00"], ["f", "{}", nil]])
        XCTAssertEqual(rows[0].bool(at: 0), true)
        XCTAssertEqual(rows[0].json(at: 1), [1])
        XCTAssertEqual(rows[0].timestamp(at: 2)?.text, "2026-11-28T21:53:07Z")
        XCTAssertNil(rows[1].timestamp(at: 2))
        for r in rows {
            XCTAssertNil(r.bool(at: 3))
            XCTAssertNil(r.json(at: -1))
            XCTAssertNil(r.timestamp(at: 3))
            XCTAssertNil(r.string(at: 3))
        }
    }

    func testValuesByColumnName() {
        let r = row([("n", "42"), ("flag", "t"), ("text", "x"), ("json", #"{"a":[1]}"#)])
        XCTAssertEqual(r.int("n"), 42)
        XCTAssertEqual(r.bool("flag"), true)
        XCTAssertEqual(r.string("text"), "x")
        XCTAssertEqual(r.json("json")?["a"], [1])
        XCTAssertThrowsError(try r.require("missing"))
    }

    func testRowsShareOneBufferAndKeepNullsAndEmptyValuesApart() {
        let rows = ResultData.rows(columns: ["id", "note", "flag"], values: [["1", "", "f"], ["2", nil, "true"], ["3", "é\u{0}x", nil]])
        XCTAssertEqual(rows.map { $0.string("id") }, ["1", "2", "3"])
        XCTAssertEqual(rows.map { $0.string("note") }, ["", nil, "é\u{0}x"])
        XCTAssertEqual(rows.map { $0.bool("flag") }, [false, true, nil])
        XCTAssertEqual(rows.map { $0.string(at: 1) }, ["", nil, "é\u{0}x"])
        XCTAssertNil(rows[0].string(at: 3))
        XCTAssertNil(rows[0].json("note"), "an empty value is not JSON")
    }
}
