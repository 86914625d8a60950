import Glibc
import Synchronization
import Threads
import XCTest

final class BlockingExecutorTests: XCTestCase {
    struct Refused: Error, Equatable {}
    final class Counts: Sendable { let value = Mutex<(now: Int, peak: Int)>((0, 0)) }

    func testReturnsValuesAndRethrowsErrors() async throws {
        let executor = BlockingExecutor(threads: 2)
        let value = try await executor.run { 6 * 7 }
        XCTAssertEqual(value, 42)
        do {
            _ = try await executor.run { () throws -> Int in throw Refused() }
            XCTFail("expected the error")
        } catch {
            XCTAssertEqual(error as? Refused, Refused())
        }
    }

    /// Blocking calls run on the executor's threads, at most `threads` at once, and all finish.
    func testRunsAtMostItsThreadCountAtOnce() async throws {
        let executor = BlockingExecutor(threads: 3)
        let counts = Counts()
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<12 {
                group.addTask {
                    try await executor.run {
                        counts.value.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                        usleep(50_000)  // a blocking call, as libpq makes
                        counts.value.withLock { $0.now -= 1 }
                        return i
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(results.sorted(), Array(0..<12))
        XCTAssertEqual(counts.value.withLock { $0.peak }, 3)
    }
}
