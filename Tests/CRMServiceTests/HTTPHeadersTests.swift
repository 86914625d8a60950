import XCTest

@testable import CRMService

/// Request headers are a short list with one entry per name.
final class HTTPHeadersTests: XCTestCase {
    func testReadSetReplaceAndRemove() {
        var h: HTTPHeaders = ["x-user-id": "u1", "content-type": "application/json"]
        XCTAssertEqual(h["x-user-id"], "u1")
        XCTAssertNil(h["x-api-key"])
        XCTAssertNil(h["X-User-Id"], "names are stored lower-cased; lookups are exact")
        h["x-user-id"] = "u2"
        h["x-api-key"] = "k"
        XCTAssertEqual(h.pairs.map(\.name), ["x-user-id", "content-type", "x-api-key"])
        XCTAssertEqual(h["x-user-id"], "u2")
        h["content-type"] = nil
        h["absent"] = nil
        XCTAssertEqual(h.pairs.map(\.name), ["x-user-id", "x-api-key"])
        XCTAssertNil(h["content-type"])
    }

    func testALiteralKeepsEachNameOnceWithTheLastValue() {
        let h: HTTPHeaders = ["origin": "a", "origin": "b"]
        XCTAssertEqual(h.pairs.count, 1)
        XCTAssertEqual(h["origin"], "b")
    }

    func testTheRequestReadsThroughThem() {
        let r = HTTPRequest(method: "GET", uri: "/crm/list", headers: HTTPHeaders(pairs: [("x-user-id", "u1"), ("prefer", "respond-async")]))
        XCTAssertEqual(r.header("x-user-id"), "u1")
        XCTAssertEqual(r.header("prefer"), "respond-async")
        XCTAssertNil(r.header("origin"))
    }
}
