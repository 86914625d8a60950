import CRMConnectors
import CRMCore
import HTTPClient

/// The service's configuration: environment variables, or a `.env` file beside them
/// (the environment wins). Every problem is collected so start-up reports them all at once.
public struct Config: Sendable {
    public var databaseDSN: String
    public var instanceConnectionName: String?
    public var environment: String
    public var debug: Bool
    public var logLevel: String
    public var encryptionKey: Secret
    public var port: Int
    public var apiKey: Secret?
    public var corsAllowedOrigins: [String]
    public var fcgiSocket: String
    public var fcgiThreads: Int
    /// Requests in progress at most (accepted, not yet answered, most of them waiting on a CRM).
    public var fcgiMaxRequests: Int
    public var crmHTTPTimeoutSeconds: Double
    public var crmRetryMaxAttempts: Int
    public var crmRetryBaseDelaySeconds: Double
    public var dbPoolSize: Int
    public var dbConnectTimeoutSeconds: Int
    /// Background deliveries (queued and retried syncs) in progress at once per worker.
    public var sweepConcurrency: Int
    public var allowPrivateURLs: Bool
    public var endpoints: CRMEndpoints

    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Reads and checks everything; `problems` lists each variable that is wrong and how to fix it.
    public static func load(_ reader: EnvironmentConfig) -> Result<Config, ConfigProblems> {
        var p = ConfigProblems()
        func string(_ name: String, secret: Bool = false) -> String? {
            let value = reader.string(forKey: ConfigKey(name.lowercased().split(separator: "_").map(String.init)), isSecret: secret)
            return value?.isEmpty == true ? nil : value
        }
        func int(_ name: String, default value: Int, range: ClosedRange<Int>) -> Int {
            guard let raw = string(name) else { return value }
            guard let n = Int(raw), range.contains(n) else { p.add(name, "must be an integer from \(range.lowerBound) to \(range.upperBound) (got '\(raw)')"); return value }
            return n
        }
        func double(_ name: String, default value: Double, range: ClosedRange<Double>) -> Double {
            guard let raw = string(name) else { return value }
            guard let n = Double(raw), range.contains(n) else { p.add(name, "must be a number from \(range.lowerBound) to \(range.upperBound) (got '\(raw)')"); return value }
            return n
        }
        func bool(_ name: String, default value: Bool) -> Bool {
            guard let raw = string(name)?.lowercased() else { return value }
            switch raw {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default: p.add(name, "must be true or false (got '\(raw)')"); return value
            }
        }
        func url(_ name: String, default value: String) -> String {
            let raw = string(name) ?? value
            if CRMURL(raw) == nil { p.add(name, "must be an absolute http(s) URL (got '\(raw)')") }
            return raw
        }

        let instance = string("INSTANCE_CONNECTION_NAME")
        var dsn = string("DB_DSN", secret: true) ?? ""
        if let instance {
            dsn = dsn.isEmpty ? "host=/cloudsql/\(instance)" : Self.withCloudSQLHost(dsn, instance: instance)
        } else if dsn.isEmpty {
            p.add("DB_DSN", "is required: a libpq DSN such as 'host=127.0.0.1 port=5432 dbname=crm user=crm password=…' or a postgresql:// URL (or set INSTANCE_CONNECTION_NAME for Cloud SQL)")
        }
        let key = string("CRM_ENCRYPTION_KEY", secret: true) ?? ""
        if key.count != 32 {
            p.add("CRM_ENCRYPTION_KEY", key.isEmpty ? "is required: exactly 32 characters (e.g. `openssl rand -hex 16`)" : "must be exactly 32 characters (it has \(key.count))")
        }
        let logLevel = (string("LOG_LEVEL") ?? "info").lowercased()
        if !logLevels.contains(logLevel) { p.add("LOG_LEVEL", "must be one of \(logLevels.joined(separator: ", ")) (got '\(logLevel)')") }
        let revision = string("CRM_KLAVIYO_REVISION") ?? CRMEndpoints.defaults.klaviyoRevision
        if !Timestamp.isISO8601(revision) || revision.count != 10 { p.add("CRM_KLAVIYO_REVISION", "must be a date YYYY-MM-DD (got '\(revision)')") }
        var sfVersion = string("CRM_SALESFORCE_API_VERSION") ?? CRMEndpoints.defaults.salesforceAPIVersion
        if !sfVersion.hasPrefix("v") { sfVersion = "v" + sfVersion }
        if !(sfVersion.hasSuffix(".0") && Int(sfVersion.dropFirst().dropLast(2)) != nil) { p.add("CRM_SALESFORCE_API_VERSION", "must look like v62.0 (got '\(sfVersion)')") }
        let hubspotVersion = string("CRM_HUBSPOT_API_VERSION") ?? CRMEndpoints.defaults.hubspotAPIVersion
        if hubspotVersion.isEmpty || !hubspotVersion.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) {
            p.add("CRM_HUBSPOT_API_VERSION", "must be a path version such as 2026-03 or v3 (got '\(hubspotVersion)')")
        }
        let endpoints = CRMEndpoints(
            klaviyoBaseURL: url("CRM_KLAVIYO_BASE_URL", default: CRMEndpoints.defaults.klaviyoBaseURL), klaviyoRevision: revision,
            hubspotBaseURL: url("CRM_HUBSPOT_BASE_URL", default: CRMEndpoints.defaults.hubspotBaseURL), hubspotAPIVersion: hubspotVersion,
            salesforceLoginURL: url("CRM_SALESFORCE_LOGIN_URL", default: CRMEndpoints.defaults.salesforceLoginURL), salesforceAPIVersion: sfVersion)

