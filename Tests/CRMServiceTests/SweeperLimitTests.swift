import XCTest

@testable import CRMService

/// Requests first: while the API is saturated, and for a moment after, the sweep keeps to an
/// eighth of its slots.
final class SweeperLimitTests: XCTestCase {
    func testFullConcurrencyUnlessHeldBack() {
        XCTAssertEqual(Sweeper.limit(concurrency: 256, heldBack: false), 256)
        XCTAssertEqual(Sweeper.limit(concurrency: 256, heldBack: true), 32)
    }

    func testABusyAPINeverStopsTheSweepNorWidensIt() {
        for concurrency in [1, 2, 7, 8, 9, 16, 256] {
            let busy = Sweeper.limit(concurrency: concurrency, heldBack: true)
            XCTAssertGreaterThanOrEqual(busy, 1, "concurrency \(concurrency): the backlog still moves")
            XCTAssertLessThanOrEqual(busy, concurrency)
            XCTAssertEqual(Sweeper.limit(concurrency: concurrency, heldBack: false), concurrency)
        }
    }

    func testHeldBackForAMomentAfterTheAPIWasLastSeenBusy() {
        let seen = ContinuousClock.now
        XCTAssertFalse(Sweeper.heldBack(lastBusy: nil, now: seen), "never busy")
        XCTAssertTrue(Sweeper.heldBack(lastBusy: seen, now: seen))
        XCTAssertTrue(Sweeper.heldBack(lastBusy: seen, now: seen + Sweeper.busyHold - .milliseconds(1)), "a dip between bursts")
        XCTAssertFalse(Sweeper.heldBack(lastBusy: seen, now: seen + Sweeper.busyHold), "idle long enough: all slots again")
        XCTAssertLessThanOrEqual(Sweeper.busyHold, .seconds(1), "a drain after the load waits for it only briefly")
    }
}
