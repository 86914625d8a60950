import CRMCore

/// Every route of the contract: the router matches these, and a test checks that
/// `/openapi.json` documents exactly this list. The raw values are 0, 1, 2, … (`RouteLabel`
/// indexes tables by them).
public enum RouteID: Int, Sendable, CaseIterable {
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
    public let needsUser: Bool
    /// Exempt from `X-API-Key`: the health checks (API.md), and the `/docs` page itself, which
    /// holds no data: a browser cannot send the header, so the page asks for the key and sends it
    /// when it fetches `/openapi.json` (which needs it, as every other route).
    public var isPublic: Bool {
        switch id {
        case .health, .ready, .docs: true
        default: false
        }
    }
    /// Takes a JSON body.
    public var hasJSONBody: Bool {
        switch id {
        case .validate, .connect, .syncContact, .syncEvent: true
        default: false
        }
    }

    let segments: [Substring]
    /// How many segments are parameters: fewer is more specific (`/crm/sync/logs` beats `/crm/{crm_type}/...`).
    let parameterCount: Int

    init(_ id: RouteID, _ method: String, _ pattern: String) {
        self.id = id
        self.method = method
        self.pattern = pattern
        needsUser = pattern.hasPrefix("/crm/")
        segments = pattern.split(separator: "/")
        parameterCount = segments.filter { $0.hasPrefix("{") }.count
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

    /// The routes without parameters, by their exact path.
    static let literal: [String: [Route]] = Dictionary(grouping: all.filter { $0.parameterCount == 0 }, by: \.pattern)

    /// The route for this method and path, or 404 / 405 (with `Allow`).
    /// Literal segments win over parameters (`/crm/sync/logs` is never `{crm_type}`).
    static func resolve(method: String, path: String) -> Result<(Route, [String: String]), APIError> {
        // Most requests name a route without parameters exactly: one lookup, no scan.
        if let hit = literal[path]?.first(where: { $0.method == method }) { return .success((hit, [:])) }
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !path.hasSuffix("/") || path == "/" else { return .failure(.notFound()) }
        // The most specific patterns matching this path decide which methods exist at it.
        var best: [(Route, [String: String])] = []
        for route in all where best.isEmpty || route.parameterCount <= best[0].0.parameterCount {
            guard let params = route.match(segments) else { continue }
            if let current = best.first, route.parameterCount < current.0.parameterCount { best.removeAll() }
            best.append((route, params))
        }
        guard !best.isEmpty else { return .failure(.notFound()) }
        if let hit = best.first(where: { $0.0.method == method }) { return .success(hit) }
        let allowed = Array(Set(best.map(\.0.method))).sorted().joined(separator: ", ")
        return .failure(.http(status: 405, detail: "Method Not Allowed", headers: [("Allow", allowed)]))
    }
}

/// How metrics and the request log name a request's route: the matched route's pattern
/// (`/crm/{crm_type}/status`), also when the request was refused after matching it (401, 413,
/// 415, 422, an unsupported `crm_type`'s 404), `preflight` (CORS) or `unmatched` (no route:
/// 404, 405).
public struct RouteLabel: Sendable {
    /// 0..<`count`: indexes the metrics' per-thread tables.
    let index: Int
    public let name: String

    static let preflight = RouteLabel(index: RouteID.allCases.count, name: "preflight")
    static let unmatched = RouteLabel(index: RouteID.allCases.count + 1, name: "unmatched")
    static let count = RouteID.allCases.count + 2

    /// The route's label (its pattern, as the contract writes it).
    static func of(_ id: RouteID) -> RouteLabel { byRoute[id.rawValue] }
    private static let byRoute: [RouteLabel] = RouteID.allCases.map { id in
        RouteLabel(index: id.rawValue, name: Routes.all.first { $0.id == id }!.pattern)
    }
}
