@testable import FastCGI
import XCTest

final class FastCGIRecordsTests: XCTestCase {
    /// Reads records back: (type, request id, content) in order, checking padding and version.
    func parse(_ bytes: [UInt8]) throws -> [(type: UInt8, id: Int, content: [UInt8])] {
        var records: [(UInt8, Int, [UInt8])] = []
        var i = 0
        while i < bytes.count {
            XCTAssertGreaterThanOrEqual(bytes.count - i, 8, "a truncated header")
            XCTAssertEqual(bytes[i], 1, "version")
            let length = Int(bytes[i + 4]) << 8 | Int(bytes[i + 5]), padding = Int(bytes[i + 6])
            XCTAssertEqual((length + padding) % 8, 0, "records are padded to 8 bytes")
            records.append((bytes[i + 1], Int(bytes[i + 2]) << 8 | Int(bytes[i + 3]), Array(bytes[(i + 8)..<(i + 8 + length)])))
            i += 8 + length + padding
        }
        XCTAssertEqual(i, bytes.count)
        return records
    }

    func testSmallResponseIsOneStdoutRecordThenTheEnd() throws {
        let content = Array("Status: 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)
        let records = try parse(FastCGIRecords.response(requestID: 1, stdout: content))
        XCTAssertEqual(records.map(\.type), [6, 6, 3])
        XCTAssertEqual(records[0].content, content)
        XCTAssertEqual(records[1].content, [], "an empty FCGI_STDOUT ends the stream")
        XCTAssertEqual(records[2].content, [0, 0, 0, 0, 0, 0, 0, 0], "app status 0, FCGI_REQUEST_COMPLETE")
        XCTAssertTrue(records.allSatisfy { $0.id == 1 })
    }

    func testLargeResponseIsSplitIntoRecordsOfAtMost65535Bytes() throws {
        let content = (0..<150_000).map { UInt8($0 % 251) }
        let records = try parse(FastCGIRecords.response(requestID: 513, stdout: content))
        let stdout = records.filter { $0.type == 6 }
        XCTAssertEqual(stdout.map(\.content.count), [65_535, 65_535, 18_930, 0])
        XCTAssertEqual(Array(stdout.map(\.content).joined()), content)
        XCTAssertEqual(records.last?.type, 3)
        XCTAssertTrue(records.allSatisfy { $0.id == 513 }, "the request id's high byte is kept")
    }
}
