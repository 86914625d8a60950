import CRMCore
import Foundation
import XCTest

@testable import CRMStore

/// A database of its own for one test, created through `TEST_DB_DSN` (crm_test, shared with
/// the e2e tests) and dropped again at the end. Without `TEST_DB_DSN` the test is skipped,
/// or fails when `CI` is set.
final class ScratchDatabase {
    let name: String
    let dsn: String
    private let adminDSN: String

    static let key = Secret("0123456789abcdef0123456789abcdef")

    static func adminDSN(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let dsn = env["TEST_DB_DSN"], !dsn.isEmpty { return dsn }
        let message = "TEST_DB_DSN is not set: run `scripts/pg.sh start` and `export TEST_DB_DSN=\"$(scripts/pg.sh dsn crm_test)\"`"
        if let ci = env["CI"], !ci.isEmpty, ci != "0", ci.lowercased() != "false" { throw MissingTestDatabase(message: message) }
        throw XCTSkip(message, file: file, line: line)
    }

    private init(name: String, dsn: String, adminDSN: String) {
        self.name = name
        self.dsn = dsn
        self.adminDSN = adminDSN
    }

    /// Creates the database and registers its removal with `test`.
    static func create(for test: XCTestCase, file: StaticString = #filePath, line: UInt = #line) throws -> ScratchDatabase {
        let adminDSN = try Self.adminDSN(file: file, line: line)
        let name = "crm_t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
        let admin = try Connection(dsn: adminDSN, connectTimeoutSeconds: 5)
        // CREATE DATABASE copies template1 and fails while another session is copying it too.
        for attempt in 1... {
            do {
                try admin.execute(SQL(stringLiteral: "CREATE DATABASE \(name)"))
                break
            } catch {
                guard attempt < 20, error.sqlState == "55006" else { throw error }
                usleep(250_000)
            }
        }
        test.addTeardownBlock {
            do {
                let admin = try Connection(dsn: adminDSN, connectTimeoutSeconds: 5)
                try admin.execute(SQL(stringLiteral: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"))
            } catch {
                XCTFail("could not drop scratch database \(name): \(error)")
            }
        }
        return ScratchDatabase(name: name, dsn: Self.dsn(adminDSN, database: name), adminDSN: adminDSN)
    }

    /// `base` pointed at another database: a keyword DSN gets `dbname=` appended (the last one
    /// wins), a URL gets its path replaced.
    static func dsn(_ base: String, database: String) -> String {
        guard let scheme = base.range(of: "://") else { return base + " dbname=\(database)" }
        let afterScheme = base[scheme.upperBound...]
        let query = afterScheme.firstIndex(of: "?").map { String(afterScheme[$0...]) } ?? ""
        let authorityAndPath = afterScheme.prefix { $0 != "?" }
        let authority = authorityAndPath.prefix { $0 != "/" }
        return String(base[..<scheme.upperBound]) + authority + "/" + database + query
    }

    func connect() throws -> Connection { try Connection(dsn: dsn, connectTimeoutSeconds: 5) }

    func pool(size: Int = 4) -> Pool { Pool(dsn: dsn, size: size, connectTimeoutSeconds: 3) }

    /// A database with the current schema.
    static func migrated(for test: XCTestCase, file: StaticString = #filePath, line: UInt = #line) throws -> ScratchDatabase {
        let db = try ScratchDatabase.create(for: test, file: file, line: line)
        _ = try Migrator.embedded.migrate(try db.connect())
        return db
    }
}

/// Fails a DB test in CI, where skipping it would hide that it never ran.
struct MissingTestDatabase: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension Connection {
    /// The first column of the first row.
    func scalar(_ sql: SQL) throws -> String? {
        guard let row = try execute(sql).first else { return nil }
        return row.string(at: 0)
    }

    func strings(_ sql: SQL, _ column: String) throws -> [String] {
        try execute(sql).rows.map { $0.string(column) ?? "NULL" }
    }
}

/// Polls `condition` until it holds or `seconds` pass: for tests that must wait until
/// another thread reached a state, without guessing how long that takes on a loaded machine.
func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}
