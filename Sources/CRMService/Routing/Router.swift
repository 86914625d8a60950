import CRMCore

/// Turns a transport-free request into a typed `Command`, or the FastAPI-style error
/// that a client gets instead. No I/O here: the whole HTTP surface is testable in-process.
public struct Router: Sendable {
    public static let maxBodyBytes = 1 << 20
    /// The keys a sync body may have.
    static func isContactBodyKey(_ key: String) -> Bool { key == "crm_types" || Contact.isField(key) }
    static func isEventBodyKey(_ key: String) -> Bool { key == "crm_types" || Event.isField(key) }

    public let apiKey: Secret?

    public init(apiKey: Secret?) { self.apiKey = apiKey }

    /// What a request decoded to, and by which route: `route` is nil only when no route
    /// matched (404, 405), so metrics and the request log can name the route of a request
    /// refused after matching (401, 413, 415, 422, …).
    public struct Decoded: Sendable {
        public let route: RouteID?
        public let command: Result<Command, APIError>
    }

    public func decode(_ request: HTTPRequest) -> Decoded {
        switch Routes.resolve(method: request.method, path: request.path) {
        case let .failure(error): return Decoded(route: nil, command: .failure(error))
        case let .success((route, params)): return Decoded(route: route.id, command: decode(request, route: route, params: params))
        }
    }

    private func decode(_ request: HTTPRequest, route: Route, params: [String: String]) -> Result<Command, APIError> {
        if let apiKey, !route.isPublic {
            guard let given = request.header("x-api-key"), Self.constantTimeEquals(given, apiKey.revealed) else {
                return .failure(.unauthorized("Invalid or missing API key"))
            }
        }
        var user: UserID?
        if route.needsUser {
            guard let raw = request.header("x-user-id"), !raw.isEmpty else {
                return .failure(.unauthorized("Missing X-User-Id header"))
            }
            guard let valid = UserID(raw) else {
                return .failure(.badRequest("Invalid X-User-Id header: expected 1-128 characters of A-Z, a-z, 0-9, _ and -"))
            }
            user = valid
        }
        var body: JSON = .null
        if route.hasJSONBody {
            switch Self.jsonBody(request) {
            case let .failure(error): return .failure(error)
            case let .success(json): body = json
            }
        }
        return command(route, params: params, user: user, body: body, request: request)
    }

    private func command(_ route: Route, params: [String: String], user: UserID?, body: JSON, request: HTTPRequest) -> Result<Command, APIError> {
        // `user` is set for every /crm/* route (checked above); the others never read it.
        guard let user else { return publicCommand(route.id) }
        switch route.id {
        case .health: return .success(.health)
        case .ready: return .success(.ready)
        case .openAPI: return .success(.openAPI)
        case .docs: return .success(.docs)
        case .metrics: return .success(.metrics)
        case .list: return .success(.list(user))
        case .fieldMappings: return .success(.fieldMappings)
        case .fieldMapping: return pathCRMType(params).map { .fieldMapping($0) }
        case .status: return pathCRMType(params).map { .status(user, $0) }
        case .disconnect: return pathCRMType(params).map { .disconnect(user, $0) }
        case .getLog: return pathLogID(params).map { .getLog(user, id: $0) }
        case .retryLog: return pathLogID(params).map { .retryLog(user, id: $0) }
        case .validate: return Self.validateBody(body).map { .validate($0.0, $0.1) }
        case .connect: return Self.connectBody(body).map { .connect(user, $0.0, $0.1, $0.2) }
        case .syncContact:
            return Self.contactBody(body).flatMap { contact, targets in
                Self.syncOptions(request).map { .syncContact(user, contact, targets: targets, $0) }
            }
        case .syncEvent:
            return Self.eventBody(body).flatMap { event, targets in
                Self.syncOptions(request).map { .syncEvent(user, event, targets: targets, $0) }
            }
        case .listLogs: return Self.logQuery(request.query).map { .listLogs(user, $0) }
        }
    }

    private func publicCommand(_ id: RouteID) -> Result<Command, APIError> {
        switch id {
        case .health: return .success(.health)
        case .ready: return .success(.ready)
        case .openAPI: return .success(.openAPI)
        case .docs: return .success(.docs)
        case .metrics: return .success(.metrics)
        default: return .failure(.unauthorized("Missing X-User-Id header"))
        }
    }

    // MARK: - Path parameters

    private func pathCRMType(_ params: [String: String]) -> Result<CRMType, APIError> {
        let raw = QueryString.decode(params["crm_type"] ?? "")
        guard let type = CRMType(rawValue: raw) else { return .failure(.notFound(CRMType.unsupportedMessage(raw))) }
        return .success(type)
    }

    private func pathLogID(_ params: [String: String]) -> Result<Int64, APIError> {
        let raw = params["id"] ?? ""
        guard let id = Int64(raw), id > 0 else {
            return .failure(.invalid(["path", "id"], "Input should be a valid positive integer", type: "int_parsing"))
        }
        return .success(id)
    }

