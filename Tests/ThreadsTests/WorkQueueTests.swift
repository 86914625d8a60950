import Dispatch
import Glibc
import Synchronization
import Threads
import XCTest

/// Four threads, one of them kept busy by job 0: what happens to the jobs that arrive then.
final class WorkQueueTests: XCTestCase {
    private final class Recorder: Sendable {
        let batches = Mutex<[[Int]]>([])
        let busy = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)

        func run(_ batch: [Int]) {
            if batch == [0] {
                busy.signal()
                release.wait()
                return
            }
            batches.withLock { $0.append(batch) }
        }

        /// The batches run so far, once there are `count` of them (or after 5 s).
        func ran(_ count: Int) -> [[Int]] {
            for _ in 0..<500 {
                let now = batches.withLock { $0 }
                if now.count >= count { return now }
                usleep(10_000)
            }
            return batches.withLock { $0 }
        }
    }

    private func queueWithABusyThread(spread: Int) -> (WorkQueue<Int>, Recorder) {
        let recorder = Recorder()
        let queue = WorkQueue<Int>(threads: 4, maxBatch: 64, spread: spread) { recorder.run($0) }
        queue.enqueue(0)
        XCTAssertEqual(recorder.busy.wait(timeout: .now() + 5), .success)
        usleep(100_000)  // the other three threads (started with job 0) are waiting by now
        return (queue, recorder)
    }

    func testJobsWaitForTheBusyThreadAndRunAsOneBatch() {
        let (queue, recorder) = queueWithABusyThread(spread: 8)
        for job in 1...3 { queue.enqueue(job) }
        usleep(200_000)
        XCTAssertEqual(recorder.batches.withLock { $0 }, [], "fewer than `spread` waiting: no idle thread is woken")
        recorder.release.signal()
        XCTAssertEqual(recorder.ran(1), [[1, 2, 3]], "the busy thread takes them together")
    }

    func testSpreadWaitingJobsWakeAnIdleThread() {
        let (queue, recorder) = queueWithABusyThread(spread: 4)
        for job in 1...4 { queue.enqueue(job) }
        XCTAssertEqual(recorder.ran(1), [[1, 2, 3, 4]], "the 4th waiting job wakes an idle thread, which takes all four")
        recorder.release.signal()
    }

    func testWithoutSpreadAJobWakesAnIdleThreadAtOnce() {
        let (queue, recorder) = queueWithABusyThread(spread: 1)
        queue.enqueue(1)
        XCTAssertEqual(recorder.ran(1), [[1]])
        recorder.release.signal()
    }
}
