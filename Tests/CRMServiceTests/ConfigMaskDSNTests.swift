import CRMCore
import XCTest

@testable import CRMService

/// Bug: Config.maskDSN (Sources/CRMService/Config/Config.swift, `static func maskDSN`) only masks a
/// `password=` token between single spaces, or `user:password@` in a URL. libpq also accepts
/// `password = x` (spaces around '='), quoted values with spaces (`password='a b'`), and `?password=` in a URL's query: effectiveDescription (what `check-config` prints) shows those.
final class KnownBugConfigMaskDSNTests: XCTestCase {
    func testKnownBugEffectiveDescriptionHidesEveryLibpqPasswordForm() throws {
        for dsn in ["host=db dbname=crm user=crm password = PgPassw0rd",
                    "host=db dbname=crm user=crm password='Pg Passw0rd'",
                    "postgresql://crm@db/crm?password=PgPassw0rd"] {
            let config = try Config.load(configReader(["DB_DSN": dsn, "CRM_ENCRYPTION_KEY": testKey32])).get()
            let shown = try XCTUnwrap(config.effectiveDescription.first { $0.0 == "DB_DSN" }?.1)
            XCTAssertFalse(shown.contains("Passw0rd"), "\(dsn) is shown as \(shown)")
        }
    }
}
