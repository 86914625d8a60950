import CSystem
import Glibc

/// Plain POSIX threads (Linux): FastCGI accept threads, database writer and executor threads,
/// the libcurl loop. Nothing more is needed, and this keeps Foundation out of the process.
public enum Threads {
    /// Starts `body` on a new detached thread with a `stackSize`-byte stack.
    public static func detach(stackSize: Int = 1 << 20, _ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attributes, max(stackSize, 64 << 10))
        var thread = pthread_t()
        let started = pthread_create(&thread, &attributes, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        // Out of threads is not a state the worker can serve in: fail loudly, not silently.
        precondition(started == 0, "pthread_create failed: \(started)")
    }

    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
}

/// A mutex with condition variables (what `NSCondition` offers, with one or more wait
/// queues, "lanes", so that a waker can pick which kind of waiter to wake), timed waits on the
/// monotonic clock so that a wall-clock step never stretches or cuts a wait.
public final class Condition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let conds: UnsafeMutablePointer<pthread_cond_t>
    private let lanes: Int

    public init(lanes: Int = 1) {
        self.lanes = max(1, lanes)
        conds = .allocate(capacity: self.lanes)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        for lane in 0..<self.lanes { pthread_cond_init(conds + lane, &attributes) }
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        for lane in 0..<lanes { pthread_cond_destroy(conds + lane) }
        pthread_mutex_destroy(mutex)
        conds.deallocate()
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
    public func signal(lane: Int = 0) { pthread_cond_signal(conds + lane) }
    public func broadcast(lane: Int = 0) { pthread_cond_broadcast(conds + lane) }

    /// Waits (the lock held) until signalled.
    public func wait(lane: Int = 0) { pthread_cond_wait(conds + lane, mutex) }

    /// Waits (the lock held) until signalled or `deadline` passes; false on timeout.
    @discardableResult
    public func wait(lane: Int = 0, until deadline: Deadline) -> Bool {
        var spec = deadline.timespec
        return pthread_cond_timedwait(conds + lane, mutex, &spec) == 0
    }
}

/// A point on the monotonic clock.
public struct Deadline: Sendable, Comparable {
    public let nanoseconds: Int64

    public static func now() -> Deadline {
        var spec = Glibc.timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Deadline(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    public static func after(seconds: Double) -> Deadline {
        Deadline(nanoseconds: now().nanoseconds + Int64(seconds * 1_000_000_000))
    }

    public var hasPassed: Bool { Deadline.now() >= self }

    public static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    var timespec: Glibc.timespec {
        Glibc.timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
}
