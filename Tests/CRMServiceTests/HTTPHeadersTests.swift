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

    /// REQUEST_URI splits at its first "?" into path and query (percent-decoding comes later).
    func testTheURISplitsIntoPathAndQuery() {
        for (uri, path, query) in [("/crm/list", "/crm/list", ""), ("/crm/sync/logs?limit=5&x=a=b", "/crm/sync/logs", "limit=5&x=a=b"),
                                   ("/x?", "/x", ""), ("?a=1", "/", "a=1"), ("", "/", ""), ("/a??b", "/a", "?b"),
                                   ("/caf%C3%A9/é?q=ü&r=?", "/caf%C3%A9/é", "q=ü&r=?")] {
            let r = HTTPRequest(method: "GET", uri: uri)
            XCTAssertEqual(r.path, path, uri)
            XCTAssertEqual(r.query, query, uri)
        }
    }
}
