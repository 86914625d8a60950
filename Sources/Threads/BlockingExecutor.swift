/// A fixed set of threads that run blocking work (libpq calls) for async code: a task that
/// needs the database suspends while one of these threads makes the call, so the cooperative
/// pool (one thread per core) never blocks, and at most `threads` such calls run at once.
public final class BlockingExecutor: Sendable {
    private let queue: WorkQueue<@Sendable () -> Void>

    public var threads: Int { queue.threads }

    public init(threads: Int) {
        queue = WorkQueue(threads: threads) { jobs in jobs.forEach { $0() } }
    }

    /// `body`'s result, computed on one of the executor's threads.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            queue.enqueue { continuation.resume(with: Result(catching: body)) }
        }
    }
}
