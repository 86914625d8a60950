/// One problem in a request, in FastAPI's shape: `{"loc": [...], "msg": "...", "type": "..."}`.
public struct ValidationIssue: Sendable, Equatable {
    public enum Loc: Sendable, Equatable { case key(String), index(Int) }
    public var loc: [Loc]
    public var msg: String
    public var type: String

    public init(_ loc: [Loc], _ msg: String, type: String) {
        self.loc = loc
        self.msg = msg
        self.type = type
    }

    public var json: JSON {
        .object([
            ("loc", .array(loc.map { if case let .key(k) = $0 { .string(k) } else if case let .index(i) = $0 { .int(Int64(i)) } else { .null } })),
            ("msg", .string(msg)),
            ("type", .string(type)),
        ])
    }
}

extension ValidationIssue.Loc: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .key(value) }
    public init(integerLiteral value: Int) { self = .index(value) }
}

/// An error that becomes an HTTP answer. Messages must never carry a secret.
public enum APIError: Error, Sendable, Equatable {
    /// `{"detail": message}` with this status and extra headers.
    case http(status: Int, detail: String, headers: [(String, String)] = [])
    /// 422 `{"detail": [issues]}`.
    case validation([ValidationIssue])

    public static func == (lhs: APIError, rhs: APIError) -> Bool {
        switch (lhs, rhs) {
        case let (.http(s1, d1, h1), .http(s2, d2, h2)): return s1 == s2 && d1 == d2 && h1.map { "\($0):\($1)" } == h2.map { "\($0):\($1)" }
        case let (.validation(a), .validation(b)): return a == b
        default: return false
        }
    }

    public static func badRequest(_ detail: String) -> APIError { .http(status: 400, detail: detail) }
    public static func unauthorized(_ detail: String) -> APIError { .http(status: 401, detail: detail) }
    public static func notFound(_ detail: String = "Not Found") -> APIError { .http(status: 404, detail: detail) }
    public static func conflict(_ detail: String) -> APIError { .http(status: 409, detail: detail) }
    public static func badGateway(_ detail: String) -> APIError { .http(status: 502, detail: detail) }
    public static func serviceUnavailable(_ detail: String, retryAfter: Int = 5) -> APIError {
        .http(status: 503, detail: detail, headers: [("Retry-After", String(retryAfter))])
    }
    public static func invalid(_ loc: [ValidationIssue.Loc], _ msg: String, type: String) -> APIError {
        .validation([ValidationIssue(loc, msg, type: type)])
    }

    public var status: Int {
        switch self {
        case let .http(status, _, _): return status
        case .validation: return 422
        }
    }
}