    // MARK: - Bodies

    static func jsonBody(_ request: HTTPRequest) -> Result<JSON, APIError> {
        if request.contentLength > maxBodyBytes || request.body.count > maxBodyBytes {
            return .failure(.http(status: 413, detail: "Request body too large (limit 1 MiB)"))
        }
        let contentType = request.header("content-type") ?? ""
        if request.body.isEmpty && contentType.isEmpty {
            return .failure(.invalid(["body"], "Field required", type: "missing"))
        }
        let mediaType = Self.mediaType(contentType)
        guard mediaType == "application/json" || (mediaType.hasPrefix("application/") && mediaType.hasSuffix("+json")) else {
            return .failure(.http(status: 415, detail: "Unsupported media type '\(mediaType.prefix(100))': send application/json"))
        }
        if request.body.isEmpty { return .failure(.invalid(["body"], "Field required", type: "missing")) }
        let parsed = request.body.withUnsafeBufferPointer { bytes in
            Result { () throws(JSONParseError) in
                var containsNUL = false
                let body = try JSONParser.parse(bytes, containsNUL: &containsNUL)
                return (body, containsNUL)
            }
        }
        switch parsed {
        case let .failure(error):
            return .failure(.validation([ValidationIssue(["body", .index(error.offset)], "JSON decode error: \(error.message)", type: "json_invalid")]))
        case let .success((body, containsNUL)):
            // Valid JSON, but no sync holding it could be logged, nor settings holding it saved.
            if containsNUL, let loc = nulLocation(body, at: ["body"]) {
                return .failure(.invalid(loc, "String should not contain U+0000 (NUL): it cannot be stored", type: "string_nul"))
            }
            return .success(body)
        }
    }

    /// Where the first string or key holding U+0000 is.
    static func nulLocation(_ value: JSON, at loc: [ValidationIssue.Loc]) -> [ValidationIssue.Loc]? {
        switch value {
        case let .string(s): return s.utf8.contains(0) ? loc : nil
        case let .array(items):
            for (i, item) in items.enumerated() { if let found = nulLocation(item, at: loc + [.index(i)]) { return found } }
        case let .object(pairs):
            for (key, item) in pairs {
                if key.utf8.contains(0) { return loc + [.key(key)] }
                if let found = nulLocation(item, at: loc + [.key(key)]) { return found }
            }
        default: break
        }
        return nil
    }

    /// The media type of a Content-Type, lower-cased without parameters or surrounding blanks
    /// (`Application/JSON ; charset=utf-8` → `application/json`).
    static func mediaType(_ contentType: String) -> String {
        var value = contentType
        return value.withUTF8 { bytes in
            let type = trimmed(bytes, upTo: UInt8(ascii: ";"))
            return String(unsafeUninitializedCapacity: type.count) { out in
                for (i, b) in type.enumerated() { out[i] = lowercased(b) }
                return type.count
            }
        }
    }

    /// Whether a Prefer header holds the `respond-async` preference (RFC 7240: comma-separated
    /// preferences, each a case-insensitive token that may carry `=value` and `;` parameters).
    /// Byte-wise, no allocation: it is read on every sync request.
    static func prefersRespondAsync(_ prefer: String) -> Bool {
        var value = prefer
        return value.withUTF8 { bytes in
            var start = 0
            for end in 0...bytes.count where end == bytes.count || bytes[end] == UInt8(ascii: ",") {
                let item = UnsafeBufferPointer(rebasing: bytes[start..<end])
                var token = trimmed(item, upTo: UInt8(ascii: ";"))
                if let equals = token.firstIndex(of: UInt8(ascii: "=")) {
                    token = trimmed(UnsafeBufferPointer(rebasing: token[..<equals]), upTo: nil)
                }
                if equalsIgnoringCase(token, "respond-async") { return true }
                start = end + 1
            }
            return false
        }
    }

