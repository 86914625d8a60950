import CRMCore
import HTTPClient

/// Salesforce REST API (`/services/data/vNN.0/…`) with one of four OAuth flows.
public struct SalesforceConnector: Connector {
    public let crmType = CRMType.salesforce
    let transport: Transport
    let auth: SalesforceAuth
    let endpoints: CRMEndpoints
    /// Tokens are reused across requests and renewed once on 401.
    let sessions = SessionCache<SalesforceSession>()

    init(client: HTTPClient, endpoints: CRMEndpoints) {
        transport = Transport(client: client, vendor: "Salesforce")
        auth = SalesforceAuth(transport: transport, endpoints: endpoints)
        self.endpoints = endpoints
    }

    public func validate(_ credentials: Credentials) async throws(ConnectorError) -> CredentialCheck {
        guard case let .salesforce(sf) = credentials else { return .rejected(detail: "not Salesforce credentials") }
        var session: SalesforceSession
        switch try await auth.session(for: sf) {
        case let .rejected(reason): return .rejected(detail: "Salesforce refused the credentials: \(reason)")
        case let .session(s): session = s
        }
        // `GET /services/data/` needs no auth and proves nothing: ask the versioned resource list.
        var response = try await resources(session)
        if response.status == 401, let refreshed = try await auth.refresh(sf) {
            switch refreshed {
            case let .rejected(reason): return .rejected(detail: "Salesforce refused to refresh the token: \(reason)")
            case let .session(fresh): session = fresh
            }
            response = try await resources(session)
        }
        guard response.status == 200 else {
            let first = transport.json(response)?.arrayValue?.first
            let reason = first?["errorCode"]?.stringValue ?? "HTTP \(response.status)"
            return .rejected(detail: "Salesforce refused the session: \(reason)")
        }
        return .valid(detail: "Salesforce credentials accepted", account: .object([
            ("organization_id", JSON(session.organizationID)), ("instance_url", .string(session.instanceURL)),
        ]))
    }

    func resources(_ session: SalesforceSession) async throws(ConnectorError) -> HTTPClientResponse {
        try await transport.send(HTTPClientRequest(method: "GET", url: session.instanceURL + "/services/data/\(endpoints.salesforceAPIVersion)/", headers: [
            ("Authorization", "Bearer \(session.accessToken.revealed)"), ("Accept", "application/json"),
        ]))
    }

    public func fieldMapping(settings: IntegrationSettings) -> FieldMapping {
        let lead = settings.string("object") == "Lead"
        let address: [(String, String?)] = lead
            ? [("address.line1", "Street"), ("address.line2", "Street"), ("address.city", "City"), ("address.region", "State"),
               ("address.postal_code", "PostalCode"), ("address.country", "Country")]
            : [("address.line1", "MailingStreet"), ("address.line2", "MailingStreet"), ("address.city", "MailingCity"),
               ("address.region", "MailingState"), ("address.postal_code", "MailingPostalCode"), ("address.country", "MailingCountry")]
        let events = settings.string("events") ?? "task"
        let event: [(String, String?)] = events == "task"
            ? [("event", "Task.Subject"), ("email", "Task.WhoId"), ("properties", "Task.Description"), ("value", "Task.Description"),
               ("timestamp", "Task.ActivityDate"), ("unique_id", "Task.Description")]
            : [("event", "\(events).Event_Name__c"), ("email", "\(events).Contact_Email__c"), ("properties", "\(events).Payload__c"),
               ("value", "\(events).Payload__c"), ("timestamp", "\(events).Occurred_At__c"), ("unique_id", "\(events).Event_Id__c")]
        return FieldMapping(
            contact: [("email", "Email"), ("first_name", "FirstName"), ("last_name", "LastName"), ("phone", "Phone"),
                      ("company", lead ? "Company" : nil), ("title", "Title")] + address,
            event: event,
            customProperties: "Sent as \(lead ? "Lead" : "Contact") fields of the same name; only custom field API names ending in __c are sent, others are dropped and listed in the result's detail")
    }
}
