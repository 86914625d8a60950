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

    /// Line breaks are found eight bytes at a time and then byte by byte: one at every place
    /// in values of every length up to 24, and values of any bytes, must come out without them.
    func testLineBreaksAreDroppedAtEveryPosition() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...24 {
            for position in -1..<length {
                for lineBreak in [UInt8(0x0D), 0x0A] {
                    var value = (0..<length).map { _ in UInt8.random(in: 0x20...0x7E, using: &generator) }
                    if position >= 0 { value[position] = lineBreak }
                    let text = String(decoding: value, as: UTF8.self)
                    let expected = String(decoding: value.filter { $0 != 0x0D && $0 != 0x0A }, as: UTF8.self)
                    let response = FastCGIResponse(status: 200, reason: "OK", headers: [("X-Value", text)], body: [])
                    XCTAssertEqual(self.text(response), "Status: 200 OK\r\nX-Value: \(expected)\r\nContent-Length: 0\r\n\r\n")
                }
            }
        }
        // Bytes above 0x7F (UTF-8) and next to 0x0D / 0x0A in value (0x8D, 0x0C) pass through.
        let unicode = "Zoë \u{8D}\u{0C}\u{0B}ab\r\ncd—ef"
        XCTAssertEqual(text(FastCGIResponse(status: 200, reason: "OK", headers: [("X-Name", unicode)], body: [])),
                       "Status: 200 OK\r\nX-Name: Zoë \u{8D}\u{0C}\u{0B}abcd—ef\r\nContent-Length: 0\r\n\r\n")
    }
}
