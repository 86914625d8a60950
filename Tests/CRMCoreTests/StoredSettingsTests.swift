import XCTest

@testable import CRMCore

/// `fromStored(utf8:for:)` reads the plain shape in one pass and leaves everything else to the
/// general decoder: either way, the result is the general decoder's.
final class StoredSettingsTests: XCTestCase {
    /// What the general path makes of `text` (the definition the one-pass reader must match).
    private func general(_ text: String, _ type: CRMType) -> IntegrationSettings {
        guard let json = try? JSONParser.parse(Array(text.utf8)) else { return .defaults }
        return IntegrationSettings.fromStored(json, for: type)
    }

    private func scanned(_ text: String, _ type: CRMType) -> IntegrationSettings? {
        Array(text.utf8).withUnsafeBufferPointer { bytes in
            var scanner = StoredSettingsScanner(bytes: bytes, type: type)
            return scanner.read()
        }
    }

    private func stored(_ text: String, _ type: CRMType) -> IntegrationSettings {
        Array(text.utf8).withUnsafeBufferPointer { IntegrationSettings.fromStored(utf8: $0, for: type) }
    }

    /// jsonb's text for what connect stores (keys ordered by length, ", " and ": ").
    func testThePlainShapeIsReadInOnePass() throws {
        let cases: [(CRMType, String)] = [
            (.klaviyo, #"{}"#),
            (.klaviyo, #"{"sync_events": true, "sync_contacts": true}"#),
            (.hubspot, #"{"events": "note", "sync_events": false, "sync_contacts": true}"#),
            (.klaviyo, #"{"list_id": "Xy12ab", "sync_events": true, "field_mapping": {"phone": "phone_number", "company": "org.name"}, "sync_contacts": false}"#),
            (.salesforce, #"{"events": "Order__e", "object": "Lead", "api_version": "v61.0", "sync_events": true, "sync_contacts": true, "external_id_field": "Ext_Id__c"}"#),
            (.creatio, "{\n\t\"contact_entity\" : \"Contact\" ,\"field_mapping\":{}\r\n}  "),
        ]
        for (type, text) in cases {
            let fast = try XCTUnwrap(scanned(text, type), "\(type) \(text) should take the one-pass reader")
            XCTAssertEqual(fast, general(text, type), "\(type) \(text)")
            XCTAssertEqual(fast.fieldMapping?.map { "\($0.0)=\($0.1)" }, general(text, type).fieldMapping?.map { "\($0.0)=\($0.1)" })
        }
        let hubspot = try XCTUnwrap(scanned(cases[2].1, .hubspot))
        XCTAssertEqual(hubspot.string("events"), "note")
        XCTAssertFalse(hubspot.syncEvents)
        XCTAssertTrue(hubspot.syncContacts)
        let klaviyo = try XCTUnwrap(scanned(cases[3].1, .klaviyo))
        XCTAssertEqual(klaviyo.fieldMapping?.map(\.1), ["phone_number", "org.name"])
        XCTAssertFalse(klaviyo.syncContacts)
    }

    /// Each of these leaves the one-pass reader, and the general decoder decides.
    func testAnythingElseGoesToTheGeneralDecoder() {
        let cases: [(CRMType, String)] = [
            (.klaviyo, #"{"list_id": "L\u0031"}"#),                          // an escape
            (.klaviyo, #"{"field_mapping": {"city": "Stadt_é"}}"#),          // non-ASCII (and not a field name)
            (.klaviyo, #"{"field_mapping": {"cïty": "city"}}"#),             // non-ASCII key, a valid target
            (.klaviyo, #"{"sync_events": 1}"#),                              // a number
            (.klaviyo, #"{"sync_events": null, "list_id": null}"#),          // nulls
            (.klaviyo, #"{"field_mapping": null}"#),
            (.klaviyo, #"{"sync_events": false, "sync_events": true}"#),    // a repeated key
            (.salesforce, #"{"events": "task", "events": "Order__e"}"#),
            (.klaviyo, #"{"field_mapping": {"city": "town", "city": "town2"}}"#),  // a repeated field (found by make fuzz)
            (.klaviyo, #"{"unknown": true}"#),                               // unknown and foreign keys
            (.klaviyo, #"{"events": "note"}"#),
            (.hubspot, #"{"events": "webhook"}"#),                           // a value the checks refuse
            (.salesforce, #"{"object": "Account"}"#),
            (.klaviyo, #"{"list_id": ""}"#),
            (.klaviyo, #"{"field_mapping": {"city": "not a field"}}"#),
            (.salesforce, "{\"api_version\": \"v\(String(repeating: "1", count: 10_001)).0\"}"),
            (.klaviyo, #"{"sync_events": true"#),                            // not JSON, or more than one value
            (.klaviyo, #"{"sync_events": true} {}"#),
            (.klaviyo, #"{"sync_events": tru}"#),
            (.klaviyo, #"["sync_events"]"#),
            (.klaviyo, ""),
            (.klaviyo, #"{"sync_events": true,}"#),
        ]
        for (type, text) in cases {
            XCTAssertNil(scanned(text, type), "\(type) \(text.prefix(100)) is not the plain shape")
            XCTAssertEqual(stored(text, type), general(text, type), "\(type) \(text.prefix(100))")
        }
        // Spot checks of what the general decoder made of some.
        XCTAssertEqual(stored(#"{"list_id": "L\u0031"}"#, .klaviyo).string("list_id"), "L1")
        XCTAssertEqual(stored(#"{"hubspot": true}"#, .klaviyo), .defaults)
        XCTAssertEqual(stored(#"{"sync_events": false, "sync_events": true}"#, .klaviyo).syncEvents, true)
    }

    /// Texts put together from pieces, valid and not: the result always equals the general
    /// decoder's, and the plain ones take the one-pass reader.
    func testRandomTextsAgreeWithTheGeneralDecoder() {
        let keys = [#""sync_contacts""#, #""sync_events""#, #""field_mapping""#, #""list_id""#, #""events""#, #""object""#,
                    #""api_version""#, #""external_id_field""#, #""contact_entity""#, #""other""#, #""sync_\u0065vents""#]
        let values = ["true", "false", "null", "1", #""note""#, #""Lead""#, #""v61.0""#, #""X__e""#, #""task""#, #""L1""#, #""""#,
                      #""a b""#, "{}", #"{"phone": "phone_number"}"#, #"{"a": "b", "c": "d e"}"#, "[]", #""é""#]
        var generator = SplitMix(seed: 42)
        var plain = 0
        for _ in 0..<20_000 {
            let type = CRMType.allCases[generator.next(CRMType.allCases.count)]
            var parts: [String] = []
            for _ in 0..<generator.next(5) {
                parts.append(keys[generator.next(keys.count)] + (generator.next(8) == 0 ? " " : ": ") + values[generator.next(values.count)])
            }
            var text = "{" + parts.joined(separator: generator.next(10) == 0 ? " " : ", ") + "}"
            if generator.next(20) == 0 { text.removeLast() }
            let expected = general(text, type)
            XCTAssertEqual(stored(text, type), expected, "\(type) \(text)")
            if let fast = scanned(text, type) {
                plain += 1
                XCTAssertEqual(fast, expected, "\(type) \(text)")
            }
        }
        XCTAssertGreaterThan(plain, 1_000, "enough texts took the one-pass reader to mean something")
    }
}

/// A small seeded generator, so a failure repeats.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next(_ bound: Int) -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(bound))
    }
}
