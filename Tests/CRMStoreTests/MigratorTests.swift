import CRMCore
import Foundation
import Synchronization
import XCTest

@testable import CRMStore

final class EmbeddedSQLTests: XCTestCase {
    /// The repository root, from this file's path (Tests/CRMStoreTests/<file>).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A file as the generator embeds it: the multi-line literal drops the final newline.
    private func embeddedForm(_ path: String) throws -> String {
        var text = try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
        if text.hasSuffix("\n") { text.removeLast() }
        return text
    }

    func testEmbeddedSQLMatchesTheFilesOnDisk() throws {
        let stale = "Sources/CRMStore/EmbeddedSQL.swift is out of date: run scripts/embed-sql.sh"
        XCTAssertTrue(EmbeddedSQL.schema == (try embeddedForm("schema.sql")), "schema.sql differs. \(stale)")
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("migrations").path)
            .filter { $0.hasSuffix(".sql") }.sorted()
        XCTAssertEqual(EmbeddedSQL.migrations.map(\.version), files.map { String($0.dropLast(4)) }, "migration list differs. \(stale)")
        for (version, sql) in EmbeddedSQL.migrations where files.contains(version + ".sql") {
            XCTAssertTrue(sql == (try embeddedForm("migrations/\(version).sql")), "migrations/\(version).sql differs. \(stale)")
        }
        XCTAssertEqual(Migrator.embedded.migrations.map(\.version), files.map { String($0.dropLast(4)) }, "applied in file order")
        XCTAssertEqual(files.map { String($0.prefix(4)) }, ["001_", "002_", "003_", "004_", "005_", "006_", "007_", "008_"])
    }
}

final class MigratorTests: XCTestCase {
    static let versions = EmbeddedSQL.migrations.map(\.version)

    private func recorded(_ c: Connection) throws -> [String] {
        try c.strings("SELECT version FROM crm.schema_migrations ORDER BY version", "version")
    }

    func testNewDatabaseGetsTheSchemaAndAllMigrationsRecorded() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try db.connect()
        let first = try Migrator.embedded.migrate(c)
        XCTAssertEqual(first, Migrator.Report(created: true, applied: []))
        for table in ["crm.crm_integrations", "crm.crm_sync_logs", "crm.crm_idempotency_keys", "crm.schema_migrations"] {
            XCTAssertEqual(try c.scalar("SELECT to_regclass(\(table)) IS NOT NULL"), "t", table)
        }
        XCTAssertEqual(try recorded(c), Self.versions)
        XCTAssertEqual(Self.versions.count, 8)

