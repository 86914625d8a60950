import CRMCore
import XCTest

@testable import CRMService

final class ConfigTests: XCTestCase {
    static let good = ["DB_DSN": "host=db.internal port=5432 dbname=crm user=crm password=PgPassw0rd!", "CRM_ENCRYPTION_KEY": testKey32]

    private func load(_ env: [String: String], file: StaticString = #filePath, line: UInt = #line) -> Config? {
        switch Config.load(configReader(env)) {
        case let .success(config): return config
        case let .failure(problems):
            XCTFail("expected a valid config, got \(problems)", file: file, line: line)
            return nil
        }
    }

    private func problems(_ env: [String: String], file: StaticString = #filePath, line: UInt = #line) -> [String] {
        switch Config.load(configReader(env)) {
        case .success: XCTFail("expected problems", file: file, line: line); return []
        case let .failure(p): return p.problems
        }
    }

    func testReportsEveryProblemAtOnce() {
        let key31 = String(testKey32.dropLast())
        let found = problems([
            "CRM_ENCRYPTION_KEY": key31, "PORT": "eighty", "CRM_KLAVIYO_BASE_URL": "http://klaviyo.example.com",
        ])
        XCTAssertEqual(found.count, 4, "\(found)")
        XCTAssertEqual(found.filter { $0.hasPrefix("DB_DSN ") }.count, 1, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("CRM_ENCRYPTION_KEY ") && $0.contains("32") && $0.contains("31") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("PORT ") && $0.contains("eighty") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("CRM_KLAVIYO_BASE_URL") && $0.contains("https") && $0.contains("CRM_ALLOW_PRIVATE_URLS") }, "\(found)")
        let description = ConfigProblems(problems: found).description
        XCTAssertTrue(description.contains("4 problem"))
        XCTAssertFalse(description.contains(key31), "the key itself is never printed")
    }

    func testMoreProblems() {
        XCTAssertTrue(problems([:]).contains { $0.hasPrefix("CRM_ENCRYPTION_KEY ") && $0.contains("required") })
        let found = problems(Self.good.merging([
            "CRM_ENCRYPTION_KEY": testKey32 + "x", "PORT": "70000", "LOG_LEVEL": "loud", "DEBUG": "maybe", "FCGI_THREADS": "0",
            "CRM_HTTP_TIMEOUT_S": "fast", "CRM_HUBSPOT_BASE_URL": "not a url", "CRM_SALESFORCE_LOGIN_URL": "https://127.0.0.1",
        ]) { $1 })
        for name in ["CRM_ENCRYPTION_KEY", "PORT", "LOG_LEVEL", "DEBUG", "FCGI_THREADS", "CRM_HTTP_TIMEOUT_S", "CRM_HUBSPOT_BASE_URL",
                     "CRM_SALESFORCE_LOGIN_URL"] {
            XCTAssertTrue(found.contains { $0.hasPrefix(name) }, "\(name) not reported in \(found)")
        }
        XCTAssertFalse(found.joined().contains(testKey32), "the key itself is never printed")
    }

    func testAcceptsAGoodConfig() throws {
        let config = try XCTUnwrap(load(Self.good.merging([
            "PORT": "9000", "API_KEY": "api-key-123", "CORS_ALLOWED_ORIGINS": " https://a.example.com ,https://b.example.com,",
            "LOG_LEVEL": "DEBUG", "DEBUG": "true", "DB_POOL_SIZE": "4", "DB_CONNECT_TIMEOUT_S": "2", "CRM_RETRY_MAX_ATTEMPTS": "3",
            "CRM_HUBSPOT_BASE_URL": "https://api.hubapi.example", "CRM_SALESFORCE_API_VERSION": "61.0",
        ]) { $1 }))
        XCTAssertEqual(config.databaseDSN, Self.good["DB_DSN"])
        XCTAssertEqual(config.encryptionKey.revealed, testKey32)
        XCTAssertEqual(config.port, 9000)
        XCTAssertEqual(config.apiKey?.revealed, "api-key-123")
        XCTAssertEqual(config.corsAllowedOrigins, ["https://a.example.com", "https://b.example.com"])
        XCTAssertEqual(config.logLevel, "debug")
        XCTAssertTrue(config.debug)
        XCTAssertEqual(config.dbPoolSize, 4)
        XCTAssertEqual(config.dbConnectTimeoutSeconds, 2)
        XCTAssertEqual(config.crmRetryMaxAttempts, 3)
        XCTAssertEqual(config.endpoints.hubspotBaseURL, "https://api.hubapi.example")
        XCTAssertEqual(config.endpoints.salesforceAPIVersion, "v61.0")
        XCTAssertFalse(config.allowPrivateURLs)

        let defaults = try XCTUnwrap(load(Self.good))
        XCTAssertEqual(defaults.port, 8001)
        XCTAssertNil(defaults.apiKey)
        XCTAssertEqual(defaults.crmHTTPTimeoutSeconds, 10)
        XCTAssertEqual(defaults.crmRetryMaxAttempts, 8)
        XCTAssertEqual(defaults.crmRetryBaseDelaySeconds, 30)
        XCTAssertEqual(defaults.corsAllowedOrigins, [])
        XCTAssertEqual(defaults.endpoints.salesforceAPIVersion, "v62.0")
        XCTAssertTrue(defaults.endpoints.klaviyoBaseURL.hasPrefix("https://"))
        XCTAssertNil(load(Self.good.merging(["API_KEY": ""]) { $1 })?.apiKey, "an empty API_KEY means none")
    }

    func testPrivateURLsNeedTheOptIn() {
        let local = Self.good.merging(["CRM_KLAVIYO_BASE_URL": "http://127.0.0.1:9100", "CRM_HUBSPOT_BASE_URL": "http://localhost:9101"]) { $1 }
        XCTAssertEqual(problems(local).filter { $0.contains("CRM_ALLOW_PRIVATE_URLS") }.count, 2)
        let allowed = load(local.merging(["CRM_ALLOW_PRIVATE_URLS": "true"]) { $1 })
        XCTAssertEqual(allowed?.endpoints.klaviyoBaseURL, "http://127.0.0.1:9100")
        XCTAssertEqual(allowed?.allowPrivateURLs, true)
        XCTAssertFalse(problems(Self.good.merging(["CRM_KLAVIYO_BASE_URL": "https://10.1.2.3"]) { $1 }).isEmpty)
    }

    func testCloudSQLInstanceConnectionName() {
        let name = "my-project:europe-west1:crm-db"
        let alone = load(["INSTANCE_CONNECTION_NAME": name, "CRM_ENCRYPTION_KEY": testKey32])
        XCTAssertEqual(alone?.databaseDSN, "host=/cloudsql/\(name)")
        XCTAssertEqual(alone?.instanceConnectionName, name)
        let keyword = load(["INSTANCE_CONNECTION_NAME": name, "DB_DSN": "dbname=crm user=crm", "CRM_ENCRYPTION_KEY": testKey32])
        XCTAssertTrue(keyword?.databaseDSN.hasPrefix("dbname=crm user=crm") ?? false)
        XCTAssertTrue(keyword?.databaseDSN.hasSuffix(" host=/cloudsql/\(name)") ?? false, keyword?.databaseDSN ?? "")
        let url = load(["INSTANCE_CONNECTION_NAME": name, "DB_DSN": "postgresql://crm@/crm", "CRM_ENCRYPTION_KEY": testKey32])
        XCTAssertEqual(url?.databaseDSN, "postgresql://crm@/crm?host=%2Fcloudsql%2Fmy-project%3Aeurope-west1%3Acrm-db")
    }

    func testEffectiveDescriptionHidesSecrets() throws {
        let secrets = ["PgPassw0rd!", testKey32, "api-key-123"]
        for dsn in ["host=db port=5432 dbname=crm user=crm password=PgPassw0rd!", "postgresql://crm:PgPassw0rd!@db:5432/crm",
                    "postgres://crm:PgPassw0rd!@db/crm?sslmode=require"] {
            let config = try XCTUnwrap(load(["DB_DSN": dsn, "CRM_ENCRYPTION_KEY": testKey32, "API_KEY": "api-key-123"]))
            let text = config.effectiveDescription.map { "\($0.0)=\($0.1)" }.joined(separator: "\n")
            for secret in secrets { XCTAssertFalse(text.contains(secret), "\(secret) leaks for \(dsn):\n\(text)") }
            let dsnLine = try XCTUnwrap(config.effectiveDescription.first { $0.0 == "DB_DSN" }?.1)
            XCTAssertTrue(dsnLine.contains("db"), "the rest of the DSN stays readable: \(dsnLine)")
            XCTAssertFalse("\(config)".contains(testKey32) || "\(config)".contains("api-key-123"), "Config itself prints no secret")
        }
        XCTAssertEqual(load(Self.good)?.effectiveDescription.first { $0.0 == "API_KEY" }?.1, "(unset: no API key required)")
    }
}
