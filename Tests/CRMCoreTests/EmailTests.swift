import CRMCore
import XCTest

final class EmailTests: XCTestCase {
    func testAddressesTheContactSchemaAccepts() {
        for ok in ["a@b.co", "first.last+tag@example.com", "x@sub.domain.example", "ünï@exämple.de", "o'brien@example.ie"] {
            XCTAssertTrue(Contact.isEmail(ok), ok)
        }
    }

    func testAddressesItRefuses() {
        let bad = [
            "", "plain", "@example.com", "a@", "a@b", "a@@b.co", "a@b@c.co", "a@.b.co", "a@b.co.", "a@b..co",
            "a b@c.co", "a@b.co ", "a,b@c.co", "<a@b.co>", "\"a\"@b.co", "a@b.co\n", "a\u{00A0}b@c.co", "a@b\u{2028}.co",
            String(repeating: "x", count: 65) + "@b.co",
        ]
        for address in bad { XCTAssertFalse(Contact.isEmail(address), address.debugDescription) }
        XCTAssertTrue(Contact.isEmail(String(repeating: "x", count: 64) + "@b.co"), "64 bytes of local part are allowed")
    }
}
