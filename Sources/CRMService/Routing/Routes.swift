import CRMCore

/// Every route of the contract: the router matches these, and a test checks that
/// `/openapi.json` documents exactly this list.
public enum RouteID: String, Sendable, CaseIterable {
    case health, ready, openAPI, docs, metrics
    case validate, connect, status, disconnect, list
    case syncContact, syncEvent, listLogs, getLog, retryLog
    case fieldMapping, fieldMappings
}

public struct Route: Sendable {
    public let id: RouteID
    public let method: String
    /// Segments; `{name}` is a parameter.
    public let pattern: String
    /// Needs `X-User-Id` (every `/crm/*` route).
    public var needsUser: Bool { pattern.hasPrefix("/crm/") }
    /// Exempt from `X-API-Key`: the health checks (API.md), and the `/docs` page itself, which
    /// holds no data: a browser cannot send the header, so the page asks for the key and sends it
    /// when it fetches `/openapi.json` (which needs it, as every other route).
    public var isPublic: Bool { [.health, .ready, .docs].contains(id) }
    /// Takes a JSON body.
    public var hasJSONBody: Bool { [.validate, .connect, .syncContact, .syncEvent].contains(id) }

    let segments: [Substring]

    init(_ id: RouteID, _ method: String, _ pattern: String) {
        self.id = id
        self.method = method
        self.pattern = pattern
        segments = pattern.split(separator: "/")
    }

    /// The path parameters when `path` matches, else nil.
    func match(_ pathSegments: [Substring]) -> [String: String]? {
        guard pathSegments.count == segments.count else { return nil }
        var params: [String: String] = [:]
        for (pattern, actual) in zip(segments, pathSegments) {
            if pattern.hasPrefix("{") {
                params[String(pattern.dropFirst().dropLast())] = String(actual)
            } else if pattern != actual {
                return nil
            }
        }
        return params
    }
}

public enum Routes {
    public static let all: [Route] = [
        Route(.health, "GET", "/health"),
        Route(.ready, "GET", "/health/ready"),
        Route(.openAPI, "GET", "/openapi.json"),
        Route(.docs, "GET", "/docs"),
        Route(.metrics, "GET", "/metrics"),
        Route(.validate, "POST", "/crm/validate"),
        Route(.connect, "POST", "/crm/connect"),
        Route(.list, "GET", "/crm/list"),
        Route(.syncContact, "POST", "/crm/sync/contact"),
        Route(.syncEvent, "POST", "/crm/sync/event"),
        Route(.listLogs, "GET", "/crm/sync/logs"),
        Route(.getLog, "GET", "/crm/sync/logs/{id}"),
        Route(.retryLog, "POST", "/crm/sync/logs/{id}/retry"),
        Route(.fieldMappings, "GET", "/crm/field-mappings"),
        Route(.fieldMapping, "GET", "/crm/field-mappings/{crm_type}"),
        Route(.status, "GET", "/crm/{crm_type}/status"),
        Route(.disconnect, "DELETE", "/crm/{crm_type}/disconnect"),
    ]

    /// The route for this method and path, or 404 / 405 (with `Allow`).
    /// Literal segments win over parameters (`/crm/sync/logs` is never `{crm_type}`).
    static func resolve(method: String, path: String) -> Result<(Route, [String: String]), APIError> {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        let matches = all.compactMap { route in route.match(segments).map { (route, $0) } }
            .sorted { $0.0.segments.filter { $0.hasPrefix("{") }.count < $1.0.segments.filter { $0.hasPrefix("{") }.count }
        guard !matches.isEmpty, !path.hasSuffix("/") || path == "/" else { return .failure(.notFound()) }
        // The most specific pattern decides which methods exist at this path.
        let bestSpecificity = matches[0].0.segments.filter { $0.hasPrefix("{") }.count
        let candidates = matches.filter { $0.0.segments.filter { $0.hasPrefix("{") }.count == bestSpecificity }
        if let hit = candidates.first(where: { $0.0.method == method }) { return .success(hit) }
        if let hit = matches.first(where: { $0.0.method == method }) { return .success(hit) }
        let allowed = Array(Set(candidates.map(\.0.method))).sorted().joined(separator: ", ")
        return .failure(.http(status: 405, detail: "Method Not Allowed", headers: [("Allow", allowed)]))
    }
}
