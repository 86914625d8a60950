import CRMCore
import HTTPClient

/// The shared way connectors talk HTTP: JSON in and out, and one classification of failures
/// (no answer or a 5xx/429 is a `ConnectorError`; any other answer is returned to the caller).
struct Transport: Sendable {
    let client: HTTPClient
    let vendor: String

    func send(_ request: HTTPClientRequest) async throws(ConnectorError) -> HTTPClientResponse {
        let response: HTTPClientResponse
        do {
            response = try await client.send(request)
        } catch {
            switch error.kind {
            case .timeout: throw ConnectorError(.timeout, detail: "\(vendor) did not answer in time (\(error.message))")
            default: throw ConnectorError(.unreachable, detail: "\(vendor) could not be reached: \(error.message)")
            }
        }
        if response.status >= 500 || response.status == 429 || response.status == 408 {
            let retry = response.header("Retry-After").map { " (Retry-After: \($0))" } ?? ""
            throw ConnectorError(.crmFailure, httpStatus: response.status, detail: "\(vendor) answered HTTP \(response.status)\(retry)",
                                 retryAfterSeconds: RetryPolicy.retryAfterSeconds(response.header("Retry-After")), response: json(response))
        }
        return response
    }

    /// The body as JSON, U+0000 replaced (U+FFFD): what a CRM answers is logged, and PostgreSQL
    /// stores no text holding U+0000 (the outcome would not be written, nor a record id or
    /// message taken from it).
    func json(_ response: HTTPClientResponse) -> JSON? {
        var containsNUL = false
        guard let json = try? response.body.withUnsafeBufferPointer({ try JSONParser.parse($0, containsNUL: &containsNUL) }) else { return nil }
        return containsNUL ? json.replacingNUL() : json
    }
}

enum FormEncoding {
    /// application/x-www-form-urlencoded
    static func encode(_ pairs: [(String, String)]) -> [UInt8] {
        Array(pairs.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&").utf8)
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "): out += "+"
            default: out += "%" + String(byte, radix: 16, uppercase: true).leftPad(2)
            }
        }
        return out
    }

    /// Percent-encoding for a URL query value or path segment (space as %20).
    static func percent(_ s: String) -> String { escape(s).replacingPlus() }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
    func replacingPlus() -> String { split(separator: "+", omittingEmptySubsequences: false).joined(separator: "%20") }
}

enum Base64URL {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 4 / 3 + 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)]]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
