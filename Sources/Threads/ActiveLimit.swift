/// At most `limit` requests doing work at once. A thread that would start one more waits in
/// `enter` (for an accept thread: it stops accepting, and new connections wait in the listen
/// backlog); a request that waits on something outside, a CRM call, `park`s, which gives its
/// place up without ending, and `unpark`s when the call returns, never waiting (the thread
/// continuing it is the curl loop's). So requests waiting on slow CRMs never keep others out,
/// and requests that compete for the same CPU and database are not let in faster than they
/// finish: more of them in at once only queue inside the process and stretch the tail.
public final class ActiveLimit: @unchecked Sendable {
    public let limit: Int
    private let condition = Condition()
    /// Guarded by `condition`'s lock.
    private var active = 0
    private var waiting = 0

    public init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Requests in now (parked ones not counted).
    public var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return active
    }

    /// Takes a place, waiting while none is free.
    public func enter() {
        condition.lock()
        while active >= limit {
            waiting += 1
            condition.wait()
            waiting -= 1
        }
        active += 1
        condition.unlock()
    }

    /// Gives a place up: the request ended, or it `park`s.
    public func leave() {
        condition.lock()
        active -= 1
        if waiting > 0 { condition.signal() }
        condition.unlock()
    }

    /// A request waits on something outside: its place is free for another meanwhile.
    public func park() { leave() }

    /// A parked request goes on: it takes a place back at once, even over the limit (the
    /// thread continuing it must never wait here); the limit holds again as requests end.
    public func unpark() {
        condition.lock()
        active += 1
        condition.unlock()
    }
}
