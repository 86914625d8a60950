import CRMCore
import XCTest

final class SecretTests: XCTestCase {
    /// Every way a value commonly ends up in a log line or an error message.
    private func renderings(_ value: Any) -> [String] {
        var dumped = ""
        dump(value, to: &dumped)
        return ["\(value)", String(describing: value), String(reflecting: value), dumped,
                "\(Optional(value) as Any)", "\([value])", Mirror(reflecting: value).children.map { "\($0)" }.joined()]
    }

    private func assertHides(_ secrets: [String], in value: Any, file: StaticString = #filePath, line: UInt = #line) {
        for text in renderings(value) {
            for secret in secrets {
                XCTAssertFalse(text.contains(secret), "\(secret) leaks in \(text)", file: file, line: line)
            }
        }
    }

    func testSecretNeverPrintsItsValue() {
        let secret = Secret("sk_live_TOPSECRET")
        XCTAssertEqual("\(secret)", "<redacted>")
        XCTAssertEqual(String(reflecting: secret), "<redacted>")
        assertHides(["TOPSECRET"], in: secret)
        XCTAssertEqual(secret.revealed, "sk_live_TOPSECRET")
    }

    func testEveryCredentialShapeHidesItsSecrets() {
        let cases: [(Credentials, [String])] = [
            (.klaviyo(apiKey: Secret("pk_SECRET_1")), ["pk_SECRET_1"]),
            (.hubspot(accessToken: Secret("pat-SECRET-2")), ["pat-SECRET-2"]),
            (.salesforce(.clientCredentials(clientID: "cid", clientSecret: Secret("cs_SECRET_3"), instanceURL: "https://a.my.salesforce.com")),
             ["cs_SECRET_3"]),
            (.salesforce(.jwtBearer(clientID: "cid", username: "u@x.com", privateKey: Secret("-----BEGIN KEY SECRET_4"), loginURL: nil)),
             ["SECRET_4"]),
            (.salesforce(.token(accessToken: Secret("at_SECRET_5"), instanceURL: "https://a.my.salesforce.com",
                                refreshToken: Secret("rt_SECRET_6"), clientID: "cid", clientSecret: Secret("cs_SECRET_7"))),
             ["at_SECRET_5", "rt_SECRET_6", "cs_SECRET_7"]),
            (.salesforce(.password(clientID: "cid", clientSecret: Secret("cs_SECRET_8"), username: "u", password: Secret("pw_SECRET_9"),
                                   securityToken: Secret("st_SECRET_10"), domain: "test")),
             ["cs_SECRET_8", "pw_SECRET_9", "st_SECRET_10"]),
            (.creatio(.forms(baseURL: "https://a.creatio.com", username: "u", password: Secret("pw_SECRET_11"))), ["pw_SECRET_11"]),
            (.creatio(.oauth(baseURL: "https://a.creatio.com", identityURL: "https://id.creatio.com", clientID: "c",
                             clientSecret: Secret("cs_SECRET_12"))), ["cs_SECRET_12"]),
        ]
        for (credentials, secrets) in cases {
            assertHides(secrets, in: credentials)
            XCTAssertFalse("credentials: \(credentials)".contains("SECRET"))
            // The storage form (what gets encrypted) does carry them, and only it.
            let stored = credentials.storageJSON.jsonString
            for secret in secrets { XCTAssertTrue(stored.contains(secret), "\(secret) missing from storageJSON") }
        }
    }

    func testDecodeErrorsNeverEchoSecretValues() {
        let json: JSON = ["client_id": "cid", "username": "u", "private_key": "not-a-pem-SECRET_X", "login_url": "nope"]
        guard case let .failure(error) = Credentials.decode(json, for: .salesforce, at: ["body", "credentials"]) else {
            return XCTFail("a private_key that is not PEM must be refused")
        }
        XCTAssertFalse("\(error)".contains("SECRET_X"))
        XCTAssertFalse(String(reflecting: error).contains("SECRET_X"))
    }
}
