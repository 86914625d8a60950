import CRMCore
import HTTPClient

/// Klaviyo's JSON:API under /api/, private key auth, a `revision` header on every call.
public struct KlaviyoConnector: Connector {
    public let crmType = CRMType.klaviyo
    let transport: Transport
    let endpoints: CRMEndpoints
    /// The configured base URL, normalised once (not on every call).
    let base: String

    init(client: HTTPClient, endpoints: CRMEndpoints) {
        transport = Transport(client: client, vendor: "Klaviyo")
        self.endpoints = endpoints
        base = CRMURL(endpoints.klaviyoBaseURL)?.base ?? endpoints.klaviyoBaseURL
    }

    func headers(_ key: Secret) -> [(String, String)] {
        [("Authorization", "Klaviyo-API-Key \(key.revealed)"), ("Accept", "application/vnd.api+json"), ("revision", endpoints.klaviyoRevision)]
    }

    public func validate(_ credentials: Credentials) async throws(ConnectorError) -> CredentialCheck {
        guard case let .klaviyo(key) = credentials else { return .rejected(detail: "not Klaviyo credentials") }
        let response = try await transport.send(HTTPClientRequest(method: "GET", url: base + "/api/accounts", headers: headers(key)))
        let body = transport.json(response)
        guard response.status == 200 else {
            return .rejected(detail: "Klaviyo rejected the API key: " + Self.errorDetail(body, status: response.status))
        }
        let account = body?["data"]?.arrayValue?.first
        let name = account?["attributes"]?["contact_information"]?["organization_name"]
        return .valid(detail: "Klaviyo API key accepted", account: .object([
            ("id", account?["id"] ?? .null), ("name", name ?? .null),
        ]))
    }

    static func errorDetail(_ body: JSON?, status: Int) -> String {
        let first = body?["errors"]?.arrayValue?.first
        return first?["detail"]?.stringValue ?? first?["title"]?.stringValue ?? "HTTP \(status)"
    }

    public func fieldMapping(settings: IntegrationSettings) -> FieldMapping {
        FieldMapping(
            contact: [
                ("email", "email"), ("first_name", "first_name"), ("last_name", "last_name"),
                ("phone", "phone_number"), ("company", "organization"), ("title", "title"),
                ("address.line1", "location.address1"), ("address.line2", "location.address2"),
                ("address.city", "location.city"), ("address.region", "location.region"),
                ("address.postal_code", "location.zip"), ("address.country", "location.country"),
            ],
            event: [
                ("event", "metric.name"), ("email", "profile.email"), ("properties", "properties"),
                ("value", "value"), ("timestamp", "time"), ("unique_id", "unique_id"),
            ],
            customProperties: "Sent as Klaviyo profile properties (attributes.properties) under the same names"
                + (settings.string("list_id").map { "; profiles are also added to list \($0)" } ?? ""))
    }
}

// MARK: - Delivery

extension KlaviyoConnector {
    func write(_ path: String, _ body: JSON, key: Secret) async throws(ConnectorError) -> HTTPClientResponse {
        try await transport.send(HTTPClientRequest(method: "POST", url: base + path,
                                             headers: headers(key) + [("Content-Type", "application/vnd.api+json")],
                                             body: body.serialized(), idempotent: true))
    }

    /// `POST /api/profile-import`: 201 created, 200 updated; then the optional list.
    public func upsertContact(_ contact: Contact, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver {
            guard case let .klaviyo(key) = target.credentials else { throw Finished(outcome: .permanent(httpStatus: nil, error: "not Klaviyo credentials", authFailure: true, response: nil)) }
            var notes: [String] = []
            var attributes: [(String, JSON)] = []
            var location: [(String, JSON)] = []
            var properties: [(String, JSON)] = []
            for (field, value) in fieldMapping(settings: target.settings).overridden(by: target.settings.fieldMapping).crmFields(for: contact) {
                if field == "phone_number" {
                    guard let e164 = Self.e164(value) else { notes.append("phone not sent: Klaviyo needs E.164 (+<country><number>)"); continue }
                    attributes.append((field, .string(e164)))
                } else if field.hasPrefix("location.") {
                    location.append((String(field.dropFirst(9)), .string(value)))
                } else if field.hasPrefix("properties.") {
                    properties.append((String(field.dropFirst(11)), .string(value)))
                } else {
                    attributes.append((field, .string(value)))
                }
            }
            if !location.isEmpty { attributes.append(("location", .object(location))) }
            properties += contact.customProperties
            if !properties.isEmpty { attributes.append(("properties", .object(properties))) }
            let body: JSON = ["data": ["type": "profile", "attributes": .object(attributes)]]
            let response = try await write("/api/profile-import", body, key: key)
            let json = transport.json(response)
            guard response.status == 200 || response.status == 201, let id = json?["data"]?["id"]?.stringValue else {
                throw transport.refused(response, Self.errorDetail(json, status: response.status))
            }
            if let list = target.settings.string("list_id") {
                // 429 and 5xx are thrown (retried: the profile import may be sent again). Any
                // other refusal concerns the list only (one that is gone, a key without
                // lists:write): the profile is saved, so the sync succeeded, and says so.
                let listResponse = try await write("/api/lists/\(FormEncoding.percent(list))/relationships/profiles",
                                             ["data": [["type": "profile", "id": .string(id)]]], key: key)
                if listResponse.status != 204 && listResponse.status != 200 {
                    notes.append("not added to list \(list): Klaviyo answered HTTP \(listResponse.status): "
                                 + Self.errorDetail(transport.json(listResponse), status: listResponse.status))
                }
            }
            return .success(action: response.status == 201 ? "created" : "updated", recordID: id, httpStatus: response.status,
                            detail: notes.isEmpty ? nil : notes.joined(separator: "; "), response: json)
        }
    }

    /// `POST /api/events` → 202. `unique_id` is Klaviyo's own dedupe key, so `mayBeRecorded`
    /// changes nothing here.
    public func sendEvent(_ event: Event, uniqueID: String, mayBeRecorded: Bool, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver {
            guard case let .klaviyo(key) = target.credentials else { throw Finished(outcome: .permanent(httpStatus: nil, error: "not Klaviyo credentials", authFailure: true, response: nil)) }
            var attributes: [(String, JSON)] = [("properties", .object(event.properties)), ("time", .string(Clock.eventTime(event.timestamp)))]
            if let value = event.value { attributes.append(("value", .double(value))) }
            attributes += [
                ("unique_id", .string(uniqueID)),
                ("metric", ["data": ["type": "metric", "attributes": ["name": .string(event.name)]]]),
                ("profile", ["data": ["type": "profile", "attributes": ["email": .string(event.email)]]]),
            ]
            let response = try await write("/api/events", ["data": ["type": "event", "attributes": .object(attributes)]], key: key)
            guard response.status == 202 || response.status == 200 || response.status == 201 else {
                throw transport.refused(response, Self.errorDetail(transport.json(response), status: response.status))
            }
            return .success(action: "sent", recordID: uniqueID, httpStatus: response.status, detail: nil, response: nil)
        }
    }

    /// `+15005550006` from `+1 500-555-0006` / `(+1) 500 555 0006`; nil when it is not E.164.
    static func e164(_ phone: String) -> String? {
        let digits = phone.filter(\.isNumber)
        guard phone.trimming(" (").hasPrefix("+"), (8...15).contains(digits.count),
              phone.allSatisfy({ $0.isNumber || " +-().".contains($0) }) else { return nil }
        return "+" + digits
    }
}
