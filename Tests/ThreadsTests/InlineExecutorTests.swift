import CSystem
import Dispatch
import Glibc
import Synchronization
import Threads
import XCTest

final class InlineExecutorTests: XCTestCase {
    /// A value resumed from a new plain thread (as the curl loop or a writer thread resumes a
    /// task), with the id of that thread.
    private static func resumedFromAnotherThread(_ value: Int) async -> (value: Int, resumer: Int32) {
        await withCheckedContinuation { continuation in
            Threads.detach(stackSize: 256 << 10) {
                usleep(UInt32.random(in: 0...500))
                continuation.resume(returning: (value, crm_gettid()))
            }
        }
    }

    /// Runs `body` as an inline task started here; fails the test if it takes over 20 s
    /// (a deadlock in the executor would otherwise hang the suite).
    private func runInline(_ body: @escaping @Sendable () async -> Void) {
        let done = DispatchSemaphore(value: 0)
        Task.immediate(executorPreference: InlineExecutor.shared) {
            await body()
            done.signal()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 20), .success, "the inline task did not finish")
    }

    func testATaskStartsOnTheCallersThreadAndContinuesOnTheThreadThatResumesIt() {
        let starter = crm_gettid()
        let seen = Mutex<[Int32]>([])
        runInline {
            seen.withLock { $0.append(crm_gettid()) }
            let (_, resumer) = await Self.resumedFromAnotherThread(1)
            seen.withLock { $0.append(crm_gettid()); $0.append(resumer) }
        }
        let threads = seen.withLock { $0 }
        XCTAssertEqual(threads.count, 3)
        XCTAssertEqual(threads.first, starter, "the first step runs on the thread that started the task")
        XCTAssertEqual(threads[1], threads[2], "after the resume, the task runs on the thread that resumed it")
        XCTAssertNotEqual(threads[1], starter)
    }

    /// A task group whose children are resumed from other threads at random times: every
    /// child's result arrives and nothing deadlocks (the parent is resumed inline by a child).
    func testTaskGroupsWithChildrenResumedFromOtherThreadsComplete() {
        let sums = Mutex<[Int]>([])
        runInline {
            for round in 0..<200 {
                let sum = await withTaskGroup(of: Int.self) { group in
                    for child in 0..<4 { group.addTask { await Self.resumedFromAnotherThread(round * 4 + child).value } }
                    var sum = 0
                    for await value in group { sum += value }
                    return sum
                }
                sums.withLock { $0.append(sum) }
            }
        }
        let expected = (0..<200).map { round in (0..<4).reduce(0) { $0 + round * 4 + $1 } }
        XCTAssertEqual(sums.withLock { $0 }, expected)
    }

    /// Many inline tasks at once, each resumed twice from other threads, as requests are.
    func testConcurrentInlineTasksAllFinish() {
        final class Finished: Sendable {
            let count = Atomic<Int>(0)
            let all = DispatchSemaphore(value: 0)
        }
        let finished = Finished()
        for i in 0..<500 {
            let body: @Sendable () async -> Void = {
                let a = await Self.resumedFromAnotherThread(i).value
                let b = await Self.resumedFromAnotherThread(a + 1).value
                if b == i + 1, finished.count.add(1, ordering: .relaxed).newValue == 500 { finished.all.signal() }
            }
            Task(executorPreference: InlineExecutor.shared) { await body() }
        }
        XCTAssertEqual(finished.all.wait(timeout: .now() + 30), .success, "only \(finished.count.load(ordering: .relaxed)) of 500 finished")
    }
}
