import CRMStore
import Dispatch
import Glibc
import Threads
import Logging
import Synchronization

/// The retry sweep. One claim loop takes due rows (`FOR UPDATE SKIP LOCKED`, so any number of
/// workers on any number of hosts can run it) as long as it has free delivery slots, and runs
/// each delivery as a task: a slow CRM occupies a slot, not the loop or a thread, and an idle
/// sweep costs one query per second. While the API is saturated the sweep keeps to a small
/// share of its slots (`limit`): requests first.
public final class Sweeper: Sendable {
    let delivery: Delivery
    /// Deliveries in progress at most (each mostly waits on a CRM).
    let concurrency: Int
    private let stopping = Atomic<Bool>(false)
    private let inFlight = Atomic<Int>(0)
    private let slots: DispatchSemaphore
    private let loopDone = DispatchSemaphore(value: 0)

    /// More requests in progress than this means the API is saturated (`FCGI_THREADS`).
    let busyRequests: Int

    public init(delivery: Delivery, concurrency: Int, busyRequests: Int = .max) {
        self.delivery = delivery
        self.concurrency = max(1, concurrency)
        self.busyRequests = busyRequests
        slots = DispatchSemaphore(value: max(1, concurrency))
    }

    /// Deliveries allowed in flight: all of `concurrency`, or an eighth of it (at least one)
    /// while the API is saturated, so that background work (retries, the `respond-async`
    /// backlog) takes CPU and database time from requests only when they leave some. It never
    /// stops.
    static func limit(concurrency: Int, requestsInProgress: Int, busyRequests: Int) -> Int {
        requestsInProgress > busyRequests ? max(1, concurrency / 8) : concurrency
    }

    public func start() {
        // Rows this worker's previous life left in flight are due again at once.
        if let released = try? delivery.store.releaseClaims(worker: delivery.worker), released > 0 {
            delivery.context.logger.info("released deliveries left in flight by a previous run", metadata: ["count": "\(released)"])
        }
        Threads.detach { [self] in
            self.loop()
            self.loopDone.signal()
        }
    }

    /// Stops claiming; waits up to `seconds` for deliveries in progress. Rows still in flight
    /// afterwards are taken back at the next start (or by another worker when the claim expires).
    public func stop(waitSeconds seconds: Double) {
        stopping.store(true, ordering: .releasing)
        delivery.wakeup.signal()
        slots.signal()  // a loop waiting for a slot wakes, sees `stopping` and gives back its rows in hand
        let deadline = Deadline.after(seconds: seconds)
        _ = loopDone.wait(timeout: .now() + seconds)
        while inFlight.load(ordering: .acquiring) > 0 && !deadline.hasPassed { usleep(20_000) }
    }

    /// Starts a claimed row's delivery as a task: it holds no thread while the CRM answers, so
    /// `concurrency` deliveries in flight cost memory for their transfers, not for threads.
    private func hand(_ log: ClaimedLog) {
        // Inline: the delivery starts on this thread and each step continues on the thread
        // that completed the previous one (see `InlineExecutor`), as a request's does.
        Task(executorPreference: InlineExecutor.shared, priority: .background) { [self] in
            _ = await delivery.attempt(log, background: true)
            inFlight.subtract(1, ordering: .releasing)
            slots.signal()
        }
    }

    /// Rows claimed ahead: at most this many wait for a slot. A claim is a database round trip
    /// and a commit; without rows in hand, every slot that freed waited for one before its
    /// next delivery started (the drain ran at ~96 % of the rate of the same calls made by
    /// requests).
    var claimAhead: Int { max(1, concurrency / 16) }

    private func loop() {
        var idle = 0.2
        var ready: [ClaimedLog] = []  // claimed, waiting for a slot (oldest first)
        defer { release(ready) }
        while !stopping.load(ordering: .acquiring) {
            let limit = Self.limit(concurrency: concurrency, requestsInProgress: delivery.context.metrics.requestsInProgress.load(ordering: .relaxed),
                                   busyRequests: busyRequests)
            guard inFlight.load(ordering: .acquiring) < limit else {
                usleep(20_000)  // the API is busy and the sweep has its share: look again shortly
                continue
            }
            // Wait for one free slot, then take as many more as are free and allowed.
            slots.wait()
            guard !stopping.load(ordering: .acquiring) else {
                slots.signal()
                break
            }
            var free = 1
            let room = limit - inFlight.load(ordering: .acquiring)
            while free < room, slots.wait(timeout: .now()) == .success { free += 1 }
            // Rows in hand go at once; then one claim for the rest of the free slots and, unless
            // the sweep is held back for requests, for the next slots to free.
            let fromReady = min(free, ready.count)
            ready.prefix(fromReady).forEach(start)
            ready.removeFirst(fromReady)
            free -= fromReady
            let wanted = free + (limit == concurrency ? max(0, claimAhead - ready.count) : 0)
            var claimed: [ClaimedLog] = []
            if wanted > 0 {
                do {
                    claimed = try delivery.backgroundStore.claimDue(worker: delivery.worker, limit: wanted, claimSeconds: delivery.claimSeconds)
                } catch {
                    idle = 2  // the database is away: try again later
                }
            }
            let now = min(free, claimed.count)
            claimed.prefix(now).forEach(start)
            ready += claimed.dropFirst(now)
            for _ in now..<free { slots.signal() }
            if fromReady == 0 && claimed.isEmpty {
                delivery.wakeup.wait(seconds: idle)
                idle = min(1.0, idle * 2)
            } else {
                idle = 0.05
            }
        }
    }

    private func start(_ log: ClaimedLog) {
        inFlight.add(1, ordering: .relaxed)
        hand(log)
    }

    /// Rows claimed ahead but not started when the sweep stops: due again at once, for this
    /// worker's next life or any other.
    private func release(_ rows: [ClaimedLog]) {
        guard !rows.isEmpty else { return }
        _ = try? delivery.backgroundStore.releaseClaims(ids: rows.map(\.id), worker: delivery.worker)
    }
}
