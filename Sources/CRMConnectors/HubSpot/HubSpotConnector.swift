import CRMCore
import HTTPClient

/// HubSpot's CRM API with a private-app token or service key (Bearer).
public struct HubSpotConnector: Connector {
    public let crmType = CRMType.hubspot
    let transport: Transport
    let endpoints: CRMEndpoints
    /// The portal's contact property names and its id, cached per token for a few minutes.
    let portals = SessionCache<PortalInfo>()

    /// The configured base URL, normalised once (not on every call).
    let base: String

    init(client: HTTPClient, endpoints: CRMEndpoints) {
        transport = Transport(client: client, vendor: "HubSpot")
        self.endpoints = endpoints
        base = CRMURL(endpoints.hubspotBaseURL)?.base ?? endpoints.hubspotBaseURL
    }

    public func validate(_ credentials: Credentials) async throws(ConnectorError) -> CredentialCheck {
        guard case let .hubspot(token) = credentials else { return .rejected(detail: "not HubSpot credentials") }
        let url = base + "/account-info/\(endpoints.hubspotAPIVersion)/details"
        let response = try await transport.send(HTTPClientRequest(method: "GET", url: url, headers: [
            ("Authorization", "Bearer \(token.revealed)"), ("Accept", "application/json"),
        ]))
        let body = transport.json(response)
        guard response.status == 200 else {
            let message = body?["message"]?.stringValue ?? "HTTP \(response.status)"
            return .rejected(detail: "HubSpot rejected the access token: \(message)")
        }
        // The account details need no scope: a token without access to contacts would pass
        // and then fail every sync. Reading one contact proves the read scope.
        let contacts = try await transport.send(HTTPClientRequest(method: "GET", url: base + objectsPath("contacts") + "?limit=1&properties=email", headers: [
            ("Authorization", "Bearer \(token.revealed)"), ("Accept", "application/json"),
        ]))
        guard contacts.status == 200 else {
            let error = transport.json(contacts)
            let message = Self.missingScopes(error) ?? error?["message"]?.stringValue ?? "HTTP \(contacts.status)"
            return .rejected(detail: "HubSpot refused to read contacts with this access token: \(message)")
        }
        return .valid(detail: "HubSpot access token accepted", account: .object([
            ("portal_id", body?["portalId"] ?? .null), ("account_type", body?["accountType"] ?? .null),
        ]))
    }

    public func fieldMapping(settings: IntegrationSettings) -> FieldMapping {
        let note = settings.string("events") == "note"
        return FieldMapping(
            contact: [
                ("email", "email"), ("first_name", "firstname"), ("last_name", "lastname"), ("phone", "phone"),
                ("company", "company"), ("title", "jobtitle"), ("address.line1", "address"), ("address.line2", "address"),
                ("address.city", "city"), ("address.region", "state"), ("address.postal_code", "zip"), ("address.country", "country"),
            ],
            event: note
                ? [("event", "hs_note_body"), ("email", "associations.contact"), ("properties", "hs_note_body"),
                   ("value", "hs_note_body"), ("timestamp", "hs_timestamp"), ("unique_id", "hs_note_body")]
                : [("event", "eventName (pe<portalId>_<event>)"), ("email", "email"), ("properties", "properties"),
                   ("value", "properties.value"), ("timestamp", "occurredAt"), ("unique_id", "uuid")],
            customProperties: "Sent as HubSpot contact properties under the lower-cased name (spaces and dots become _); "
                + "properties that do not exist in the portal are dropped and listed in the result's detail")
    }
}
