import XCTest

@testable import FastCGI

/// The CGI parameters nginx sends (see nginx.conf), read into what HTTP handling needs.
final class CGIParametersTests: XCTestCase {
    /// The parsed request, its headers as a dictionary (each name must come once).
    private func parse(_ entries: [String]) -> (method: String, uri: String, headers: [String: String], contentLength: Int) {
        let owned = entries.map { strdup($0)! }
        defer { owned.forEach { free($0) } }
        let r = FastCGIRequest.parse(parameters: owned.map { UnsafePointer($0) })
        return (r.method, r.uri, Dictionary(uniqueKeysWithValues: r.headers.map { ($0.name, $0.value) }), r.contentLength)
    }

    func testRequestLineHeadersAndLength() {
        let r = parse([
            "GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=POST", "REQUEST_URI=/crm/sync/logs?limit=5&x=a=b",
            "QUERY_STRING=limit=5&x=a=b", "CONTENT_TYPE=application/json", "CONTENT_LENGTH=42", "SCRIPT_NAME=/crm/sync/logs",
            "HTTP_X_USER_ID=user_1", "HTTP_X_API_KEY=k=v", "HTTP_IDEMPOTENCY_KEY=abc", "HTTP_CONTENT_TYPE=application/json",
            "REMOTE_ADDR=127.0.0.1", "HTTP_PROXY=",
        ])
        XCTAssertEqual(r.method, "POST")
        XCTAssertEqual(r.uri, "/crm/sync/logs?limit=5&x=a=b")
        XCTAssertEqual(r.contentLength, 42)
        // Lower-case names with dashes; only the first "=" separates; other parameters are not headers.
        XCTAssertEqual(r.headers, ["x-user-id": "user_1", "x-api-key": "k=v", "idempotency-key": "abc",
                                   "content-type": "application/json", "proxy": ""])
    }

    func testContentTypeIsTheServersValueNotJoinedWithTheHeaderCopy() {
        // nginx sends CONTENT_TYPE and HTTP_CONTENT_TYPE, in either order.
        for entries in [["CONTENT_TYPE=application/json", "HTTP_CONTENT_TYPE=application/json"],
                        ["HTTP_CONTENT_TYPE=application/json", "CONTENT_TYPE=application/json"]] {
            XCTAssertEqual(parse(entries).headers["content-type"], "application/json", "\(entries)")
        }
    }

    func testAHeaderSentTwiceIsJoinedSoItCanBeRefused() {
        let r = parse(["HTTP_X_USER_ID=alice", "HTTP_X_USER_ID=bob"])
        XCTAssertEqual(r.headers["x-user-id"], "alice, bob")
    }

    func testWithoutRequestURIThePathComesFromScriptNameAndQuery() {
        XCTAssertEqual(parse(["SCRIPT_NAME=/health", "QUERY_STRING=a=1"]).uri, "/health?a=1")
        XCTAssertEqual(parse(["SCRIPT_NAME=/health", "QUERY_STRING="]).uri, "/health")
        let bare = parse([])
        XCTAssertEqual([bare.method, bare.uri], ["GET", "/"])
        XCTAssertEqual(bare.contentLength, 0)
    }

    func testMalformedEntriesAndLengthsAreIgnored() {
        let r = parse(["NOEQUALS", "CONTENT_LENGTH=12x", "HTTP_X_A=\u{00E9}t\u{00E9}"])
        XCTAssertEqual(r.contentLength, 0)
        XCTAssertEqual(r.headers, ["x-a": "\u{00E9}t\u{00E9}"])
    }

    /// CONTENT_LENGTH is read from its digits in place: anything but 1–18 ASCII digits is 0
    /// (nginx sends it empty for a request without a body).
    func testContentLengthDigits() {
        for (text, expected) in [("", 0), ("0", 0), ("7", 7), ("007", 7), ("1048576", 1_048_576), ("123456789012345678", 123_456_789_012_345_678),
                                 ("1234567890123456789", 0), ("-5", 0), ("+42", 0), (" 42", 0), ("42 ", 0), ("4_2", 0), ("٤٢", 0)] {
            XCTAssertEqual(parse(["CONTENT_LENGTH=\(text)"]).contentLength, expected, text)
        }
        XCTAssertNil(parse(["CONTENT_TYPE=", "HTTP_X_USER_ID=u"]).headers["content-type"], "an empty CONTENT_TYPE is no header")
    }
}
