/// Credentials per CRM type. Every secret field is a `Secret`, so a credentials value can be
/// logged or put in an error by mistake without leaking anything.
public enum Credentials: Sendable {
    case klaviyo(apiKey: Secret)
    case salesforce(SalesforceCredentials)
    case creatio(CreatioCredentials)
    case hubspot(accessToken: Secret)

    public var crmType: CRMType {
        switch self {
        case .klaviyo: .klaviyo
        case .salesforce: .salesforce
        case .creatio: .creatio
        case .hubspot: .hubspot
        }
    }

    /// Every URL the credentials point at, with the key it came from (checked by the private-address guard).
    public var urls: [(key: String, url: String)] {
        switch self {
        case .klaviyo, .hubspot: return []
        case let .salesforce(sf):
            switch sf {
            case let .clientCredentials(_, _, instanceURL): return [("instance_url", instanceURL)]
            case let .jwtBearer(_, _, _, loginURL): return loginURL.map { [("login_url", $0)] } ?? []
            case let .token(_, instanceURL, _, _, _): return [("instance_url", instanceURL)]
            case .password: return []
            }
        case let .creatio(c):
            switch c {
            case let .forms(baseURL, _, _): return [("base_url", baseURL)]
            case let .oauth(baseURL, identityURL, _, _): return [("base_url", baseURL), ("identity_url", identityURL)]
            }
        }
    }
}

public enum SalesforceCredentials: Sendable {
    /// OAuth client credentials against the org's My Domain (recommended).
    case clientCredentials(clientID: String, clientSecret: Secret, instanceURL: String)
    /// OAuth JWT bearer: an RS256 assertion signed with the connected app's private key.
    case jwtBearer(clientID: String, username: String, privateKey: Secret, loginURL: String?)
    /// A token obtained elsewhere, refreshed on 401 when a refresh token is given.
    case token(accessToken: Secret, instanceURL: String, refreshToken: Secret?, clientID: String?, clientSecret: Secret?)
    /// Legacy username-password flow.
    case password(clientID: String, clientSecret: Secret, username: String, password: Secret, securityToken: Secret?, domain: String?)
}

public enum CreatioCredentials: Sendable {
    case forms(baseURL: String, username: String, password: Secret)
    case oauth(baseURL: String, identityURL: String, clientID: String, clientSecret: Secret)
}

