import COpenSSL
import CRMCore
import FoundationEssentials
import HTTPClient

/// A Salesforce session: the token and the instance it is valid for.
struct SalesforceSession: Sendable {
    var accessToken: Secret
    var instanceURL: String
    /// `https://login…/id/<org>/<user>`; the org id is its second-to-last segment.
    var identityURL: String?

    var organizationID: String? {
        guard let parts = identityURL?.split(separator: "/"), parts.count >= 2 else { return nil }
        return String(parts[parts.count - 2])
    }
}

/// Result of asking the token endpoint.
enum SalesforceTokenResult: Sendable {
    case session(SalesforceSession)
    case rejected(String)
}

/// The OAuth flows of API.md: client credentials, JWT bearer, refresh token and password.
struct SalesforceAuth: Sendable {
    let transport: Transport
    let endpoints: CRMEndpoints

    func loginBase(domain: String? = nil, override: String? = nil) -> String {
        if let override, let url = CRMURL(override) { return url.base }
        let configured = CRMURL(endpoints.salesforceLoginURL)?.base ?? endpoints.salesforceLoginURL
        if domain == "test", configured == "https://login.salesforce.com" { return "https://test.salesforce.com" }
        return configured
    }

    /// A new session for these credentials (a `.token` credential is used as it is).
    func session(for credentials: SalesforceCredentials) async throws(ConnectorError) -> SalesforceTokenResult {
        switch credentials {
        case let .clientCredentials(clientID, clientSecret, instanceURL):
            // Must go to the org's My Domain; id and secret as HTTP Basic, as simple-salesforce sends them.
            let basic = Data("\(FormEncoding.escape(clientID)):\(FormEncoding.escape(clientSecret.revealed))".utf8).base64EncodedString()
            return try await requestToken(base: CRMURL(instanceURL)?.base ?? instanceURL,
                                    form: [("grant_type", "client_credentials")],
                                    extraHeaders: [("Authorization", "Basic \(basic)")])
        case let .jwtBearer(clientID, username, privateKey, loginURL):
            let base = loginBase(override: loginURL)
            let assertion: String
            do { assertion = try JWT.rs256(claims: [
                ("iss", .string(clientID)), ("sub", .string(username)), ("aud", .string(base)),
                ("exp", .int(Int64(Date().timeIntervalSince1970) + 180)),
            ], privateKeyPEM: privateKey) }
            catch { return .rejected("the private key could not sign the JWT assertion (\(error.detail))") }
            return try await requestToken(base: base, form: [
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion),
            ])
        case let .token(accessToken, instanceURL, _, _, _):
            return .session(SalesforceSession(accessToken: accessToken, instanceURL: CRMURL(instanceURL)?.base ?? instanceURL, identityURL: nil))
        case let .password(clientID, clientSecret, username, password, securityToken, domain):
            return try await requestToken(base: loginBase(domain: domain), form: [
                ("grant_type", "password"), ("client_id", clientID), ("client_secret", clientSecret.revealed),
                ("username", username), ("password", password.revealed + (securityToken?.revealed ?? "")),
            ])
        }
    }

    /// For `.token` credentials with a refresh token: a fresh session, else nil.
    func refresh(_ credentials: SalesforceCredentials) async throws(ConnectorError) -> SalesforceTokenResult? {
        guard case let .token(_, _, refreshToken?, clientID?, clientSecret) = credentials else { return nil }
        var form = [("grant_type", "refresh_token"), ("refresh_token", refreshToken.revealed), ("client_id", clientID)]
        if let clientSecret { form.append(("client_secret", clientSecret.revealed)) }
        return try await requestToken(base: loginBase(), form: form)
    }

    private func requestToken(base: String, form: [(String, String)], extraHeaders: [(String, String)] = []) async throws(ConnectorError) -> SalesforceTokenResult {
        let response = try await transport.send(HTTPClientRequest(
            method: "POST", url: base + "/services/oauth2/token",
            headers: [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")] + extraHeaders,
            body: FormEncoding.encode(form), idempotent: true))
        let body = transport.json(response)
        guard response.status == 200, let token = body?["access_token"]?.stringValue, let instance = body?["instance_url"]?.stringValue else {
            let error = body?["error"]?.stringValue ?? "HTTP \(response.status)"
            let description = body?["error_description"]?.stringValue.map { ": \($0)" } ?? ""
            return .rejected("\(error)\(description)")
        }
        // The session is kept and sent with every call: an instance_url that is no URL, or a
        // token no header can carry, would fail each call until the worker restarts. Refused
        // here, nothing is kept, and the next attempt asks again.
        guard let instanceURL = CRMURL(instance) else {
            throw ConnectorError(.crmFailure, httpStatus: response.status, detail: "Salesforce answered a token without a usable instance_url")
        }
        guard HTTPClient.canSendInAHeader(token) else {
            throw ConnectorError(.crmFailure, httpStatus: response.status, detail: "Salesforce answered an access token that no header can carry")
        }
        return .session(SalesforceSession(accessToken: Secret(token), instanceURL: instanceURL.base, identityURL: body?["id"]?.stringValue))
    }
}

enum JWT {
    struct SigningError: Error { let detail: String }

    static func rs256(claims: [(String, JSON)], privateKeyPEM: Secret) throws(SigningError) -> String {
        let header = Base64URL.encode(JSON.object([("alg", "RS256"), ("typ", "JWT")]).serialized())
        let payload = Base64URL.encode(JSON.object(claims).serialized())
        let input = Array("\(header).\(payload)".utf8)
        var signature = [UInt8](repeating: 0, count: 1024)
        var length = 0
        let code = input.withUnsafeBufferPointer { data in
            crm_rs256_sign(privateKeyPEM.revealed, data.baseAddress, data.count, &signature, &length)
        }
        switch code {
        case 0: return "\(header).\(payload).\(Base64URL.encode(Array(signature.prefix(length))))"
        case -1: throw SigningError(detail: "unreadable PEM private key")
        case -2: throw SigningError(detail: "not an RSA key")
        default: throw SigningError(detail: "signing failed")
        }
    }
}
