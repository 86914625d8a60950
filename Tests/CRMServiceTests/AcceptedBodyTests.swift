import CRMCore
import XCTest

@testable import CRMService
@testable import CRMStore

/// A 202 writes its body in place (`Delivery.acceptedBody`); it must be the bytes the JSON tree
/// of the contract's sync result gives (`Delivery.body`), as a replay of it is.
final class AcceptedBodyTests: XCTestCase {
    private func tree(_ rows: [CreatedLog]) -> JSON {
        Delivery.body(rows.map { .object([("crm_type", .string($0.crmType.rawValue)), ("status", "queued"), ("log_id", .int($0.id))]) })
    }

    func testTheBodyIsTheTreesBytes() {
        for rows in [[], [CreatedLog(crmType: .klaviyo, id: 1, uniqueID: nil)],
                     [CreatedLog(crmType: .hubspot, id: Int64.max, uniqueID: "u"), CreatedLog(crmType: .salesforce, id: 0, uniqueID: nil),
                      CreatedLog(crmType: .creatio, id: 42, uniqueID: nil)]] {
            XCTAssertEqual(String(decoding: Delivery.acceptedBody(rows), as: UTF8.self), tree(rows).jsonString)
        }
        XCTAssertEqual(String(decoding: Delivery.acceptedBody([CreatedLog(crmType: .klaviyo, id: 7, uniqueID: nil)]), as: UTF8.self),
                       #"{"results":[{"crm_type":"klaviyo","status":"queued","log_id":7}],"success_count":0,"failure_count":0}"#)
    }
}
