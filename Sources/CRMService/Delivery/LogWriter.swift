import CRMStore
import Dispatch
import Synchronization

/// Group commit for sync log rows. Each request hands over its rows and waits; one waiting
/// request at a time (the leader) writes everything waiting at that moment in one statement
/// and one commit, then hands the lead to the first request that arrived meanwhile. Alone, a
/// request is written at once (no timer, no added latency); under load, requests share a
/// commit instead of queueing for their own.
final class LogWriter: Sendable {
    /// Requests written together at most.
    let maxBatch: Int
    private let write: @Sendable ([LogRequest]) throws -> [[CreatedLog]]
    private let state = Mutex(State())

    private struct State: ~Copyable {
        var pending: [Slot] = []
        var writing = false
    }

    /// One request: its result is set by the leader that wrote it, before `wake` is signalled.
    private final class Slot: @unchecked Sendable {
        let request: LogRequest
        var result: Result<[CreatedLog], any Error>?
        let wake = DispatchSemaphore(value: 0)
        init(_ request: LogRequest) { self.request = request }
    }

    init(maxBatch: Int = 64, write: @escaping @Sendable ([LogRequest]) throws -> [[CreatedLog]]) {
        self.maxBatch = max(1, maxBatch)
        self.write = write
    }

    /// The request's log rows, written (committed) when this returns.
    func createLogs(_ request: LogRequest) throws -> [CreatedLog] {
        let slot = Slot(request)
        let leads = state.withLock { state in
            state.pending.append(slot)
            if state.writing { return false }
            state.writing = true
            return true
        }
        // Woken either with a result, or (result still nil) to lead.
        if !leads { slot.wake.wait() }
        while slot.result == nil {
            let batch = state.withLock { state in
                let batch = Array(state.pending.prefix(maxBatch))
                state.pending.removeFirst(batch.count)
                return batch
            }
            for (member, result) in zip(batch, run(batch.map(\.request))) {
                member.result = result
                if member !== slot { member.wake.signal() }
            }
            if slot.result != nil {
                let next = state.withLock { state -> Slot? in
                    if let first = state.pending.first { return first }
                    state.writing = false
                    return nil
                }
                next?.wake.signal()
            }
        }
        return try slot.result!.get()
    }

    /// Per request: its rows, or the error. A statement error in a batch (not an outage) has
    /// each request written alone, so that only the one at fault fails.
    private func run(_ requests: [LogRequest]) -> [Result<[CreatedLog], any Error>] {
        do {
            let written = try write(requests)
            return written.map { .success($0) }
        } catch let error as DatabaseError where error.kind != .unavailable && requests.count > 1 {
            return requests.map { request in Result { try write([request])[0] } }
        } catch {
            return requests.map { _ in .failure(error) }
        }
    }
}