        let config = Config(
            databaseDSN: dsn,
            instanceConnectionName: instance,
            environment: string("ENVIRONMENT") ?? "development",
            debug: bool("DEBUG", default: false),
            logLevel: logLevel,
            encryptionKey: Secret(key),
            port: int("PORT", default: 8001, range: 1...65535),
            apiKey: string("API_KEY", secret: true).map(Secret.init),
            corsAllowedOrigins: (string("CORS_ALLOWED_ORIGINS") ?? "").split(separator: ",").map { $0.trimming() }.filter { !$0.isEmpty },
            fcgiSocket: string("FCGI_SOCKET") ?? "/run/crm-service/fcgi.sock",
            fcgiThreads: int("FCGI_THREADS", default: 16, range: 1...1024),
            fcgiMaxRequests: int("FCGI_MAX_REQUESTS", default: 1024, range: 1...100_000),
            crmHTTPTimeoutSeconds: double("CRM_HTTP_TIMEOUT_S", default: 10, range: 0.1...600),
            crmRetryMaxAttempts: int("CRM_RETRY_MAX_ATTEMPTS", default: 8, range: 1...100),
            crmRetryBaseDelaySeconds: double("CRM_RETRY_BASE_DELAY_S", default: 30, range: 0...86_400),
            dbPoolSize: int("DB_POOL_SIZE", default: 10, range: 1...500),
            dbConnectTimeoutSeconds: int("DB_CONNECT_TIMEOUT_S", default: 3, range: 1...120),
            sweepConcurrency: int("CRM_SWEEP_CONCURRENCY", default: 16, range: 0...1024),
            allowPrivateURLs: bool("CRM_ALLOW_PRIVATE_URLS", default: false),
            endpoints: endpoints)
        for problem in config.privateURLProblems() { p.problems.append(problem) }
        return p.problems.isEmpty ? .success(config) : .failure(p)
    }

    /// Unless private URLs are allowed, each CRM_* URL must be https and resolve to public addresses.
    func privateURLProblems() -> [String] {
        guard !allowPrivateURLs else { return [] }
        let urls = [("CRM_KLAVIYO_BASE_URL", endpoints.klaviyoBaseURL), ("CRM_HUBSPOT_BASE_URL", endpoints.hubspotBaseURL),
                    ("CRM_SALESFORCE_LOGIN_URL", endpoints.salesforceLoginURL)]
        return urls.compactMap { name, raw in
            guard let url = CRMURL(raw) else { return nil }
            if url.scheme != "https" { return "\(name): must be https (set CRM_ALLOW_PRIVATE_URLS=true only for local testing)" }
            if let problem = URLGuard.literalPrivateProblem(host: url.host) { return "\(name): \(problem) (set CRM_ALLOW_PRIVATE_URLS=true only for local testing)" }
            return nil
        }
    }

    static func withCloudSQLHost(_ dsn: String, instance: String) -> String {
        if dsn.hasPrefix("postgres://") || dsn.hasPrefix("postgresql://") {
            let separator = dsn.contains("?") ? "&" : "?"
            return dsn + separator + "host=%2Fcloudsql%2F" + instance.replacingColons()
        }
        return dsn + " host=/cloudsql/\(instance)"
    }

    /// What `check-config` prints: every setting, secrets masked.
    public var effectiveDescription: [(String, String)] {
        [
            ("DB_DSN", Self.maskDSN(databaseDSN)),
            ("INSTANCE_CONNECTION_NAME", instanceConnectionName ?? "(unset)"),
            ("ENVIRONMENT", environment), ("DEBUG", String(debug)), ("LOG_LEVEL", logLevel),
            ("CRM_ENCRYPTION_KEY", "******** (\(encryptionKey.revealed.count) characters)"),
            ("PORT", String(port)), ("API_KEY", apiKey == nil ? "(unset: no API key required)" : "********"),
            ("CORS_ALLOWED_ORIGINS", corsAllowedOrigins.isEmpty ? "(none)" : corsAllowedOrigins.joined(separator: ",")),
            ("FCGI_SOCKET", fcgiSocket), ("FCGI_THREADS", String(fcgiThreads)), ("FCGI_MAX_REQUESTS", String(fcgiMaxRequests)),
            ("CRM_HTTP_TIMEOUT_S", String(crmHTTPTimeoutSeconds)), ("CRM_RETRY_MAX_ATTEMPTS", String(crmRetryMaxAttempts)),
            ("CRM_RETRY_BASE_DELAY_S", String(crmRetryBaseDelaySeconds)), ("DB_POOL_SIZE", String(dbPoolSize)),
            ("DB_CONNECT_TIMEOUT_S", String(dbConnectTimeoutSeconds)), ("CRM_SWEEP_CONCURRENCY", String(sweepConcurrency)),
            ("CRM_ALLOW_PRIVATE_URLS", String(allowPrivateURLs)),
            ("CRM_KLAVIYO_BASE_URL", endpoints.klaviyoBaseURL), ("CRM_KLAVIYO_REVISION", endpoints.klaviyoRevision),
            ("CRM_HUBSPOT_BASE_URL", endpoints.hubspotBaseURL), ("CRM_HUBSPOT_API_VERSION", endpoints.hubspotAPIVersion),
            ("CRM_SALESFORCE_LOGIN_URL", endpoints.salesforceLoginURL), ("CRM_SALESFORCE_API_VERSION", endpoints.salesforceAPIVersion),
        ]
    }

    /// The DSN with every password replaced by `********`: `password` in keyword form (spaces
    /// around `=` and quoted values allowed, as libpq reads them), and in URLs both the
    /// `user:password@` part and a `password=` query parameter.
    static func maskDSN(_ dsn: String) -> String {
        if dsn.hasPrefix("postgres://") || dsn.hasPrefix("postgresql://") {
            var url = dsn
            if let scheme = url.firstRange(of: "://") {
                let rest = url[scheme.upperBound...]
                let hostEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
                if let at = rest[..<hostEnd].lastIndex(of: "@"), let colon = rest[..<at].firstIndex(of: ":") {
                    url = String(url[..<colon]) + ":********" + String(url[at...])
                }
            }
            guard let q = url.firstIndex(of: "?") else { return url }
            let query = url[url.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false).map { pair in
                pair.lowercased().hasPrefix("password=") ? "password=********" : String(pair)
            }
            return String(url[...q]) + query.joined(separator: "&")
        }
        return maskKeywordDSN(dsn)
    }

    /// Keyword/value DSN: `key = value` pairs, values bare or single-quoted with `\` escapes.
    static func maskKeywordDSN(_ dsn: String) -> String {
        let chars = Array(dsn)
        var out = ""
        var i = 0
        func skipSpaces() { while i < chars.count, chars[i].isWhitespace { i += 1 } }
        skipSpaces()
        while i < chars.count {
            var key = ""
            while i < chars.count, chars[i] != "=", !chars[i].isWhitespace { key.append(chars[i]); i += 1 }
            skipSpaces()
            guard i < chars.count, chars[i] == "=" else { return out + key + " ********" }  // malformed: hide the rest
            i += 1
            skipSpaces()
            var value = ""
            if i < chars.count, chars[i] == "'" {
                i += 1
                while i < chars.count, chars[i] != "'" {
                    if chars[i] == "\\", i + 1 < chars.count { i += 1 }
                    value.append(chars[i]); i += 1
                }
                i += 1
            } else {
                while i < chars.count, !chars[i].isWhitespace { value.append(chars[i]); i += 1 }
            }
            if !out.isEmpty { out += " " }
            out += key + "=" + (key.lowercased() == "password" ? "********" : (value.contains(" ") || value.isEmpty ? "'\(value)'" : value))
            skipSpaces()
        }
        return out
    }
}

