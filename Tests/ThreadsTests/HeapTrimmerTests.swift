import Glibc
import Threads
import XCTest

final class HeapTrimmerTests: XCTestCase {
    /// Resident pages of this process (from /proc/self/statm).
    private func residentBytes() -> Int {
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var size = 0, resident = 0
        withUnsafeMutablePointer(to: &size) { s in
            withUnsafeMutablePointer(to: &resident) { r in
                _ = withVaList([s, r]) { vfscanf(file, "%ld %ld", $0) }
            }
        }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    func testMemoryFreedBelowLiveAllocationsGoesBackToTheSystem() {
        let trimmer = HeapTrimmer(thresholdBytes: 2 << 20)
        XCTAssertFalse(trimmer.check(), "nothing was freed yet")
        // 16 MiB in 64 KiB blocks (from the heap, not mmap), each written; every other one is
        // freed: free memory between live allocations, which glibc keeps resident.
        let blocks = (0..<256).map { _ -> UnsafeMutableRawPointer in
            let block = malloc(64 << 10)!
            memset(block, 1, 64 << 10)
            return block
        }
        defer { for (i, block) in blocks.enumerated() where i % 2 == 1 { free(block) } }
        XCTAssertFalse(trimmer.check(), "in use, not free")
        for (i, block) in blocks.enumerated() where i % 2 == 0 { free(block) }
        XCTAssertGreaterThan(HeapTrimmer.heap.free, 8 << 20, "the freed blocks are free in malloc's arena")
        let before = residentBytes()

        XCTAssertTrue(trimmer.check())
        let after = residentBytes()
        XCTAssertLessThan(after, before - (6 << 20), "resident \(before) -> \(after) bytes")
        XCTAssertFalse(trimmer.check(), "nothing new to trim right after a trim")
    }
}
