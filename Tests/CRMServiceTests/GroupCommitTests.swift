import CRMCore
import CRMStore
import Foundation
import Synchronization
import XCTest

@testable import CRMService

final class GroupCommitTests: XCTestCase {
    private static func request(_ n: Int) -> LogRequest {
        LogRequest(user: UserID("user\(n)")!, operation: "contact", types: nil, request: .object([("n", .int(Int64(n)))]), uniqueID: nil, queued: true)
    }

    /// A fake write that answers each request with a row whose id is the request's number.
    private static func rows(for requests: [LogRequest]) -> [[CreatedLog]] {
        requests.map { r in [CreatedLog(crmType: .klaviyo, id: Int64(r.request["n"]?.intValue ?? -1), uniqueID: nil)] }
    }

    func testAloneARequestIsWrittenAtOnceByItself() throws {
        let batches = Mutex<[Int]>([])
        let writer = GroupCommit<LogRequest, [CreatedLog]> { requests in
            batches.withLock { $0.append(requests.count) }
            return Self.rows(for: requests)
        }
        XCTAssertEqual(try writer.submit(Self.request(7)).map(\.id), [7])
        XCTAssertEqual(try writer.submit(Self.request(8)).map(\.id), [8])
        XCTAssertEqual(batches.withLock { $0 }, [1, 1])
    }

    func testConcurrentRequestsShareWritesAndEachGetsItsOwnRows() throws {
        let batches = Mutex<[Int]>([])
        let writer = GroupCommit<LogRequest, [CreatedLog]>(maxBatch: 16) { requests in
            batches.withLock { $0.append(requests.count) }
            usleep(20_000)  // a commit's worth of waiting, while others queue up
            return Self.rows(for: requests)
        }
        let results = Mutex<[Int: [Int64]]>([:])
        DispatchQueue.concurrentPerform(iterations: 64) { n in
            let ids = (try? writer.submit(Self.request(n)).map(\.id)) ?? []
            results.withLock { $0[n] = ids }
        }
        let got = results.withLock { $0 }
        for n in 0..<64 { XCTAssertEqual(got[n], [Int64(n)], "request \(n)") }
        let sizes = batches.withLock { $0 }
        XCTAssertEqual(sizes.reduce(0, +), 64, "each request written once")
        XCTAssertLessThanOrEqual(sizes.max() ?? 0, 16)
        XCTAssertLessThan(sizes.count, 64, "concurrent requests were written together: \(sizes)")
    }

    func testAStatementErrorFailsOnlyTheRequestAtFault() throws {
        let writer = GroupCommit<LogRequest, [CreatedLog]>(maxBatch: 64) { requests in
            usleep(10_000)
            if requests.contains(where: { $0.request["n"]?.intValue == 13 }) {
                throw DatabaseError(.query, sqlState: "22P02", message: "bad input")
            }
            return Self.rows(for: requests)
        }
        let outcomes = Mutex<[Int: String]>([:])
        DispatchQueue.concurrentPerform(iterations: 32) { n in
            let outcome: String
            do { outcome = "ok \(try writer.submit(Self.request(n)).map(\.id))" } catch { outcome = "error" }
            outcomes.withLock { $0[n] = outcome }
        }
        let got = outcomes.withLock { $0 }
        XCTAssertEqual(got[13], "error")
        for n in 0..<32 where n != 13 { XCTAssertEqual(got[n], "ok [\(n)]", "request \(n)") }
    }

    func testAnOutageFailsEveryoneWaiting() throws {
        let writer = GroupCommit<LogRequest, [CreatedLog]> { _ in throw DatabaseError(.unavailable, message: "gone") }
        XCTAssertThrowsError(try writer.submit(Self.request(1))) { error in
            XCTAssertEqual((error as? DatabaseError)?.kind, .unavailable)
        }
    }
}
