/// The FastCGI records that answer a request (FastCGI 1.0, section 3.3 and 5.5): the CGI
/// response as FCGI_STDOUT records of at most 65,535 bytes each, padded to 8, the empty
/// FCGI_STDOUT that ends the stream, and FCGI_END_REQUEST (status 0, FCGI_REQUEST_COMPLETE).
/// Used for requests answered later, whose connection the worker has taken over from libfcgi.
public enum FastCGIRecords {
    static let stdout: UInt8 = 6
    static let endRequest: UInt8 = 3

    public static func response(requestID: Int, stdout content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(content.count + content.count / 65_535 * 16 + 40)
        var offset = 0
        while offset < content.count {
            let length = min(65_535, content.count - offset)
            let padding = (8 - length % 8) % 8
            out += header(type: stdout, requestID: requestID, length: length, padding: padding)
            out += content[offset..<offset + length]
            out += repeatElement(0, count: padding)
            offset += length
        }
        out += header(type: stdout, requestID: requestID, length: 0, padding: 0)
        out += header(type: endRequest, requestID: requestID, length: 8, padding: 0)
        out += [0, 0, 0, 0, 0, 0, 0, 0]  // appStatus 0, FCGI_REQUEST_COMPLETE, reserved
        return out
    }

    static func header(type: UInt8, requestID: Int, length: Int, padding: Int) -> [UInt8] {
        [1, type, UInt8(requestID >> 8 & 0xFF), UInt8(requestID & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), UInt8(padding), 0]
    }
}
