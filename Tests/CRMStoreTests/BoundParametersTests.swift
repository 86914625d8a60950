import XCTest

@testable import CRMStore

/// Bound parameters go to libpq as one buffer of NUL-terminated strings (NULL for nil).
final class BoundParametersTests: XCTestCase {
    func testValuesNullsAndEmptyStringsKeepTheirPlaces() {
        // Small parameters go through a stack buffer, big ones (over 2 KiB in all) a heap one.
        for big in [300, 5000] {
            let values: [String?] = ["user_1", nil, "", "Tél \"x\"", String(repeating: "a", count: big), nil]
            let seen: [String?] = values.withOptionalCStrings { pointers in
                (0..<values.count).map { i in pointers![i].map { String(cString: $0) } }
            }
            XCTAssertEqual(seen, values)
        }
    }

    func testNoParametersPassNoArray() {
        XCTAssertTrue(([] as [String?]).withOptionalCStrings { $0 == nil })
    }

    func testAFixedStatementCountsItsPlaceholdersAndBindsValuesInOrder() {
        XCTAssertEqual(SQL.Fixed("SELECT 1").parameterCount, 0)
        XCTAssertEqual(SQL.Fixed("SELECT $1").parameterCount, 1)
        XCTAssertEqual(SQL.Fixed("SELECT $2, $1 WHERE a = $12 OR b = $3::int").parameterCount, 12)
        XCTAssertEqual(SQL.Fixed("SELECT $$text$$, $1").parameterCount, 1, "a dollar quote is not a placeholder")
        let sql = SQL.Fixed("SELECT $1::text, $2::text")("a", nil)
        XCTAssertEqual(sql.text, "SELECT $1::text, $2::text")
        XCTAssertEqual(sql.parameters, ["a", nil])
        XCTAssertFalse(sql.plannedPerCall)
    }

    func testAFixedStatementRunsLikeTheInterpolatedOne() throws {
        let c = try ScratchDatabase.create(for: self).connect()
        let fixed = SQL.Fixed("SELECT $1::text AS a, $2::text IS NULL AS missing, $3::int + 1 AS n")
        for _ in 0..<2 {  // prepared on the first call, then run by name
            let row = try XCTUnwrap(c.execute(fixed("it's; DROP TABLE x", nil, "41")).first)
            XCTAssertEqual(row.string("a"), "it's; DROP TABLE x")
            XCTAssertEqual(row.bool("missing"), true)
            XCTAssertEqual(row.int("n"), 42)
        }
    }
}
