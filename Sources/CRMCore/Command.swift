/// A decoded request: one case per route of the contract. Handlers take these, never raw HTTP.
public enum Command: Sendable {
    case health
    case ready
    case openAPI
    case docs
    case metrics
    case validate(CRMType, Credentials)
    case connect(UserID, CRMType, Credentials, IntegrationSettings)
    case status(UserID, CRMType)
    case disconnect(UserID, CRMType)
    case list(UserID)
    case syncContact(UserID, Contact, targets: [CRMType]?, SyncOptions)
    case syncEvent(UserID, Event, targets: [CRMType]?, SyncOptions)
    case listLogs(UserID, LogQuery)
    case getLog(UserID, id: Int64)
    case retryLog(UserID, id: Int64)
    case fieldMapping(CRMType)
    case fieldMappings
}

/// Per-request delivery options for sync routes.
public struct SyncOptions: Sendable, Equatable {
    public var respondAsync: Bool
    public var idempotencyKey: String?
    public init(respondAsync: Bool = false, idempotencyKey: String? = nil) {
        self.respondAsync = respondAsync
        self.idempotencyKey = idempotencyKey
    }
}

/// Filters and page for `GET /crm/sync/logs`.
public struct LogQuery: Sendable, Equatable {
    public var crmType: CRMType?
    public var status: String?
    public var operation: String?
    public var limit: Int = 50
    public var beforeID: Int64?
    public init() {}

    public static let statuses: [String] = ["pending", "in_flight", "success", "failed", "retrying", "queued", "cancelled"]
    public static let operations: [String] = ["contact", "event"]
}
