import CRMStore
import Dispatch
import Synchronization
import Threads

/// Group commit for sync log rows. Requests hand their rows to a few writer threads and wait;
/// a writer takes everything waiting (up to `maxBatch`) and writes it in one statement and one
/// commit. Alone, a request is written at once (no timer); under load, requests share commits
/// instead of each queueing for its own, and `writers` batches are committed at a time
/// (PostgreSQL flushes concurrent commits together). Measured against a caller writing its own
/// batch when a writer slot is free: the hand-off costs two context switches, and the larger
/// batches it forms save more database CPU than that (README, Performance).
final class LogWriter: Sendable {
    let maxBatch: Int
    let writers: Int
    private let write: @Sendable ([LogRequest]) throws -> [[CreatedLog]]
    private let condition = Condition()
    private let pending = Mutex<[Slot]>([])
    private let started = Atomic<Bool>(false)

    /// One request: its result is set by the writer, before `wake` is signalled.
    private final class Slot: @unchecked Sendable {
        let request: LogRequest
        var result: Result<[CreatedLog], any Error>?
        let wake = DispatchSemaphore(value: 0)
        init(_ request: LogRequest) { self.request = request }
    }

    init(writers: Int = 4, maxBatch: Int = 64, write: @escaping @Sendable ([LogRequest]) throws -> [[CreatedLog]]) {
        self.writers = max(1, writers)
        self.maxBatch = max(1, maxBatch)
        self.write = write
    }

    /// The request's log rows, written (committed) when this returns.
    func createLogs(_ request: LogRequest) throws -> [CreatedLog] {
        startWriters()
        let slot = Slot(request)
        condition.lock()
        pending.withLock { $0.append(slot) }
        condition.signal()
        condition.unlock()
        slot.wake.wait()
        return try slot.result!.get()
    }

    /// The writer threads start with the first request and live as long as the process.
    private func startWriters() {
        guard !started.load(ordering: .acquiring), !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for _ in 0..<writers {
            Threads.detach(stackSize: 256 << 10) { [self] in self.writerLoop() }
        }
    }

    private func writerLoop() {
        while true {
            condition.lock()
            var batch = pending.withLock { Self.take(&$0, maxBatch) }
            while batch.isEmpty {
                condition.wait()
                batch = pending.withLock { Self.take(&$0, maxBatch) }
            }
            condition.unlock()
            for (slot, result) in zip(batch, run(batch.map(\.request))) {
                slot.result = result
                slot.wake.signal()
            }
        }
    }

    private static func take(_ pending: inout [Slot], _ limit: Int) -> [Slot] {
        let batch = Array(pending.prefix(limit))
        pending.removeFirst(batch.count)
        return batch
    }

    /// Per request: its rows, or the error. A statement error in a batch (not an outage) has
    /// each request written alone, so that only the one at fault fails.
    private func run(_ requests: [LogRequest]) -> [Result<[CreatedLog], any Error>] {
        do {
            return try write(requests).map { .success($0) }
        } catch let error as DatabaseError where error.kind != .unavailable && requests.count > 1 {
            return requests.map { request in Result { try write([request])[0] } }
        } catch {
            return requests.map { _ in .failure(error) }
        }
    }
}
