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
    /// CRM calls in progress at most (a delivery is mostly its call).
    let concurrency: Int
    private let stopping = Atomic<Bool>(false)
    /// Deliveries started and not yet recorded (what a stop waits for).
    private let inFlight = Atomic<Int>(0)
    /// Deliveries whose CRM call has not ended (what the limit counts).
    private let calling = Atomic<Int>(0)
    /// One per CRM call; freed when the call ends, before its outcome is committed.
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

    /// CRM calls allowed in flight: all of `concurrency`, or an eighth of it (at least one)
    /// while the sweep is held back for requests, so that background work (retries, the
    /// `respond-async` backlog) takes CPU and database time from requests only when they leave
    /// some. It never stops.
    static func limit(concurrency: Int, heldBack: Bool) -> Int {
        heldBack ? max(1, concurrency / 8) : concurrency
    }

    /// How long the sweep stays held back after the API was last seen saturated (more requests
    /// in progress than `busyRequests`). A saturated API dips below that mark for moments
    /// between bursts: looking only at the instant let the sweep fill all its slots then (202s
    /// with the drain running: ~7,000/s, against ~10,400/s with no sweep at all).
    static let busyHold: Duration = .milliseconds(250)

    static func heldBack(lastBusy: ContinuousClock.Instant?, now: ContinuousClock.Instant) -> Bool {
        guard let lastBusy else { return false }
        return now - lastBusy < busyHold
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
    /// Its slot frees as soon as the CRM has answered, while at most `recordingAhead` outcomes
    /// wait to be written: the outcome's commit (a group commit, milliseconds) is the log
    /// writer's work, and holding the slot through it kept the slot's next CRM call waiting
    /// (the drain ran slower than the same calls made by requests). Past that bound (the
    /// database is slow, or busy with requests first) the slot waits for its commit as before,
    /// so outcomes cannot pile up in memory. A stop waits for every outcome.
    private func hand(_ log: ClaimedLog) {
        // Inline: the delivery starts on this thread and each step continues on the thread
        // that completed the previous one (see `InlineExecutor`), as a request's does.
        Task(executorPreference: InlineExecutor.shared, priority: .background) { [self] in
            var slotFreed = false
            _ = await delivery.attempt(log, background: true) {
                let calls = calling.subtract(1, ordering: .acquiringAndReleasing).newValue
                if inFlight.load(ordering: .acquiring) - calls <= recordingAhead {
                    slotFreed = true
                    slots.signal()
                }
            }
            inFlight.subtract(1, ordering: .releasing)
            if !slotFreed { slots.signal() }
        }
    }

    /// Outcomes that may wait for their commit without holding a slot.
    var recordingAhead: Int { max(1, concurrency / 4) }

    /// Rows claimed ahead: at most this many wait for a slot. A claim is a database round trip
    /// and a commit; without rows in hand, every slot that freed waited for one before its
    /// next delivery started (the drain ran at ~96 % of the rate of the same calls made by
    /// requests).
    var claimAhead: Int { max(1, concurrency / 16) }

    /// A row claimed ahead that waited longer than this for a slot has its credentials read
    /// again before it starts (`startable`). Rows wait milliseconds while CRMs answer fast, so
    /// this costs nothing then; with slow calls and few slots a row could wait a whole call
    /// (up to `CRM_HTTP_TIMEOUT_S`), and would then go out to an integration the user had
    /// disconnected or replaced meanwhile.
    static let recheckAfter: Duration = .seconds(1)

    /// Logs the sweep losing the database once and finding it again once, not on every pass
    /// (an idle sweep looks every second; the pool itself does not log).
    private struct DatabaseWatch {
        let logger: Logger
        private var isAway = false

        init(logger: Logger) { self.logger = logger }

        mutating func away(_ error: any Error, while doing: String) {
            guard !isAway else { return }
            isAway = true
            logger.warning("retry sweep: cannot use the database; deliveries wait for it",
                           metadata: ["while": "\(doing)", "error": "\(error)"])
        }

        mutating func reached() {
            guard isAway else { return }
            isAway = false
            logger.notice("retry sweep: the database is back")
        }
    }

    /// A claimed row waiting for a slot, and since when.
    private struct Held {
        let log: ClaimedLog
        let since: ContinuousClock.Instant
    }

    private func loop() {
        var idle = 0.2
        var ready: [Held] = []  // claimed, waiting for a slot (oldest first)
        defer { release(ready.map(\.log)) }
        var lastBusy: ContinuousClock.Instant?
        var database = DatabaseWatch(logger: delivery.context.logger)
        while !stopping.load(ordering: .acquiring) {
            // Wait for one free slot; the limit is read after it (the API may have become busy
            // while the loop waited), then as many more slots are taken as are free and allowed.
            slots.wait()
            guard !stopping.load(ordering: .acquiring) else {
                slots.signal()
                break
            }
            let now = ContinuousClock.now
            if delivery.context.metrics.requestsInProgress.load(ordering: .relaxed) > busyRequests { lastBusy = now }
            let heldBack = Self.heldBack(lastBusy: lastBusy, now: now)
            let limit = Self.limit(concurrency: concurrency, heldBack: heldBack)
            let running = calling.load(ordering: .acquiring)
            guard running < limit else {
                slots.signal()
                usleep(20_000)  // the API is busy and the sweep has its share: look again shortly
                continue
            }
            var free = 1
            while free < limit - running, slots.wait(timeout: .now()) == .success { free += 1 }
            // Rows in hand go at once; then one claim for the rest of the free slots and, unless
            // the sweep is held back for requests, for the next slots to free.
            let taken = Array(ready.prefix(free))
            ready.removeFirst(taken.count)
            let fromReady = startable(taken, now: now, putBack: &ready, database: &database)
            fromReady.forEach(start)
            free -= fromReady.count
            let wanted = free + (heldBack ? 0 : max(0, claimAhead - ready.count))
            var claimed: [ClaimedLog] = []
            if wanted > 0 {
                do {
                    claimed = try delivery.backgroundStore.claimDue(worker: delivery.worker, limit: wanted, claimSeconds: delivery.claimSeconds)
                    database.reached()
                } catch {
                    database.away(error, while: "claiming due rows")
                    idle = 2  // try again later
                }
            }
            let started = min(free, claimed.count)
            claimed.prefix(started).forEach(start)
            let claimedAt = ContinuousClock.now
            ready += claimed.dropFirst(started).map { Held(log: $0, since: claimedAt) }
            for _ in started..<free { slots.signal() }
            if fromReady.isEmpty && claimed.isEmpty {
                delivery.wakeup.wait(seconds: idle)
                idle = min(1.0, idle * 2)
            } else {
                idle = 0.05
            }
        }
    }

    /// Rows in hand to start now: as claimed, or, for those that waited past `recheckAfter`,
    /// as they are now (`DeliveryStore.refreshClaims`; a row no longer ours is dropped). When
    /// that read fails (the database is away), the rows go back to the front of `putBack`.
    private func startable(_ rows: [Held], now: ContinuousClock.Instant, putBack: inout [Held],
                           database: inout DatabaseWatch) -> [ClaimedLog] {
        let waited = rows.filter { now - $0.since >= Self.recheckAfter }
        guard !waited.isEmpty else { return rows.map(\.log) }
        let fresh = rows.filter { now - $0.since < Self.recheckAfter }.map(\.log)
        do {
            let store = delivery.backgroundStore
            var refreshed = try store.refreshClaims(ids: waited.map(\.log.id), worker: delivery.worker, claimSeconds: delivery.claimSeconds)
            // Still ours, so still unsent if it was at the claim.
            let neverSent = Set(waited.filter(\.log.neverSent).map(\.log.id))
            for i in refreshed.indices { refreshed[i].neverSent = neverSent.contains(refreshed[i].id) }
            database.reached()
            return fresh + refreshed
        } catch {
            database.away(error, while: "reading rows in hand again")
            putBack.insert(contentsOf: waited, at: 0)
            return fresh
        }
    }

    private func start(_ log: ClaimedLog) {
        inFlight.add(1, ordering: .relaxed)
        calling.add(1, ordering: .relaxed)
        hand(log)
    }

    /// Rows claimed ahead but not started when the sweep stops: due again at once, for this
    /// worker's next life or any other.
    private func release(_ rows: [ClaimedLog]) {
        guard !rows.isEmpty else { return }
        _ = try? delivery.backgroundStore.releaseClaims(ids: rows.map(\.id), neverSent: Set(rows.filter(\.neverSent).map(\.id)),
                                                        worker: delivery.worker)
    }
}
