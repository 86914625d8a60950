import CRMCore
import XCTest

/// Each CRM's settings accept the common keys and their own, and refuse every other CRM's.
final class SettingsKeysTests: XCTestCase {
    /// A value each key accepts for the type that owns it.
    private let own: [CRMType: [(String, String)]] = [
        .klaviyo: [("list_id", "L1")],
        .salesforce: [("object", "Lead"), ("api_version", "v61.0"), ("external_id_field", "Ext__c"), ("events", "task")],
        .creatio: [("contact_entity", "Contact")],
        .hubspot: [("events", "note")],
    ]

    private func issues(_ type: CRMType, _ pairs: [(String, JSON)]) -> [String] {
        switch IntegrationSettings.decode(.object(pairs), for: type, at: ["settings"]) {
        case .success: return []
        case let .failure(.validation(issues)): return issues.map { "\($0.loc.last.map { "\($0)" } ?? "?"):\($0.type)" }
        case let .failure(other): return ["\(other)"]
        }
    }

    func testOwnKeysAndCommonKeysPassOtherCRMsKeysAreExtra() throws {
        for type in CRMType.allCases {
            let mine = own[type]!
            XCTAssertEqual(issues(type, mine.map { ($0.0, .string($0.1)) } + [("sync_contacts", false), ("sync_events", true), ("field_mapping", [:])]), [], "\(type)")
            let settings = try IntegrationSettings.decode(.object(mine.map { ($0.0, .string($0.1)) }), for: type, at: []).get()
            for (key, value) in mine { XCTAssertEqual(settings.string(key), value, "\(type).\(key)") }
            let foreign = Set(own.filter { $0.key != type }.flatMap { $0.value.map(\.0) }).subtracting(mine.map(\.0))
            for key in foreign {
                XCTAssertEqual(issues(type, [(key, "x")]).count, 1, "\(type) must refuse \(key)")
                XCTAssertTrue(issues(type, [(key, "x")])[0].hasSuffix("extra_forbidden"), "\(type).\(key): \(issues(type, [(key, "x")]))")
            }
        }
    }
}
