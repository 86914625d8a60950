import Synchronization

/// A queue served by a fixed set of threads, started with the first job and kept for the life
/// of the process. A free thread takes up to `maxBatch` waiting jobs at once and hands them to
/// `run`: one at a time for plain work, a batch for group commit. With `spread` > 1, a new job
/// wakes an idle thread only when no thread is busy or `spread` jobs are waiting: otherwise it
/// waits for a busy thread to come back for it, and jobs gather into batches instead of each
/// waking a thread of its own.
public final class WorkQueue<Job: Sendable>: Sendable {
    public let threads: Int
    public let maxBatch: Int
    private let run: @Sendable ([Job]) -> Void
    private let condition = Condition()
    private let pending = Mutex<[Job]>([])
    private let spread: Int
    /// Threads running a batch (changed and read under `condition`'s lock).
    private let busy = Atomic<Int>(0)
    private let started = Atomic<Bool>(false)

    public init(threads: Int, maxBatch: Int = 1, spread: Int = 1, run: @escaping @Sendable ([Job]) -> Void) {
        self.threads = max(1, threads)
        self.maxBatch = max(1, maxBatch)
        self.spread = max(1, spread)
        self.run = run
    }

    public func enqueue(_ job: Job) {
        startThreads()
        condition.lock()
        let waiting = pending.withLock { $0.append(job); return $0.count }
        if waiting >= spread || busy.load(ordering: .relaxed) == 0 { condition.signal() }
        condition.unlock()
    }

    private func startThreads() {
        guard !started.load(ordering: .acquiring), !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for _ in 0..<threads {
            // 1 MiB (only what is touched is resident): tasks whose work completed here may
            // continue on this thread (InlineExecutor).
            Threads.detach(stackSize: 1 << 20) { [self] in serve() }
        }
    }

    private func serve() {
        while true {
            condition.lock()
            var batch = take()
            while batch.isEmpty {
                condition.wait()
                batch = take()
            }
            busy.add(1, ordering: .relaxed)
            condition.unlock()
            run(batch)
            condition.lock()
            busy.subtract(1, ordering: .relaxed)
            condition.unlock()
        }
    }

    private func take() -> [Job] {
        pending.withLock { pending in
            let batch = Array(pending.prefix(maxBatch))
            pending.removeFirst(batch.count)
            return batch
        }
    }
}
