import CRMCore
import Foundation
import XCTest

@testable import CRMStore

/// The bench compares the worker with a C floor (bench/floor/floor.c) that must run the same
/// statements, or the ratio compares different work. These tests read the floor's statement
/// texts from its source and hold them to the worker's, whitespace aside.
final class FloorStatementTests: XCTestCase {
    private static let floorSource = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("bench/floor/floor.c")

    /// The text and parameter count of `[name] = "..." "..."` in the floor's statement tables.
    private func floorStatement(_ name: String) throws -> (text: String, parameters: Int) {
        let source = try String(contentsOf: Self.floorSource, encoding: .utf8)
        let lines = source.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try XCTUnwrap(lines.firstIndex { $0.trimmingCharacters(in: .whitespaces) == "[\(name)] =" }, "no [\(name)] in floor.c")
        var text = ""
        for line in lines[(start + 1)...] {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("\"") else { break }
            let literal = trimmed.hasSuffix("\",") ? trimmed.dropFirst().dropLast(2) : trimmed.dropFirst().dropLast()
            text += literal.replacingOccurrences(of: "\\n", with: "\n").replacingOccurrences(of: "\\\"", with: "\"")
                .replacingOccurrences(of: "\\\\", with: "\\")
            if trimmed.hasSuffix("\",") { break }
        }
        let counts = try XCTUnwrap(lines.first { $0.contains("[\(name)] = ") && $0.contains("[S_LIST] = ") }, "no parameter counts")
        let count = try XCTUnwrap(counts.components(separatedBy: "[\(name)] = ").last?.prefix { $0.isNumber }, "no count for \(name)")
        return (text, try XCTUnwrap(Int(count)))
    }

    private func words(_ text: String) -> String {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).joined(separator: " ")
    }

    private func assertSame(_ name: String, _ worker: SQL, file: StaticString = #filePath, line: UInt = #line) throws {
        let floor = try floorStatement(name)
        XCTAssertFalse(floor.text.isEmpty, file: file, line: line)
        XCTAssertEqual(words(floor.text), words(worker.text), "bench/floor/floor.c's \(name) is not the worker's statement", file: file, line: line)
        XCTAssertEqual(floor.parameters, worker.parameters.count, "\(name): parameters", file: file, line: line)
    }

    func testTheFloorListsWithTheWorkersStatement() throws {
        try assertSame("S_LIST", IntegrationStore.listStatement("alice"))
    }

    func testTheFloorWritesAnEventsLogRowWithTheWorkersStatement() throws {
        // A synchronous event for one CRM, as the bench sends.
        let request = LogRequest(user: UserID("alice")!, operation: "event", types: [.klaviyo], request: ["event": "Placed"],
                                 uniqueID: nil, queued: false)
        try assertSame("S_CREATE_LOGS", DeliveryStore.createLogSQL(request, worker: "w", claimSeconds: 110, key: Secret("k")))
    }

    func testTheFloorRecordsAnOutcomeWithTheWorkersStatement() throws {
        let attempt = AttemptRecord(status: "success", httpStatus: 202, error: nil, durationMS: 3, crmRecordID: "u-1", response: nil,
                                    nextAttemptInSeconds: nil, authFailure: false)
        try assertSame("S_RECORD", DeliveryStore.recordSQL(attempt, logID: 1, user: UserID("alice")!, type: .klaviyo,
                                                          credentialsStoredAt: "2026-12-06 16:00:00+00", worker: "w"))
    }
}
