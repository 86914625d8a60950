import XCTest

@testable import CRMStore

/// The prepared-statement cache hashes a statement by samples of its text; it must still tell
/// every text apart.
final class StatementKeyTests: XCTestCase {
    func testTextsThatShareEverySampleAreStillDifferentKeys() {
        // Same length, same first, middle and last bytes: only the unsampled bytes differ.
        let a = "SELECT 1 FROM crm.crm_integrations WHERE user_id = $1 AND crm_type = $2 ORDER BY 1"
        let b = "SELECT 1 FROM crm.crm_integrationz WHERE user_id = $1 AND crm_type = $2 ORDER BY 1"
        XCTAssertEqual(a.utf8.count, b.utf8.count)
        typealias Key = Connection.StatementKey
        XCTAssertEqual(Key(text: a).hashValue, Key(text: b).hashValue, "the test should exercise a hash collision")
        var cache: [Key: String] = [Key(text: a): "crm_1"]
        XCTAssertNil(cache[Key(text: b)])
        cache[Key(text: b)] = "crm_2"
        XCTAssertEqual(cache[Key(text: a)], "crm_1")
        XCTAssertEqual(cache[Key(text: b)], "crm_2")
        // A text built at run time (as every SQL value is) finds the one stored before.
        let built = "SELECT 1 FROM crm.crm_integrations WHERE user_id = $\(1) AND crm_type = $2 ORDER BY 1"
        XCTAssertEqual(cache[Key(text: built)], "crm_1")
    }

    func testShortTextsAreHashedWhole() {
        var cache: [Connection.StatementKey: Int] = [:]
        for text in ["", "a", "ab", "SELECT", "SELECT 1"] { cache[.init(text: text)] = text.count }
        XCTAssertEqual(cache.count, 5)
        XCTAssertEqual(cache[.init(text: "ab")], 2)
    }
}
