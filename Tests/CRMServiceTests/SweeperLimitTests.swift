import XCTest

@testable import CRMService

/// Requests first: while the API is saturated, the sweep keeps to an eighth of its slots.
final class SweeperLimitTests: XCTestCase {
    func testFullConcurrencyUnlessMoreRequestsThanThreadsAreInProgress() {
        XCTAssertEqual(Sweeper.limit(concurrency: 256, requestsInProgress: 0, busyRequests: 16), 256)
        XCTAssertEqual(Sweeper.limit(concurrency: 256, requestsInProgress: 16, busyRequests: 16), 256)
        XCTAssertEqual(Sweeper.limit(concurrency: 256, requestsInProgress: 17, busyRequests: 16), 32)
        XCTAssertEqual(Sweeper.limit(concurrency: 256, requestsInProgress: 1000, busyRequests: 16), 32)
    }

    func testABusyAPINeverStopsTheSweepNorWidensIt() {
        for concurrency in [1, 2, 7, 8, 9, 16, 256] {
            let busy = Sweeper.limit(concurrency: concurrency, requestsInProgress: 500, busyRequests: 16)
            XCTAssertGreaterThanOrEqual(busy, 1, "concurrency \(concurrency): the backlog still moves")
            XCTAssertLessThanOrEqual(busy, concurrency)
            XCTAssertEqual(Sweeper.limit(concurrency: concurrency, requestsInProgress: 0, busyRequests: 16), concurrency)
        }
    }
}
