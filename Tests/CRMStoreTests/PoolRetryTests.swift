import CRMCore
import Synchronization
import XCTest

@testable import CRMStore

/// Bug: Pool.withConnection (Sources/CRMStore/Pool.swift, the `catch ... where error.kind == .unavailable
/// && reused && !connection.isHealthy` branch) re-runs the whole body on a fresh connection whenever a
/// reused connection breaks, not only when it broke on its first statement as its comment promises
/// ("the server never saw it"). Statements the server already executed (autocommit INSERTs, a
/// committed transaction whose reply was lost) run twice.
final class KnownBugPoolRetryTests: XCTestCase {
    func testKnownBugWorkTheServerAlreadyDidIsNotRunAgain() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let pool = db.pool(size: 1)
        _ = try pool.withConnection { try $0.execute("SELECT 1") }  // pooled: the next use is a reused connection
        let runs = Mutex(0)
        XCTAssertThrowsError(try pool.withConnection { c in
            runs.withLock { $0 += 1 }
            try c.execute("INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status) VALUES ('u', 'klaviyo', 'contact', 'pending')")
            // The connection dies after the server did the work (as in a failover or a network cut).
            try c.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        })
        XCTAssertEqual(runs.withLock { $0 }, 1, "the body ran again on a fresh connection")
        XCTAssertEqual(try db.connect().scalar("SELECT count(*) FROM crm.crm_sync_logs"), "1", "the INSERT was done twice")
    }
}