extension Credentials {
    /// Decodes and checks credentials for `type`; problems are reported at `loc` (e.g. `["body", "credentials"]`).
    public static func decode(_ value: JSON?, for type: CRMType, at loc: [ValidationIssue.Loc]) -> Result<Credentials, APIError> {
        guard let value, !value.isNull else {
            return .failure(.validation([ValidationIssue(loc, "Field required", type: "missing")]))
        }
        guard var r = FieldReader(value, at: loc) else {
            return .failure(.validation([ValidationIssue(loc, "Input should be a valid dictionary", type: "dict_type")]))
        }
        r.rejectUnknown(allowedKeys[type] ?? [])
        for (key, value) in r.pairs where key != "private_key" {
            if let text = value.stringValue, text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                r.add(key, "Value must not contain control characters (CR, LF, tab, ...)", type: "value_error")
            }
        }
        let credentials: Credentials?
        switch type {
        case .klaviyo:
            credentials = r.secret("api_key", required: true).map { .klaviyo(apiKey: $0) }
        case .hubspot:
            credentials = r.secret("access_token", required: true).map { .hubspot(accessToken: $0) }
        case .salesforce:
            credentials = decodeSalesforce(&r).map { .salesforce($0) }
        case .creatio:
            credentials = decodeCreatio(&r).map { .creatio($0) }
        }
        if let credentials, r.issues.isEmpty {
            for (key, url) in credentials.urls {
                if let problem = CRMURL.syntaxProblem(url) { r.add(key, problem, type: "url_parsing") }
            }
            if case let .salesforce(.password(_, _, _, _, _, domain?)) = credentials, domain != "login", domain != "test" {
                r.add("domain", "Input should be 'login' or 'test'", type: "enum")
            }
        }
        guard let credentials, r.issues.isEmpty else { return .failure(.validation(r.issues)) }
        return .success(credentials)
    }

    /// Every key some credential shape of the type uses; anything else is a typo worth reporting.
    static let allowedKeys: [CRMType: Set<String>] = [
        .klaviyo: ["api_key"],
        .hubspot: ["access_token"],
        .salesforce: ["client_id", "client_secret", "instance_url", "username", "private_key", "login_url", "access_token",
                      "refresh_token", "password", "security_token", "domain"],
        .creatio: ["base_url", "username", "password", "identity_url", "client_id", "client_secret"],
    ]

    private static func decodeSalesforce(_ r: inout FieldReader) -> SalesforceCredentials? {
        if r.has("access_token") {
            let token = r.secret("access_token", required: true)
            let instance = r.string("instance_url", required: true)
            let refresh = r.secret("refresh_token")
            let clientID = r.string("client_id")
            let clientSecret = r.secret("client_secret")
            if refresh != nil && clientID == nil { r.add("client_id", "Field required to refresh the token", type: "missing") }
            guard let token, let instance else { return nil }
            return .token(accessToken: token, instanceURL: instance, refreshToken: refresh, clientID: clientID, clientSecret: clientSecret)
        }
        if r.has("private_key") {
            let clientID = r.string("client_id", required: true)
            let username = r.string("username", required: true)
            let key = r.secret("private_key", required: true)
            let login = r.string("login_url")
            if let pem = key?.revealed, !pem.contains("-----BEGIN") {
                r.add("private_key", "Value error, private_key must be a PEM-encoded RSA private key", type: "value_error")
            }
            guard let clientID, let username, let key else { return nil }
            return .jwtBearer(clientID: clientID, username: username, privateKey: key, loginURL: login)
        }
        if r.has("username") || r.has("password") {
            let clientID = r.string("client_id", required: true)
            let clientSecret = r.secret("client_secret", required: true)
            let username = r.string("username", required: true)
            let password = r.secret("password", required: true)
            let token = r.secret("security_token")
            let domain = r.string("domain")
            guard let clientID, let clientSecret, let username, let password else { return nil }
            return .password(clientID: clientID, clientSecret: clientSecret, username: username, password: password, securityToken: token, domain: domain)
        }
        if r.has("client_id") || r.has("client_secret") || r.has("instance_url") {
            let clientID = r.string("client_id", required: true)
            let clientSecret = r.secret("client_secret", required: true)
            let instance = r.string("instance_url", required: true)
            guard let clientID, let clientSecret, let instance else { return nil }
            return .clientCredentials(clientID: clientID, clientSecret: clientSecret, instanceURL: instance)
        }
        r.add(nil, "Salesforce credentials need one of: client_id+client_secret+instance_url (client credentials); client_id+username+private_key (JWT bearer); access_token+instance_url (token); client_id+client_secret+username+password (legacy password flow)", type: "missing")
        return nil
    }

    private static func decodeCreatio(_ r: inout FieldReader) -> CreatioCredentials? {
        let baseURL = r.string("base_url", required: true)
        if r.has("client_id") || r.has("client_secret") || r.has("identity_url") {
            let identity = r.string("identity_url", required: true)
            let clientID = r.string("client_id", required: true)
            let clientSecret = r.secret("client_secret", required: true)
            guard let baseURL, let identity, let clientID, let clientSecret else { return nil }
            return .oauth(baseURL: baseURL, identityURL: identity, clientID: clientID, clientSecret: clientSecret)
        }
        let username = r.string("username", required: true)
        let password = r.secret("password", required: true)
        guard let baseURL, let username, let password else { return nil }
        return .forms(baseURL: baseURL, username: username, password: password)
    }

    /// The JSON that is encrypted into the database (the only place plaintext is serialised).
    public var storageJSON: JSON {
        func opt(_ s: String?) -> JSON { s.map(JSON.string) ?? .null }
        func opt(_ s: Secret?) -> JSON { s.map { JSON.string($0.revealed) } ?? .null }
        var pairs: [(String, JSON)]
        switch self {
        case let .klaviyo(key): pairs = [("api_key", .string(key.revealed))]
        case let .hubspot(token): pairs = [("access_token", .string(token.revealed))]
        case let .salesforce(sf):
            switch sf {
            case let .clientCredentials(id, secret, url):
                pairs = [("client_id", .string(id)), ("client_secret", .string(secret.revealed)), ("instance_url", .string(url))]
            case let .jwtBearer(id, user, key, login):
                pairs = [("client_id", .string(id)), ("username", .string(user)), ("private_key", .string(key.revealed)), ("login_url", opt(login))]
            case let .token(token, url, refresh, id, secret):
                pairs = [("access_token", .string(token.revealed)), ("instance_url", .string(url)), ("refresh_token", opt(refresh)), ("client_id", opt(id)), ("client_secret", opt(secret))]
            case let .password(id, secret, user, password, token, domain):
                pairs = [("client_id", .string(id)), ("client_secret", .string(secret.revealed)), ("username", .string(user)), ("password", .string(password.revealed)), ("security_token", opt(token)), ("domain", opt(domain))]
            }
        case let .creatio(c):
            switch c {
            case let .forms(url, user, password):
                pairs = [("base_url", .string(url)), ("username", .string(user)), ("password", .string(password.revealed))]
            case let .oauth(url, identity, id, secret):
                pairs = [("base_url", .string(url)), ("identity_url", .string(identity)), ("client_id", .string(id)), ("client_secret", .string(secret.revealed))]
            }
        }
        return .object(pairs.filter { !$0.1.isNull })
    }
}
