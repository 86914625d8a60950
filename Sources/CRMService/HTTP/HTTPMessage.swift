import CRMCore

/// A request as the application sees it: no FastCGI, no sockets.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path without the query string, percent-decoding not applied.
    public var path: String
    public var query: String
    /// Lower-cased header names (`x-user-id`, `content-type`, ...).
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// The declared length (CONTENT_LENGTH), which may exceed what was read when too large.
    public var contentLength: Int

    public init(method: String, path: String, query: String = "", headers: HTTPHeaders = [:], body: [UInt8] = [], contentLength: Int? = nil) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.contentLength = contentLength ?? body.count
    }

    /// From a `REQUEST_URI` such as `/crm/sync/logs?limit=5`.
    public init(method: String, uri: String, headers: HTTPHeaders = [:], body: [UInt8] = [], contentLength: Int? = nil) {
        // The "?" found in the bytes (the generic `firstIndex` walked String indices: ~300
        // instructions for "/crm/list", on every request).
        let question = UInt8(ascii: "?")
        let mark = uri.utf8.withContiguousStorageIfAvailable { $0.firstIndex(of: question) } ?? Array(uri.utf8).firstIndex(of: question)
        let path = mark.map { String(decoding: uri.utf8.prefix($0), as: UTF8.self) } ?? uri
        let query = mark.map { String(decoding: uri.utf8.dropFirst($0 + 1), as: UTF8.self) } ?? ""
        self.init(method: method, path: path.isEmpty ? "/" : path, query: query, headers: headers, body: body, contentLength: contentLength)
    }

    public func header(_ name: String) -> String? { headers[name] }
}

/// Request headers by lower-cased name, each name once. A request carries a handful, read a
/// few times each: a list searched in order costs less than a dictionary's hashing.
public struct HTTPHeaders: Sendable, ExpressibleByDictionaryLiteral {
    public private(set) var pairs: [(name: String, value: String)]

    /// `pairs` with distinct names (as FastCGI parsing gives them).
    public init(pairs: [(name: String, value: String)]) { self.pairs = pairs }

    public init(dictionaryLiteral elements: (String, String)...) {
        pairs = []
        for (name, value) in elements { self[name] = value }
    }

    public subscript(name: String) -> String? {
        get { pairs.firstIndex { $0.name == name }.map { pairs[$0].value } }
        set {
            let existing = pairs.firstIndex { $0.name == name }
            switch (existing, newValue) {
            case let (i?, value?): pairs[i].value = value
            case let (i?, nil): pairs.remove(at: i)
            case let (nil, value?): pairs.append((name, value))
            case (nil, nil): break
            }
        }
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static let jsonContentType = "application/json; charset=utf-8"

    public static func json(_ status: Int, _ value: JSON, headers: [(String, String)] = []) -> HTTPResponse {
        json(status, bytes: value.serialized(), headers: headers)
    }

    /// A JSON body already written.
    public static func json(_ status: Int, bytes: [UInt8], headers: [(String, String)] = []) -> HTTPResponse {
        // Room for the headers every answer gets afterwards (X-Request-Id, CORS): adding them
        // then needs no second allocation.
        var all: [(String, String)] = []
        all.reserveCapacity(headers.count + 4)
        all.append(("Content-Type", jsonContentType))
        all += headers
        return HTTPResponse(status: status, headers: all, body: bytes)
    }

    public static func error(_ error: APIError) -> HTTPResponse {
        switch error {
        case let .http(status, detail, headers):
            return json(status, .object([("detail", .string(detail))]), headers: headers)
        case let .validation(issues):
            return json(422, .object([("detail", .array(issues.map(\.json)))]))
        }
    }

    public func header(_ name: String) -> String? {
        headers.last(where: { $0.0.lowercased() == name.lowercased() })?.1
    }

    public var bodyJSON: JSON? { try? JSONParser.parse(body) }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 409: "Conflict"
        case 413: "Content Too Large"
        case 415: "Unsupported Media Type"
        case 422: "Unprocessable Content"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        default: "Status"
        }
    }
}

/// Decoding of `application/x-www-form-urlencoded` query strings.
enum QueryString {
    static func parse(_ query: String) -> [(String, String)] {
        query.split(separator: "&").compactMap { part in
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = kv.first.map({ decode(String($0)) }), !key.isEmpty else { return nil }
            return (key, kv.count > 1 ? decode(String(kv[1])) : "")
        }
    }

    static func decode(_ s: String) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(s.utf8).makeIterator()
        while let b = iterator.next() {
            if b == UInt8(ascii: "+") { bytes.append(0x20) }
            else if b == UInt8(ascii: "%"), let h = iterator.next(), let l = iterator.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16) {
                bytes.append(v)
            } else { bytes.append(b) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
