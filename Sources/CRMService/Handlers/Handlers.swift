import CRMConnectors
import CRMCore
import CRMStore

/// Runs one decoded command. Throws `APIError` for answers the client caused or the CRM
/// gave, `DatabaseError` when the database is not there (the application maps it to 503).
struct Handlers: Sendable {
    let context: ServiceContext
    let delivery: Delivery
    let idempotency: IdempotencyStore
    static let version = "0.1.0"

    /// How a command is answered: now, on the calling thread (database work only), or later by
    /// a task when it waits on a CRM, so that no thread waits with it.
    enum Answer: Sendable {
        case now(HTTPResponse)
        case later(@Sendable () async throws -> HTTPResponse)
    }

    func answer(_ command: Command) throws -> Answer {
        switch command {
        case .health: return .now(.json(200, ["status": "ok", "version": .string(Self.version)]))
        case .ready: return .now(try ready())
        case .openAPI: return .now(.json(200, bytes: Self.openAPIBytes))
        case .docs: return .now(HTTPResponse(status: 200, headers: [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'"),
            ], body: Self.docsBytes))
        case .metrics:
            let body = context.metrics.render(pool: context.pool, backlog: try? delivery.store.backlog(),
                                              crmCallsInFlight: context.httpClient.inFlight)
            return .now(HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: body))
        case let .validate(type, credentials):
            try checkURLs(credentials)
            return .later { try await validate(type, credentials) }
        case let .connect(user, type, credentials, settings):
            try checkURLs(credentials)
            return .later { try await connect(user, type, credentials, settings) }
        case let .status(user, type): return .now(try status(user, type))
        case let .disconnect(user, type): return .now(try disconnect(user, type))
        case let .list(user): return .now(try list(user))
        case let .syncContact(user, contact, targets, options):
            return try sync(user, .contact(contact), targets: targets, options: options)
        case let .syncEvent(user, event, targets, options):
            return try sync(user, .event(event), targets: targets, options: options)
        case let .listLogs(user, query):
            let page = try context.logs.list(user: user, query: query)
            return .now(.json(200, .object([("logs", .array(page.logs)), ("next_before_id", page.nextBeforeID.map(JSON.int) ?? .null)])))
        case let .getLog(user, id):
            guard let log = try context.logs.get(user: user, id: id) else { throw APIError.notFound("Sync log \(id) not found") }
            return .now(.json(200, log))
        case let .retryLog(user, id):
            return .later { try await retry(user, id) }
        case let .fieldMapping(type):
            return .now(.json(200, context.connectors.connector(for: type).fieldMapping(settings: .defaults).json(for: type)))
        case .fieldMappings:
            let all = CRMType.allCases.map { ($0.rawValue, context.connectors.connector(for: $0).fieldMapping(settings: .defaults).json(for: $0)) }
            return .now(.json(200, .object([("field_mappings", .object(all))])))
        }
    }

    static let openAPIBytes = Array(OpenAPIDocument.json.utf8)
    static let docsBytes = Array(DocsPage.html.utf8)

    /// A sync: with `Prefer: respond-async` queued and answered with 202 once the rows are
    /// committed; else a task writes the rows (reading the credentials with them) and delivers.
    /// Either way the request's thread does not wait for the commit (see `InlineExecutor`),
    /// except for the stored answer of an Idempotency-Key.
    private func sync(_ user: UserID, _ payload: Payload, targets: [CRMType]?, options: SyncOptions) throws -> Answer {
        let key = options.idempotencyKey
        if options.respondAsync {
            // Without a key, the request's thread only hands the rows to the log writer.
            guard key != nil else {
                return .later {
                    // Handed over: all that is left is the commit of its rows, with a batch of
                    // others, so it gives its place under `ActiveLimit` up (the log writer's
                    // batches are the bigger the more 202s wait at once).
                    let (status, body) = try await waitingOutside { try await delivery.queue(user: user, payload: payload, targets: targets) }
                    return .json(status, bytes: body)
                }
            }
            return .now(try idempotent(user, key, payload, targets) { try delivery.queue(user: user, payload: payload, targets: targets) })
        }
        if let key, let replay = try begin(user, key, payload, targets) { return .now(replay) }
        // Small async frames (they stay allocated while the CRM answers): the rows and the
        // stored answer of an Idempotency-Key are written by functions of their own.
        return .later {
            let prepared = try await prepare(user, key, payload, targets)
            let (status, body) = await waitingOutside { await delivery.deliver(prepared, user: user, payload: payload) }
            if let key { try await finish(user, key, status: status, body: body) }
            return .json(status, body)
        }
    }

    @inline(never)
    private func prepare(_ user: UserID, _ key: String?, _ payload: Payload, _ targets: [CRMType]?) async throws -> [PreparedAttempt] {
        do {
            return try await delivery.prepare(user: user, payload: payload, targets: targets)
        } catch {
            if let key { await abandon(user, key) }
            throw error
        }
    }

    @inline(never)
    private func finish(_ user: UserID, _ key: String, status: Int, body: JSON) async throws {
        let idempotency = self.idempotency
        do {
            try await context.database.run { try idempotency.finish(user: user, key: key, status: status, body: body) }
        } catch {
            await abandon(user, key)
            throw error
        }
    }

    private func abandon(_ user: UserID, _ key: String) async {
        let idempotency = self.idempotency
        _ = try? await context.database.run { try idempotency.abandon(user: user, key: key) }
    }

    /// `run` made idempotent by `Idempotency-Key`: the first response is stored and replayed.
    private func idempotent(_ user: UserID, _ key: String?, _ payload: Payload, _ targets: [CRMType]?,
                            run: () throws -> (status: Int, body: [UInt8])) throws -> HTTPResponse {
        guard let key else {
            let (status, body) = try run()
            return .json(status, bytes: body)
        }
        if let replay = try begin(user, key, payload, targets) { return replay }
        do {
            let (status, body) = try run()
            try idempotency.finish(user: user, key: key, status: status, body: String(decoding: body, as: UTF8.self))
            return .json(status, bytes: body)
        } catch {
            try? idempotency.abandon(user: user, key: key)
            throw error
        }
    }

    /// The stored answer to replay for a key used before, or nil to go on (a key in use or
    /// reused for another request throws).
    private func begin(_ user: UserID, _ key: String, _ payload: Payload, _ targets: [CRMType]?) throws -> HTTPResponse? {
        let fingerprint = Self.fingerprint(payload.operation + "|" + payload.json.jsonString + "|" + (targets?.map(\.rawValue).joined(separator: ",") ?? "*"))
        switch try idempotency.begin(user: user, key: key, requestHash: fingerprint) {
        case let .replay(status, body):
            return .json(status, body, headers: [("Idempotent-Replayed", "true")])
        case .inProgress:
            throw APIError.conflict("A request with this Idempotency-Key is still in progress")
        case .mismatch:
            throw APIError.invalid(["header", "Idempotency-Key"], "This Idempotency-Key was already used for a different request", type: "idempotency_key_reused")
        case .proceed:
            return nil
        }
    }

    private func retry(_ user: UserID, _ id: Int64) async throws -> HTTPResponse {
        let logs = context.logs
        guard let log = try await context.database.run({ try logs.get(user: user, id: id) }) else { throw APIError.notFound("Sync log \(id) not found") }
        guard log["status"]?.stringValue == "failed", let result = try await waitingOutside({ try await delivery.retry(user: user, id: id) }) else {
            throw APIError.conflict("Sync log \(id) is '\(log["status"]?.stringValue ?? "unknown")'; only failed syncs can be retried")
        }
        return .json(200, result)
    }

    /// FNV-1a 64 of the request: enough to tell a reused key from a repeated request.
    static func fingerprint(_ text: String) -> String {
        var hash: UInt64 = 0xcbf29ce484222325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
        return String(hash, radix: 16)
    }

    private func ready() throws -> HTTPResponse {
        do {
            _ = try context.pool.withConnection { try $0.execute("SELECT 1") }
            return .json(200, ["status": "ready", "database": "ok"])
        } catch let error as DatabaseError where error.kind == .unavailable {
            return .error(.serviceUnavailable("Database unavailable"))
        }
    }

    /// Asks the CRM (the URLs were checked); throws 502 when the CRM gives no answer.
    /// 422 for credential URLs that are refused. On the request's thread: it resolves names,
    /// which blocks.
    /// A CRM call (or a 202's commit): the request gives its place under `ActiveLimit` up meanwhile.
    private func waitingOutside<T, Failure: Error>(_ call: () async throws(Failure) -> T) async throws(Failure) -> T {
        context.active.park()
        defer { context.active.unpark() }
        return try await call()
    }

    private func checkURLs(_ credentials: Credentials) throws {
        let issues = URLGuard.check(credentials, allowPrivate: context.config.allowPrivateURLs, at: ["body", "credentials"])
        guard issues.isEmpty else { throw APIError.validation(issues) }
    }

    private func check(_ credentials: Credentials) async throws -> CredentialCheck {
        do {
            let connector = context.connectors.connector(for: credentials.crmType)
            let result = try await waitingOutside { () async throws(ConnectorError) in try await connector.validate(credentials) }
            if case let .rejected(detail) = result {
                context.logger.debug("crm rejected credentials", metadata: ["crm_type": "\(credentials.crmType.rawValue)", "detail": "\(detail)"])
            }
            return result
        } catch {
            context.logger.warning("crm validation failed", metadata: ["crm_type": "\(credentials.crmType.rawValue)", "error": "\(error.detail)"])
            throw APIError.badGateway("Could not validate the credentials: \(error.detail)")
        }
    }

    private func validate(_ type: CRMType, _ credentials: Credentials) async throws -> HTTPResponse {
        switch try await check(credentials) {
        case let .valid(detail, account):
            var pairs: [(String, JSON)] = [("crm_type", .string(type.rawValue)), ("valid", true), ("detail", .string(detail))]
            if let account { pairs.append(("account", account)) }
            return .json(200, .object(pairs))
        case let .rejected(detail):
            return .json(200, .object([("crm_type", .string(type.rawValue)), ("valid", false), ("detail", .string(detail))]))
        }
    }

    private func connect(_ user: UserID, _ type: CRMType, _ credentials: Credentials, _ settings: IntegrationSettings) async throws -> HTTPResponse {
        if case let .rejected(detail) = try await check(credentials) {
            throw APIError.badRequest("The \(type.rawValue) credentials were rejected: \(detail)")
        }
        let integrations = context.integrations
        let record = try await context.database.run { try integrations.save(user: user, credentials: credentials, settings: settings) }
        var warnings: [JSON] = []
        var headers: [(String, String)] = []
        if settings.fieldMapping != nil {
            warnings.append(.string("The 'field_mapping' setting is deprecated: it is still applied on top of the standard mapping, but will be removed; see GET /crm/field-mappings/\(type.rawValue) for what is sent"))
            headers.append(("Deprecation", "true"))
        }
        context.logger.info("integration connected", metadata: ["user_id": "\(user)", "crm_type": "\(type.rawValue)"])
        return .json(200, .object([
            ("crm_type", .string(type.rawValue)), ("status", "connected"), ("is_active", .bool(record.isActive)),
            ("settings", record.settings.json), ("created_at", JSON(record.createdAt)), ("updated_at", JSON(record.updatedAt)),
            ("warnings", .array(warnings)),
        ]), headers: headers)
    }

    private func status(_ user: UserID, _ type: CRMType) throws -> HTTPResponse {
        guard let record = try context.integrations.find(user: user, type: type) else {
            return .json(200, .object([("crm_type", .string(type.rawValue)), ("connected", false)]))
        }
        let stats = try context.integrations.stats(user: user, type: type)
        let rateLimitedUntil = try context.integrations.rateLimitedUntil(user: user, type: type)
        return .json(200, .object([
            ("crm_type", .string(type.rawValue)), ("connected", true), ("is_active", .bool(record.isActive)), ("status", .string(record.status)),
            ("settings", record.settings.json), ("created_at", JSON(record.createdAt)), ("updated_at", JSON(record.updatedAt)),
            ("last_sync_at", JSON(record.lastSyncAt)), ("last_sync_status", JSON(record.lastSyncStatus)),
            ("rate_limited_until", JSON(rateLimitedUntil)),
            ("stats", .object([
                ("success", JSON(stats["success"] ?? 0)), ("failed", JSON(stats["failed"] ?? 0)),
                ("retrying", JSON(stats["retrying"] ?? 0)),
                ("pending", JSON((stats["pending"] ?? 0) + (stats["queued"] ?? 0) + (stats["in_flight"] ?? 0))),
            ])),
        ]))
    }

    private func disconnect(_ user: UserID, _ type: CRMType) throws -> HTTPResponse {
        guard try context.integrations.delete(user: user, type: type) else {
            throw APIError.notFound("No \(type.rawValue) integration is connected")
        }
        context.logger.info("integration disconnected", metadata: ["user_id": "\(user)", "crm_type": "\(type.rawValue)"])
        return .json(200, .object([("crm_type", .string(type.rawValue)), ("status", "disconnected")]))
    }

    private func list(_ user: UserID) throws -> HTTPResponse {
        let records = try context.integrations.list(user: user)
        return .json(200, bytes: Self.listBody(records))
    }

    /// `{"integrations": [...], "count": n}`, written in place: this route is the hottest read.
    static func listBody(_ records: [IntegrationRecord]) -> [UInt8] {
        var out = JSONBytes(capacity: 48 + records.count * 320)
        out.literal(#"{"integrations":["#)
        // Fields read through the array in place: a copy of each record (taking a reference on
        // each of its strings, and giving it back) cost ~220 instructions.
        for i in records.indices {
            out.literal(i == 0 ? #"{"crm_type":"# : #",{"crm_type":"#)
            out.string(records[i].crmType)
            out.literal(#","is_active":"#)
            out.bool(records[i].isActive)
            out.literal(#","status":"#)
            out.string(records[i].status)
            out.literal(#","settings":"#)
            records[i].settings.write(to: &out)
            out.literal(#","created_at":"#)
            out.string(records[i].createdAt)
            out.literal(#","updated_at":"#)
            out.string(records[i].updatedAt)
            out.literal(#","last_sync_at":"#)
            out.string(records[i].lastSyncAt)
            out.literal(#","last_sync_status":"#)
            out.string(records[i].lastSyncStatus)
            out.literal("}")
        }
        out.literal(#"],"count":"#)
        out.int(records.count)
        out.literal("}")
        return out.finish()
    }
}