public struct ConfigProblems: Error, Sendable, CustomStringConvertible {
    public var problems: [String] = []
    mutating func add(_ variable: String, _ message: String) { problems.append("\(variable) \(message)") }
    public var description: String {
        "The configuration has \(problems.count) problem(s):\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

extension String {
    func replacingColons() -> String { split(separator: ":", omittingEmptySubsequences: false).joined(separator: "%3A") }
}

/// What `migrate` needs: only the database.
public struct DatabaseSettings: Sendable {
    public var dsn: String
    public var connectTimeoutSeconds: Int
}

extension Config {
    public static func loadDatabase(_ reader: EnvironmentConfig) -> Result<DatabaseSettings, ConfigProblems> {
        var p = ConfigProblems()
        let instance = reader.string(forKey: ["instance", "connection", "name"]).flatMap { $0.isEmpty ? nil : $0 }
        var dsn = reader.string(forKey: ["db", "dsn"], isSecret: true) ?? ""
        if let instance { dsn = dsn.isEmpty ? "host=/cloudsql/\(instance)" : withCloudSQLHost(dsn, instance: instance) }
        if dsn.isEmpty { p.add("DB_DSN", "is required (or INSTANCE_CONNECTION_NAME for Cloud SQL)") }
        let timeoutRaw = reader.string(forKey: ["db", "connect", "timeout", "s"]) ?? "3"
        let timeout = Int(timeoutRaw) ?? 3
        return p.problems.isEmpty ? .success(DatabaseSettings(dsn: dsn, connectTimeoutSeconds: timeout)) : .failure(p)
    }
}
