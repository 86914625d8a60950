import CSystem
import Glibc

/// Gives freed heap memory back to the system. glibc returns only the free top of a heap by
/// itself: memory freed below allocations still in use (what a burst of calls in flight
/// leaves behind) stays resident for the life of the process. A worker lives long, and its
/// memory limit (Cloud Run, systemd's MemoryMax) holds for its resident size, not for what it
/// uses. So a thread looks at the heap once a second, and when the memory in use has fallen
/// by more than `thresholdBytes` since its last high, releases the free pages (`malloc_trim`).
/// Steady load, where freed memory is soon used again, is left alone.
public final class HeapTrimmer: @unchecked Sendable {
    public let thresholdBytes: Int
    /// The most in use seen since the last trim; touched by the checking thread only.
    private var highInUse = 0

    public init(thresholdBytes: Int = 2 << 20) {
        self.thresholdBytes = thresholdBytes
    }

    /// Bytes malloc hands out now, and bytes it holds free, over all arenas.
    public static var heap: (inUse: Int, free: Int) {
        let info = mallinfo2()
        return (Int(info.uordblks), Int(info.fordblks))
    }

    /// One look at the heap; true when it trimmed.
    @discardableResult
    public func check() -> Bool {
        let heap = Self.heap
        highInUse = max(highInUse, heap.inUse)
        guard highInUse - heap.inUse > thresholdBytes, heap.free > thresholdBytes else { return false }
        malloc_trim(0)
        highInUse = Self.heap.inUse
        return true
    }

    /// Checks every `intervalSeconds` on a thread of its own, for the life of the process.
    public func start(intervalSeconds: Double = 1) {
        Threads.detach(stackSize: 64 << 10) { [self] in
            while true {
                usleep(UInt32(intervalSeconds * 1_000_000))
                check()
            }
        }
    }
}
