import Synchronization

/// At most `limit` requests doing work at once. A thread that would start one more waits in
/// `enter` (an accept thread, with the request it has read: it accepts no other meanwhile, and
/// new connections wait in the listen backlog); a request that waits on something outside, a CRM call, `park`s, which gives its
/// place up without ending, and `unpark`s when the call returns, never waiting (the thread
/// continuing it is the curl loop's). So requests waiting on slow CRMs never keep others out,
/// and requests that compete for the same CPU and database are not let in faster than they
/// finish: more of them in at once only queue inside the process and stretch the tail.
public final class ActiveLimit: Sendable {
    public let limit: Int
    /// Requests in now (parked ones not counted): taken and given back without a lock, as
    /// every request does both; the lock is only for threads that must wait.
    private let active = Atomic<Int>(0)
    private let waiting = Atomic<Int>(0)
    private let condition = Condition()

    public init(limit: Int) {
        self.limit = max(1, limit)
    }

    public var count: Int { active.load(ordering: .sequentiallyConsistent) }

    /// Takes a place, waiting while none is free.
    public func enter() {
        if take() { return }
        condition.lock()
        // Counted before the last look: a `leave` that the look misses sees the count and
        // signals, after this thread is waiting (it needs the lock this thread holds till then).
        waiting.add(1, ordering: .sequentiallyConsistent)
        while !take() { condition.wait() }
        waiting.subtract(1, ordering: .sequentiallyConsistent)
        condition.unlock()
    }

    /// Gives a place up: the request ended, or it `park`s.
    public func leave() {
        active.subtract(1, ordering: .sequentiallyConsistent)
        if waiting.load(ordering: .sequentiallyConsistent) > 0 {
            condition.lock()
            condition.signal()
            condition.unlock()
        }
    }

    /// A request waits on something outside: its place is free for another meanwhile.
    public func park() { leave() }

    /// A parked request goes on: it takes a place back at once, even over the limit (the
    /// thread continuing it must never wait here); the limit holds again as requests end.
    public func unpark() { active.add(1, ordering: .sequentiallyConsistent) }

    private func take() -> Bool {
        var now = active.load(ordering: .sequentiallyConsistent)
        while now < limit {
            let (exchanged, seen) = active.compareExchange(expected: now, desired: now + 1, ordering: .sequentiallyConsistent)
            if exchanged { return true }
            now = seen
        }
        return false
    }
}
