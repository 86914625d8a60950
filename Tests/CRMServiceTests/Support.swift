import CRMCore
import XCTest

@testable import CRMService

let testUser = "p9uOHM8ABHgwBYGT0dRpZmfyUWn1"
let testKey32 = "0123456789abcdef0123456789abcdef"

/// A request as the transport would hand it over; `body` gets `Content-Type: application/json`.
func request(_ method: String, _ uri: String, user: String? = testUser, headers: HTTPHeaders = [:],
             body: String? = nil, contentType: String? = "application/json") -> HTTPRequest {
    request(method, uri, user: user, headers: headers, bytes: body.map { Array($0.utf8) }, contentType: contentType)
}

func request(_ method: String, _ uri: String, user: String? = testUser, headers: HTTPHeaders = [:],
             bytes: [UInt8]?, contentType: String? = "application/json", contentLength: Int? = nil) -> HTTPRequest {
    var h = headers
    if let user { h["x-user-id"] = user }
    if bytes != nil, let contentType, h["content-type"] == nil { h["content-type"] = contentType }
    return HTTPRequest(method: method, uri: uri, headers: h, body: bytes ?? [], contentLength: contentLength)
}

func describe(_ loc: [ValidationIssue.Loc]) -> String {
    "[" + loc.map { if case let .key(k) = $0 { "\"\(k)\"" } else if case let .index(i) = $0 { "\(i)" } else { "?" } }.joined(separator: ",") + "]"
}

/// Reads like the JSON body a client gets: `detail` for plain errors, the issues for 422.
extension APIError {
    var detail: String? { if case let .http(_, d, _) = self { d } else { nil } }
    var issues: [ValidationIssue] { if case let .validation(i) = self { i } else { [] } }
    func header(_ name: String) -> String? {
        if case let .http(_, _, headers) = self { headers.last { $0.0.lowercased() == name.lowercased() }?.1 } else { nil }
    }
}

extension XCTestCase {
    func decode(_ request: HTTPRequest, apiKey: String? = nil, file: StaticString = #filePath, line: UInt = #line) -> Command? {
        switch Router(apiKey: apiKey.map(Secret.init)).decode(request).command {
        case let .success(command): return command
        case let .failure(error):
            XCTFail("\(request.method) \(request.path) should decode, got \(error)", file: file, line: line)
            return nil
        }
    }

    @discardableResult
    func decodeError(_ request: HTTPRequest, apiKey: String? = nil, status: Int, detail: String? = nil,
                     file: StaticString = #filePath, line: UInt = #line) -> APIError? {
        switch Router(apiKey: apiKey.map(Secret.init)).decode(request).command {
        case let .success(command):
            XCTFail("\(request.method) \(request.path) should fail with \(status), decoded \(command)", file: file, line: line)
            return nil
        case let .failure(error):
            XCTAssertEqual(error.status, status, "\(request.method) \(request.path): \(error)", file: file, line: line)
            if let detail { XCTAssertEqual(error.detail, detail, file: file, line: line) }
            return error
        }
    }

    /// Expects 422 with exactly these problems (any order), each as (loc, type).
    @discardableResult
    func assertIssues(_ request: HTTPRequest, _ expected: [([ValidationIssue.Loc], String)],
                      file: StaticString = #filePath, line: UInt = #line) -> [ValidationIssue] {
        guard let error = decodeError(request, status: 422, file: file, line: line) else { return [] }
        let got = error.issues.map { "\(describe($0.loc)) \($0.type)" }.sorted()
        let want = expected.map { "\(describe($0.0)) \($0.1)" }.sorted()
        XCTAssertEqual(got, want, "\(request.method) \(request.path)", file: file, line: line)
        for issue in error.issues { XCTAssertFalse(issue.msg.isEmpty, file: file, line: line) }
        return error.issues
    }
}

/// The configuration as if `env` were the process environment (and there were no `.env`).
func configReader(_ env: [String: String]) -> EnvironmentConfig {
    EnvironmentConfig(environment: env)
}