    /// `bytes` up to the first `separator` (all of them when nil), without blanks around.
    private static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>, upTo separator: UInt8?) -> UnsafeBufferPointer<UInt8> {
        var a = bytes.startIndex, b = separator.flatMap { bytes.firstIndex(of: $0) } ?? bytes.endIndex
        while a < b && (bytes[a] == 0x20 || bytes[a] == 0x09) { a += 1 }
        while b > a && (bytes[b - 1] == 0x20 || bytes[b - 1] == 0x09) { b -= 1 }
        return UnsafeBufferPointer(rebasing: bytes[a..<b])
    }

    /// ASCII case-insensitive equality with a lower-case literal.
    private static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        for (b, e) in zip(bytes, expected) where lowercased(b) != e { return false }
        return true
    }

    private static func lowercased(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }

    static func reader(_ body: JSON) -> Result<FieldReader, APIError> {
        guard let r = FieldReader(body, at: ["body"]) else { return .failure(.validation([FieldReader.notAnObject(at: ["body"])])) }
        return .success(r)
    }

    static func validateBody(_ body: JSON) -> Result<(CRMType, Credentials), APIError> {
        reader(body).flatMap { r in
            var r = r
            r.rejectUnknown(["crm_type", "credentials"])
            let type = r.crmType("crm_type")
            var issues = r.issues
            var credentials: Credentials?
            if let type {
                switch Credentials.decode(r.value("credentials"), for: type, at: ["body", "credentials"]) {
                case let .success(c): credentials = c
                case let .failure(.validation(more)): issues += more
                case let .failure(other): return .failure(other)
                }
            } else if !r.has("credentials") {
                issues.append(ValidationIssue(["body", "credentials"], "Field required", type: "missing"))
            }
            guard issues.isEmpty, let type, let credentials else { return .failure(.validation(issues)) }
            return .success((type, credentials))
        }
    }

    static func connectBody(_ body: JSON) -> Result<(CRMType, Credentials, IntegrationSettings), APIError> {
        reader(body).flatMap { r in
            var r = r
            r.rejectUnknown(["crm_type", "credentials", "settings"])
            let type = r.crmType("crm_type")
            var issues = r.issues
            var credentials: Credentials?
            var settings: IntegrationSettings?
            if let type {
                switch Credentials.decode(r.value("credentials"), for: type, at: ["body", "credentials"]) {
                case let .success(c): credentials = c
                case let .failure(.validation(more)): issues += more
                case let .failure(other): return .failure(other)
                }
                switch IntegrationSettings.decode(r.value("settings"), for: type, at: ["body", "settings"]) {
                case let .success(s): settings = s
                case let .failure(.validation(more)): issues += more
                case let .failure(other): return .failure(other)
                }
            } else if !r.has("credentials") {
                issues.append(ValidationIssue(["body", "credentials"], "Field required", type: "missing"))
            }
            guard issues.isEmpty, let type, let credentials, let settings else { return .failure(.validation(issues)) }
            return .success((type, credentials, settings))
        }
    }

    static func contactBody(_ body: JSON) -> Result<(Contact, [CRMType]?), APIError> {
        reader(body).flatMap { r in
            var r = r
            r.rejectUnknown(where: isContactBodyKey)
            let targets = r.crmTypes("crm_types")
            let contact = Contact.read(&r)
            guard let contact, r.issues.isEmpty else { return .failure(.validation(r.issues)) }
            return .success((contact, targets))
        }
    }

    static func eventBody(_ body: JSON) -> Result<(Event, [CRMType]?), APIError> {
        reader(body).flatMap { r in
            var r = r
            r.rejectUnknown(where: isEventBodyKey)
            let targets = r.crmTypes("crm_types")
            let event = Event.read(&r)
            guard let event, r.issues.isEmpty else { return .failure(.validation(r.issues)) }
            return .success((event, targets))
        }
    }

    static func syncOptions(_ request: HTTPRequest) -> Result<SyncOptions, APIError> {
        var options = SyncOptions()
        if let prefer = request.header("prefer") {
            options.respondAsync = prefersRespondAsync(prefer)
        }
        if let key = request.header("idempotency-key") {
            guard (1...255).contains(key.utf8.count), key.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
                return .failure(.badRequest("Invalid Idempotency-Key header: expected 1-255 visible ASCII characters"))
            }
            options.idempotencyKey = key
        }
        return .success(options)
    }

    static func logQuery(_ query: String) -> Result<LogQuery, APIError> {
        var q = LogQuery()
        var issues: [ValidationIssue] = []
        for (key, value) in QueryString.parse(query) {
            switch key {
            case "crm_type":
                if let t = CRMType(rawValue: value) { q.crmType = t }
                else { issues.append(ValidationIssue(["query", "crm_type"], "Input should be \(CRMType.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", "))", type: "enum")) }
            case "status":
                if LogQuery.statuses.contains(value) { q.status = value }
                else { issues.append(ValidationIssue(["query", "status"], "Input should be one of \(LogQuery.statuses.joined(separator: ", "))", type: "enum")) }
            case "operation":
                if LogQuery.operations.contains(value) { q.operation = value }
                else { issues.append(ValidationIssue(["query", "operation"], "Input should be 'contact' or 'event'", type: "enum")) }
            case "limit":
                if let n = Int(value), (1...200).contains(n) { q.limit = n }
                else { issues.append(ValidationIssue(["query", "limit"], "Input should be an integer from 1 to 200", type: "int_parsing")) }
            case "before_id":
                if let n = Int64(value), n > 0 { q.beforeID = n }
                else { issues.append(ValidationIssue(["query", "before_id"], "Input should be a valid positive integer", type: "int_parsing")) }
            default:
                continue  // unknown query parameters are ignored, as FastAPI does
            }
        }
        return issues.isEmpty ? .success(q) : .failure(.validation(issues))
    }

    /// Compares without an early exit, so timing does not reveal how much of a key matched.
    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(truncatingIfNeeded: x.count ^ y.count)
        for i in 0..<max(x.count, y.count) {
            diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return diff == 0 && x.count == y.count
    }
}
