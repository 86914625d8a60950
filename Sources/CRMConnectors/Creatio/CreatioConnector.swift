import CRMCore
import HTTPClient

/// Creatio's OData 4 API with forms (cookie) or OAuth client-credentials auth.
public struct CreatioConnector: Connector {
    public let crmType = CRMType.creatio
    let transport: Transport
    /// Cookie sessions and OAuth tokens are reused across requests and renewed once on 401.
    let sessions = SessionCache<Session>()

    init(client: HTTPClient) {
        transport = Transport(client: client, vendor: "Creatio")
    }

    /// Headers that authenticate an OData call.
    struct Session: Sendable {
        var headers: [(String, String)]
    }

    enum LoginResult { case session(Session), rejected(String) }

    func login(_ credentials: CreatioCredentials) async throws(ConnectorError) -> LoginResult {
        switch credentials {
        case let .forms(baseURL, username, password):
            let base = CRMURL(baseURL)?.base ?? baseURL
            let body = JSON.object([("UserName", .string(username)), ("UserPassword", .string(password.revealed))]).serialized()
            let response = try await transport.send(HTTPClientRequest(method: "POST", url: base + "/ServiceModel/AuthService.svc/Login", headers: [
                ("Content-Type", "application/json"), ("Accept", "application/json"), ("ForceUseSession", "true"),
            ], body: body, idempotent: true))
            // A failed login still answers HTTP 200: only `Code` tells.
            let json = transport.json(response)
            guard response.status == 200, let code = json?["Code"]?.intValue else {
                return .rejected("login answered HTTP \(response.status)")
            }
            guard code == 0 else {
                let message = json?["Message"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
                    ?? json?["Exception"]?["Message"]?.stringValue ?? "login failed (Code \(code))"
                return .rejected(message)
            }
            let cookies = Self.cookies(response.headers(named: "Set-Cookie"))
            guard let csrf = cookies.first(where: { $0.0 == "BPMCSRF" })?.1, !csrf.isEmpty else { return .rejected("login set no BPMCSRF cookie") }
            return .session(Session(headers: [
                ("Cookie", cookies.map { "\($0.0)=\($0.1)" }.joined(separator: "; ")), ("BPMCSRF", csrf), ("ForceUseSession", "true"),
            ]))
        case let .oauth(_, identityURL, clientID, clientSecret):
            let base = CRMURL(identityURL)?.base ?? identityURL
            let response = try await transport.send(HTTPClientRequest(method: "POST", url: base + "/connect/token", headers: [
                ("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json"),
            ], body: FormEncoding.encode([("grant_type", "client_credentials"), ("client_id", clientID), ("client_secret", clientSecret.revealed)]), idempotent: true))
            let json = transport.json(response)
            guard response.status == 200, let token = json?["access_token"]?.stringValue else {
                return .rejected(json?["error"]?.stringValue ?? "token endpoint answered HTTP \(response.status)")
            }
            // Kept for later calls (as Salesforce's): a token no header can carry is not kept.
            guard HTTPClient.canSendInAHeader(token) else {
                throw ConnectorError(.crmFailure, httpStatus: response.status, detail: "Creatio answered an access token that no header can carry")
            }
            return .session(Session(headers: [("Authorization", "Bearer \(token)")]))
        }
    }

    static func cookies(_ setCookies: [String]) -> [(String, String)] {
        setCookies.compactMap { header in
            guard let pair = header.split(separator: ";").first, let eq = pair.firstIndex(of: "=") else { return nil }
            return (pair[..<eq].trimming(" "), String(pair[pair.index(after: eq)...]))
        }
    }

    static func baseURL(_ credentials: CreatioCredentials) -> String {
        switch credentials {
        case let .forms(url, _, _), let .oauth(url, _, _, _): return CRMURL(url)?.base ?? url
        }
    }

    public func validate(_ credentials: Credentials) async throws(ConnectorError) -> CredentialCheck {
        guard case let .creatio(creatio) = credentials else { return .rejected(detail: "not Creatio credentials") }
        let session: Session
        switch try await login(creatio) {
        case let .rejected(reason): return .rejected(detail: "Creatio refused the login: \(reason)")
        case let .session(s): session = s
        }
        let url = Self.baseURL(creatio) + "/0/odata/Contact?%24select=Id&%24top=1"
        let response = try await transport.send(HTTPClientRequest(method: "GET", url: url, headers: [("Accept", "application/json")] + session.headers))
        guard response.status == 200 else {
            let message = transport.json(response)?["error"]?["message"]?.stringValue ?? "HTTP \(response.status)"
            return .rejected(detail: "Creatio refused the OData call: \(message)")
        }
        return .valid(detail: "Creatio credentials accepted", account: .object([("base_url", .string(Self.baseURL(creatio)))]))
    }

    public func fieldMapping(settings: IntegrationSettings) -> FieldMapping {
        let entity = settings.string("contact_entity") ?? "Contact"
        return FieldMapping(
            contact: [
                ("email", "Email"), ("first_name", "GivenName"), ("last_name", "Surname"), ("phone", "MobilePhone"),
                ("company", nil), ("title", "JobTitle"), ("address.line1", "Address"), ("address.line2", "Address"),
                ("address.city", nil), ("address.region", nil), ("address.postal_code", "Zip"), ("address.country", nil),
            ],
            event: [("event", "Activity.Title"), ("email", "Activity.ContactId"), ("properties", "Activity.DetailedResult"),
                    ("value", "Activity.DetailedResult"), ("timestamp", "Activity.StartDate"), ("unique_id", "Activity.DetailedResult")],
            customProperties: "Sent as \(entity) columns of the same name; only names with the Usr prefix are sent, others are dropped and listed in the result's detail. Name is first and last name joined (the email when both are empty)")
    }
}
