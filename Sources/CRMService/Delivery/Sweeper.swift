import CRMStore
import Foundation
import Logging
import Synchronization

/// The retry sweep: a few threads that claim due rows (`FOR UPDATE SKIP LOCKED`, so any number
/// of workers on any number of hosts can run it) and deliver them.
public final class Sweeper: Sendable {
    let delivery: Delivery
    let threads: Int
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    public init(delivery: Delivery, threads: Int) {
        self.delivery = delivery
        self.threads = max(1, threads)
    }

    public func start() {
        // Rows this worker's previous life left in flight are due again at once.
        if let released = try? delivery.store.releaseClaims(worker: delivery.worker), released > 0 {
            delivery.context.logger.info("released deliveries left in flight by a previous run", metadata: ["count": "\(released)"])
        }
        for index in 0..<threads {
            let thread = Thread { [self] in
                self.loop()
                self.finished.signal()
            }
            thread.name = "sweep-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Stops claiming; waits up to `seconds` for attempts in progress.
    public func stop(waitSeconds seconds: Double) {
        stopping.store(true, ordering: .releasing)
        for _ in 0..<threads { delivery.wakeup.signal() }
        let deadline = DispatchTime.now() + seconds
        for _ in 0..<threads where finished.wait(timeout: deadline) == .timedOut { break }
    }

    private func loop() {
        var idle = 0.2
        while !stopping.load(ordering: .acquiring) {
            let claimed: [ClaimedLog]
            do {
                claimed = try delivery.store.claimDue(worker: delivery.worker, limit: 1, claimSeconds: delivery.claimSeconds)
            } catch {
                delivery.wakeup.wait(seconds: 2)   // the database is away: try again later
                continue
            }
            if let log = claimed.first {
                _ = delivery.attempt(log)
                idle = 0.2
            } else {
                delivery.wakeup.wait(seconds: idle)
                idle = min(1.0, idle * 2)
            }
        }
    }
}
