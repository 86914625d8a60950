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
}
