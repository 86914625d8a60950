import XCTest

@testable import FastCGI

/// The CGI response libfcgi (or FastCGIRecords) carries to nginx: status line, headers, length, body.
final class CGIResponseTests: XCTestCase {
    private func text(_ response: FastCGIResponse) -> String {
        String(decoding: FastCGIServer.cgiResponse(response), as: UTF8.self)
    }

    func testStatusHeadersLengthAndBody() {
        let response = FastCGIResponse(status: 200, reason: "OK",
                                       headers: [("Content-Type", "application/json; charset=utf-8"), ("X-Request-Id", "abc")],
                                       body: Array(#"{"ok":true}"#.utf8))
        XCTAssertEqual(text(response), "Status: 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nX-Request-Id: abc\r\n"
                                       + "Content-Length: 11\r\n\r\n{\"ok\":true}")
    }

    func testEmptyBodyAndEveryStatusWidth() {
        for (status, reason) in [(0, "Status"), (7, "Status"), (204, "No Content"), (1234, "Status")] {
            XCTAssertEqual(text(FastCGIResponse(status: status, reason: reason, headers: [], body: [])),
                           "Status: \(status) \(reason)\r\nContent-Length: 0\r\n\r\n")
        }
        let large = [UInt8](repeating: 0x61, count: 1_048_576)
        XCTAssertTrue(text(FastCGIResponse(status: 200, reason: "OK", headers: [], body: large)).hasPrefix("Status: 200 OK\r\nContent-Length: 1048576\r\n\r\naaa"))
    }

    func testAHeaderValueCannotSplitTheResponse() {
        let response = FastCGIResponse(status: 400, reason: "Bad Request", headers: [("Location", "/a\r\nSet-Cookie: x=1\n")], body: [])
        XCTAssertEqual(text(response), "Status: 400 Bad Request\r\nLocation: /aSet-Cookie: x=1\r\nContent-Length: 0\r\n\r\n")
    }
}
