import Dispatch
import Synchronization
import Threads
import XCTest

final class ActiveLimitTests: XCTestCase {
    func testEnterWaitsAtTheLimitUntilOneLeaves() {
        let limit = ActiveLimit(limit: 2)
        limit.enter()
        limit.enter()
        let entered = Atomic<Bool>(false)
        let done = DispatchSemaphore(value: 0)
        Threads.detach {
            limit.enter()
            entered.store(true, ordering: .releasing)
            done.signal()
        }
        usleep(100_000)
        XCTAssertFalse(entered.load(ordering: .acquiring), "a third request waits while two are in")
        limit.leave()
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertTrue(entered.load(ordering: .acquiring))
        XCTAssertEqual(limit.count, 2)
    }

    func testAParkedRequestLetsAnotherInAndComesBackWithoutWaiting() {
        let limit = ActiveLimit(limit: 1)
        limit.enter()
        limit.park()  // waiting on a CRM
        let done = DispatchSemaphore(value: 0)
        Threads.detach {
            limit.enter()  // the place is free
            done.signal()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        limit.unpark()  // over the limit for a moment, never blocked
        XCTAssertEqual(limit.count, 2)
        limit.leave()
        limit.leave()
        XCTAssertEqual(limit.count, 0)
    }

    func testManyThreadsNeverExceedTheLimitAndAllGetThrough() {
        let limit = ActiveLimit(limit: 3)
        let inside = Atomic<Int>(0), most = Atomic<Int>(0), finished = Atomic<Int>(0)
        let group = DispatchGroup()
        for _ in 0..<16 {
            group.enter()
            Threads.detach {
                for _ in 0..<200 {
                    limit.enter()
                    let now = inside.add(1, ordering: .acquiringAndReleasing).newValue
                    var seen = most.load(ordering: .relaxed)
                    while now > seen, !most.compareExchange(expected: seen, desired: now, ordering: .relaxed).exchanged {
                        seen = most.load(ordering: .relaxed)
                    }
                    inside.subtract(1, ordering: .acquiringAndReleasing)
                    limit.leave()
                    finished.add(1, ordering: .relaxed)
                }
                group.leave()
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(finished.load(ordering: .relaxed), 16 * 200)
        XCTAssertLessThanOrEqual(most.load(ordering: .relaxed), 3)
        XCTAssertEqual(limit.count, 0)
    }
}