        let second = try Migrator.embedded.migrate(try db.connect())
        XCTAssertEqual(second, Migrator.Report(created: false, applied: []))
        XCTAssertEqual(try recorded(c), Self.versions)
    }

    func testConcurrentMigratorsApplyEverythingOnce() throws {
        let db = try ScratchDatabase.create(for: self)
        let connections = try (0..<4).map { _ in try db.connect() }
        let outcomes = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: connections.count) { i in
            let outcome: String
            do { outcome = "\(try Migrator.embedded.migrate(connections[i]))" } catch { outcome = "error: \(error)" }
            outcomes.withLock { $0.append(outcome) }
        }
        let all = outcomes.withLock { $0 }
        XCTAssertEqual(all.filter { $0 == "\(Migrator.Report(created: true, applied: []))" }.count, 1, "\(all)")
        XCTAssertEqual(all.filter { $0 == "\(Migrator.Report(created: false, applied: []))" }.count, 3, "\(all)")
        XCTAssertEqual(try recorded(try db.connect()), Self.versions)
    }

    /// Columns of the crm tables as (table.column type nullable), for comparing layouts.
    private func layout(_ c: Connection) throws -> [String] {
        try c.execute("""
            SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable AS col
              FROM information_schema.columns
             WHERE table_schema = 'crm' AND table_name IN ('crm_integrations', 'crm_sync_logs', 'crm_idempotency_keys')
            UNION ALL
            SELECT 'function ' || proname || '(' || pg_get_function_arguments(oid) || ') ' || pg_get_function_result(oid)
                   || ' volatility ' || provolatile::text || ' parallel ' || proparallel::text
              FROM pg_proc WHERE pronamespace = 'crm'::regnamespace
             ORDER BY 1
            """).rows.compactMap { $0.string("col") }
    }

    /// Definitions of the crm_sync_logs indexes this schema names (a legacy database also
    /// keeps its own idx_crm_sync_logs_merchant, which is not ours to drop).
    private func logIndexes(_ c: Connection) throws -> [String] {
        try c.strings("""
            SELECT indexdef FROM pg_indexes
             WHERE schemaname = 'crm' AND tablename = 'crm_sync_logs' AND indexname LIKE 'crm\\_sync\\_logs\\_%'
             ORDER BY indexname
            """, "indexdef")
    }

    /// A statement that decrypts many rows may be planned in parallel, where PostgreSQL refuses
    /// the subtransaction of `decrypt_credentials`' EXCEPTION block: the function must be
    /// PARALLEL UNSAFE, so that no such plan is made (005 marked it PARALLEL SAFE).
    func testCredentialsDecryptInAStatementThatCouldRunInParallel() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try c.executeScript("""
            SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
            SET max_parallel_workers_per_gather = 2;
            SELECT set_config(name, 'on', false) FROM pg_settings WHERE name IN ('force_parallel_mode', 'debug_parallel_query');
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials)
            SELECT 'u' || g, 'klaviyo', pgp_sym_encrypt('{"api_key":"k"}', 'a key of 32 characters..........') FROM generate_series(1, 2000) AS g;
            ANALYZE crm.crm_integrations;
            """)
        XCTAssertEqual(try c.scalar("""
            SELECT count(crm.decrypt_credentials(credentials, 'a key of 32 characters..........')) FROM crm.crm_integrations
            """), "2000")
        XCTAssertEqual(try c.scalar("SELECT proparallel FROM pg_proc WHERE oid = 'crm.decrypt_credentials'::regproc"), "u")
    }

    /// A database at 003 (the layout before the claim's partial indexes) gets exactly 004.
    func testDatabaseAt003GetsTheClaimIndexes() throws {
        let fresh = try ScratchDatabase.migrated(for: self)
        let expected = try logIndexes(try fresh.connect())
        XCTAssertEqual(expected.map { $0.components(separatedBy: " ON ")[0] }, [
            "CREATE INDEX crm_sync_logs_claims_idx", "CREATE UNIQUE INDEX crm_sync_logs_pkey",
            "CREATE INDEX crm_sync_logs_queue_idx", "CREATE INDEX crm_sync_logs_user_idx",
        ])

        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try c.executeScript("""
            DROP INDEX crm.crm_sync_logs_queue_idx;
            DROP INDEX crm.crm_sync_logs_claims_idx;
            CREATE INDEX crm_sync_logs_due_idx ON crm.crm_sync_logs (next_attempt_at)
                WHERE status IN ('pending', 'queued', 'retrying', 'in_flight');
            DELETE FROM crm.schema_migrations WHERE version >= '004';
            """)
        let report = try Migrator.embedded.migrate(c)
        XCTAssertEqual(report, Migrator.Report(created: false, applied: Self.versions.filter { $0 >= "004" }))
        XCTAssertEqual(try logIndexes(c), expected)
        XCTAssertEqual(try recorded(c), Self.versions)
    }

    func testLegacyDatabaseIsUpgradedKeepingEveryRow() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try db.connect()
        let legacy = try String(contentsOf: EmbeddedSQLTests.root.appendingPathComponent("tests/sql/legacy_schema.sql"), encoding: .utf8)
        try c.executeScript(legacy)
        let merchantA = "3f8b6a8e-1c2d-4e5f-9a0b-1c2d3e4f5a6b", merchantB = "9d2c1b0a-8f7e-4d6c-8b5a-4f3e2d1c0b9a"
        let key = ScratchDatabase.key
        func insert(_ merchant: String, _ type: String, _ plaintext: String, settings: String?) throws {
            try c.execute("""
                INSERT INTO crm.crm_integrations (merchant_id, crm_type, credentials, settings, is_active, created_at, updated_at)
                VALUES (\(merchant)::uuid, \(type), pgp_sym_encrypt(\(plaintext), \(key)), \(settings)::jsonb,
                        CASE WHEN \(settings)::jsonb IS NULL THEN NULL ELSE true END,
                        CASE WHEN \(settings)::jsonb IS NULL THEN NULL ELSE now() END, NULL)
                """)
        }
        try insert(merchantA, "klaviyo", #"{"api_key":"pk_legacy_1"}"#, settings: #"{"list_id":"L1"}"#)
        try insert(merchantB, "klaviyo", #"{"api_key":"pk_legacy_2"}"#, settings: nil)
        try insert(merchantA, "hubspot", #"{"access_token":"pat-legacy-3"}"#, settings: "{}")
        let legacyLogs: [(String, String, String, String)] = [
            (merchantA, "klaviyo", "contact_sync", "success"), (merchantA, "klaviyo", "event", "error"),
            (merchantA, "hubspot", "contact", "pending"), (merchantB, "klaviyo", "sync_event", "ok"), (merchantB, "klaviyo", "contact", "weird"),
        ]
        for (merchant, type, operation, status) in legacyLogs {
            try c.execute("""
                INSERT INTO crm.crm_sync_logs (merchant_id, crm_type, operation, status, request_payload, response_payload, error_message)
                VALUES (\(merchant)::uuid, \(type), \(operation), \(status), '{"email":"a@b.co"}', '{"id":"r1"}', \(status == "error" ? "boom" : nil))
                """)
        }

        let report = try Migrator.embedded.migrate(c)
        XCTAssertEqual(report, Migrator.Report(created: false, applied: MigratorTests.versions))
        XCTAssertEqual(try recorded(c), Self.versions)
        XCTAssertEqual(try Migrator.embedded.migrate(try db.connect()), Migrator.Report(created: false, applied: []), "nothing twice")

        // Every integration kept, user_id is the old UUID as text.
        XCTAssertEqual(try c.scalar("""
            SELECT data_type FROM information_schema.columns
             WHERE table_schema = 'crm' AND table_name = 'crm_integrations' AND column_name = 'user_id'
            """), "text")
        XCTAssertEqual(try c.strings("SELECT user_id || ' ' || crm_type AS k FROM crm.crm_integrations ORDER BY 1", "k"),
                       ["\(merchantA) hubspot", "\(merchantA) klaviyo", "\(merchantB) klaviyo"])

        // Credentials still decrypt through the store, under the new user ids.
        let store = IntegrationStore(pool: db.pool(), encryptionKey: key)
        let a = try XCTUnwrap(UserID(merchantA)), b = try XCTUnwrap(UserID(merchantB))
        guard case let .klaviyo(keyA)? = try store.credentials(user: a, type: .klaviyo) else { return XCTFail("A klaviyo") }
        XCTAssertEqual(keyA.revealed, "pk_legacy_1")
        guard case let .klaviyo(keyB)? = try store.credentials(user: b, type: .klaviyo) else { return XCTFail("B klaviyo") }
        XCTAssertEqual(keyB.revealed, "pk_legacy_2")
        guard case let .hubspot(token)? = try store.credentials(user: a, type: .hubspot) else { return XCTFail("A hubspot") }
        XCTAssertEqual(token.revealed, "pat-legacy-3")
        XCTAssertEqual(try store.list(user: a).map(\.crmType), [.hubspot, .klaviyo])
        let upgraded = try XCTUnwrap(try store.find(user: b, type: .klaviyo))
        XCTAssertEqual(upgraded.status, "connected")
        XCTAssertTrue(upgraded.isActive)
        XCTAssertFalse(upgraded.createdAt.text.isEmpty)
        XCTAssertEqual(try store.find(user: a, type: .klaviyo)?.settings.string("list_id"), "L1")

        // Logs kept, statuses and operations mapped, payloads under their new names.
        XCTAssertEqual(try c.strings("""
            SELECT user_id || ' ' || crm_type || ' ' || operation || ' ' || status || ' ' || attempts AS k FROM crm.crm_sync_logs ORDER BY id
            """, "k"), [
                "\(merchantA) klaviyo contact success 1", "\(merchantA) klaviyo event failed 1", "\(merchantA) hubspot contact pending 0",
                "\(merchantB) klaviyo event success 1", "\(merchantB) klaviyo contact failed 1",
            ])
        let logs = try SyncLogStore(pool: db.pool()).list(user: a, query: LogQuery())
        XCTAssertEqual(logs.logs.count, 3)
        XCTAssertEqual(logs.logs.last?["status"], "success")
        let failedID = try XCTUnwrap(logs.logs.first { $0["status"] == "failed" }?["id"]?.intValue)
        let failed = try XCTUnwrap(try SyncLogStore(pool: db.pool()).get(user: a, id: failedID))
        XCTAssertEqual(failed["error"], "boom")
        XCTAssertEqual(failed["request"], ["email": "a@b.co"])
        XCTAssertEqual(failed["response"], ["id": "r1"])

        // The store works on the upgraded database like on a new one.
        _ = try store.save(user: a, credentials: .klaviyo(apiKey: Secret("pk_new")), settings: .defaults)
        XCTAssertEqual(try c.scalar("SELECT count(*) FROM crm.crm_integrations"), "3")
    }

    func testUpgradedLegacyDatabaseHasTheLayoutOfANewOne() throws {
        let fresh = try ScratchDatabase.migrated(for: self)
        let old = try ScratchDatabase.create(for: self)
        let c = try old.connect()
        try c.executeScript(try String(contentsOf: EmbeddedSQLTests.root.appendingPathComponent("tests/sql/legacy_schema.sql"), encoding: .utf8))
        _ = try Migrator.embedded.migrate(c)
        let upgraded = try layout(c)
        XCTAssertTrue(upgraded.contains("crm_integrations.user_id text NO"), "\(upgraded)")
        XCTAssertEqual(upgraded, try layout(try fresh.connect()))
        XCTAssertEqual(try logIndexes(c), try logIndexes(try fresh.connect()))
    }
}
