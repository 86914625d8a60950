import CRMCore
import XCTest

@testable import CRMService
@testable import CRMStore  // IntegrationRecord's memberwise initializer

/// GET /crm/list writes its body in place (`Handlers.listBody`); these hold it to the same
/// bytes the JSON tree gives for the contract's shape, for every kind of value it can carry.
final class ListBodyTests: XCTestCase {
    /// The list body as a JSON tree: the contract's field order and values.
    private func tree(_ records: [IntegrationRecord]) -> JSON {
        .object([
            ("integrations", .array(records.map { r in
                .object([
                    ("crm_type", .string(r.crmType.rawValue)), ("is_active", .bool(r.isActive)), ("status", .string(r.status)),
                    ("settings", r.settings.json), ("created_at", JSON(r.createdAt)), ("updated_at", JSON(r.updatedAt)),
                    ("last_sync_at", JSON(r.lastSyncAt)), ("last_sync_status", JSON(r.lastSyncStatus)),
                ])
            })),
            ("count", .int(Int64(records.count))),
        ])
    }

    private func record(_ type: CRMType, settings: IntegrationSettings = .defaults, active: Bool = true, status: String = "connected",
                        lastSyncAt: String? = nil, lastSyncStatus: String? = nil) -> IntegrationRecord {
        IntegrationRecord(crmType: type, isActive: active, status: status, settings: settings, createdAt: Timestamp("2026-11-28T21:53:07.123456Z")!,
                          updatedAt: Timestamp("2026-12-01T08:00:00Z")!, lastSyncAt: lastSyncAt.flatMap(Timestamp.init), lastSyncStatus: lastSyncStatus)
    }

    func testNoIntegrations() {
        XCTAssertEqual(String(decoding: Handlers.listBody([]), as: UTF8.self), #"{"integrations":[],"count":0}"#)
    }

    func testEveryFieldKindIsWrittenAsTheTreeWritesIt() {
        var specific = IntegrationSettings.defaults
        specific.syncEvents = false
        specific.specific = [("list_id", "Xy12\"\\\u{1}"), ("events", .object([("order_placed", .array(["a", 1, 2.5, .null, true]))]))]
        specific.fieldMapping = [("first_name", "FirstName__c"), ("phone", "Tél")]
        let records = [
            record(.creatio),
            record(.hubspot, settings: specific, active: false, status: "error: \"token\"\n expired",
                   lastSyncAt: "2026-12-02T10:11:12.5Z", lastSyncStatus: "failed"),
            record(.klaviyo, lastSyncAt: "2026-12-02T10:11:12Z", lastSyncStatus: "success"),
        ]
        let written = Handlers.listBody(records)
        XCTAssertEqual(String(decoding: written, as: UTF8.self), tree(records).jsonString)
        XCTAssertEqual(try JSONParser.parse(written)["count"], 3)
    }

    func testSettingsWriteMatchesTheirJSON() {
        var settings = IntegrationSettings.defaults
        var out = JSONBytes(capacity: 0)
        settings.write(to: &out)
        XCTAssertEqual(out.bytes, settings.json.serialized())
        settings.syncContacts = false
        settings.specific = [("object", "Lead"), ("api_version", "v61.0")]
        settings.fieldMapping = []
        out = JSONBytes(capacity: 0)
        settings.write(to: &out)
        XCTAssertEqual(String(decoding: out.bytes, as: UTF8.self), settings.json.jsonString)
        XCTAssertEqual(String(decoding: out.bytes, as: UTF8.self),
                       #"{"sync_contacts":false,"sync_events":true,"object":"Lead","api_version":"v61.0","field_mapping":{}}"#)
    }
}
