/// What a CRM answered when asked to check credentials.
public enum CredentialCheck: Sendable {
    /// Accepted; `account` is a short, secret-free summary (ids, names) for the response.
    case valid(detail: String, account: JSON?)
    /// The CRM refused the credentials (wrong key, bad password, blocked flow).
    case rejected(detail: String)
}

/// A CRM could not give an answer about the request: unreachable, timed out or failed (5xx).
public struct ConnectorError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case unreachable, timeout, crmFailure }
    public let kind: Kind
    public let httpStatus: Int?
    /// Safe to show to the caller: never holds a credential.
    public let detail: String
    /// The CRM's `Retry-After`, in seconds, when it sent one.
    public let retryAfterSeconds: Double?
    /// The CRM's error body, when it sent one (for the sync log).
    public let response: JSON?
    /// The account's rate limit refused the call (a 429 unless the connector says otherwise).
    public let rateLimited: Bool

    public init(_ kind: Kind, httpStatus: Int? = nil, detail: String, retryAfterSeconds: Double? = nil, response: JSON? = nil,
                rateLimited: Bool? = nil) {
        self.kind = kind
        self.httpStatus = httpStatus
        self.detail = detail
        self.retryAfterSeconds = retryAfterSeconds
        self.response = response
        self.rateLimited = rateLimited ?? (httpStatus == 429)
    }

    public var outcome: DeliveryOutcome {
        .transient(httpStatus: httpStatus, error: detail, retryAfterSeconds: retryAfterSeconds, response: response, rateLimited: rateLimited)
    }

    public var description: String { detail }
}

/// How one CRM type's fields are filled from the standard contact and event.
public struct FieldMapping: Sendable {
    public var contact: [(String, String?)]
    public var event: [(String, String?)]
    public var customProperties: String

    public init(contact: [(String, String?)], event: [(String, String?)], customProperties: String) {
        self.contact = contact
        self.event = event
        self.customProperties = customProperties
    }

    public func json(for type: CRMType) -> JSON {
        .object([
            ("crm_type", .string(type.rawValue)),
            ("contact", .object(contact.map { ($0.0, JSON($0.1)) })),
            ("event", .object(event.map { ($0.0, JSON($0.1)) })),
            ("custom_properties", .string(customProperties)),
        ])
    }

    /// The deprecated per-integration `field_mapping` setting applied on top.
    public func overridden(by overrides: [(String, String)]?) -> FieldMapping {
        guard let overrides, !overrides.isEmpty else { return self }
        var copy = self
        for (standard, crmField) in overrides {
            if let i = copy.contact.firstIndex(where: { $0.0 == standard }) { copy.contact[i].1 = crmField }
            else { copy.contact.append((standard, crmField)) }
        }
        return copy
    }
}

/// Whose data goes where: one user's integration, decrypted for the duration of a delivery.
public struct SyncTarget: Sendable {
    public let user: UserID
    public let credentials: Credentials
    public let settings: IntegrationSettings

    public init(user: UserID, credentials: Credentials, settings: IntegrationSettings) {
        self.user = user
        self.credentials = credentials
        self.settings = settings
    }

    /// Identifies these exact credentials in in-memory caches (sessions, tokens), so
    /// reconnecting with new credentials never reuses an old session.
    public var cacheKey: String {
        var hasher = Hasher()
        hasher.combine(credentials.storageJSON.jsonString)
        return "\(user.value)|\(credentials.crmType.rawValue)|\(hasher.finalize())"
    }
}

/// One CRM behind one protocol. Adding a CRM is one new conformer and one registry line.
public protocol Connector: Sendable {
    var crmType: CRMType { get }
    /// Checks credentials against the CRM. Throws only when the CRM gives no usable answer.
    func validate(_ credentials: Credentials) async throws(ConnectorError) -> CredentialCheck
    /// The mapping this connector applies for these settings (what the field-mappings routes show).
    func fieldMapping(settings: IntegrationSettings) -> FieldMapping
    /// Creates or updates the one record for `contact.email`.
    func upsertContact(_ contact: Contact, for target: SyncTarget) async -> DeliveryOutcome
    /// Records `event`; `uniqueID` is stable across retries so a retry never doubles it.
    /// `mayBeRecorded`: an earlier attempt, or an earlier request with the same client-given
    /// `unique_id`, may have recorded it already; a CRM without a native dedupe key must then
    /// look for it before adding it. False only for the first attempt at a row never sent (by
    /// the request that wrote it, or by the sweep at a queued async sync) whose id is derived
    /// from that row: nothing can carry it yet.
    func sendEvent(_ event: Event, uniqueID: String, mayBeRecorded: Bool, for target: SyncTarget) async -> DeliveryOutcome
}
