import CRMCore
import HTTPClient

/// Klaviyo's JSON:API under /api/, private key auth, a `revision` header on every call.
public struct KlaviyoConnector: Connector {
    public let crmType = CRMType.klaviyo
    let transport: Transport
    let endpoints: CRMEndpoints

    init(client: HTTPClient, endpoints: CRMEndpoints) {
        transport = Transport(client: client, vendor: "Klaviyo")
        self.endpoints = endpoints
    }

    func headers(_ key: Secret) -> [(String, String)] {
        [("Authorization", "Klaviyo-API-Key \(key.revealed)"), ("Accept", "application/vnd.api+json"), ("revision", endpoints.klaviyoRevision)]
    }

    public func validate(_ credentials: Credentials) throws(ConnectorError) -> CredentialCheck {
        guard case let .klaviyo(key) = credentials else { return .rejected(detail: "not Klaviyo credentials") }
        let base = CRMURL(endpoints.klaviyoBaseURL)?.base ?? endpoints.klaviyoBaseURL
        let response = try transport.send(HTTPClientRequest(method: "GET", url: base + "/api/accounts", headers: headers(key)))
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
