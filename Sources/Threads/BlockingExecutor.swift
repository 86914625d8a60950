import Synchronization

/// A fixed set of threads that run blocking work (libpq calls) for async code: a task that
/// needs the database suspends while one of these threads makes the call, so the cooperative
/// pool (one thread per core) never blocks, and at most `threads` such calls run at once.
public final class BlockingExecutor: Sendable {
    public let threads: Int
    private let niceness: Int32
    private let condition = Condition()
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let started = Atomic<Bool>(false)

    /// `niceness` > 0 lowers the threads' CPU priority (background work).
    public init(threads: Int, niceness: Int32 = 0) {
        self.threads = max(1, threads)
        self.niceness = niceness
    }

    /// `body`'s result, computed on one of the executor's threads.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            enqueue { continuation.resume(with: Result(catching: body)) }
        }
    }

    private func enqueue(_ job: @escaping @Sendable () -> Void) {
        startThreads()
        condition.lock()
        jobs.withLock { $0.append(job) }
        condition.signal()
        condition.unlock()
    }

    /// The threads start with the first job and live as long as the process.
    private func startThreads() {
        guard !started.load(ordering: .acquiring), !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for _ in 0..<threads {
            Threads.detach(stackSize: 256 << 10) { [self] in
                if niceness > 0 { Threads.lowerPriority(niceness: niceness) }
                self.workLoop()
            }
        }
    }

    private func workLoop() {
        while true {
            condition.lock()
            var job = jobs.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            while job == nil {
                condition.wait()
                job = jobs.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            }
            condition.unlock()
            job!()
        }
    }
}
