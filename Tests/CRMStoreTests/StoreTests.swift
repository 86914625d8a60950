import CRMCore
import Foundation
import Synchronization
import XCTest

@testable import CRMCore
@testable import CRMStore

final class IntegrationStoreTests: XCTestCase {
    let alice = UserID("p9uOHM8ABHgwBYGT0dRpZmfyUWn1")!
    let bob = UserID("3f8b6a8e-1c2d-4e5f-9a0b-1c2d3e4f5a6b")!

    private func settings(_ specific: [(String, JSON)] = [], syncEvents: Bool = true) -> IntegrationSettings {
        var s = IntegrationSettings.defaults
        s.specific = specific
        s.syncEvents = syncEvents
        return s
    }

    private func apiKey(_ store: IntegrationStore, _ user: UserID, _ type: CRMType = .klaviyo) throws -> String? {
        guard case let .klaviyo(key)? = try store.credentials(user: user, type: type) else { return nil }
        return key.revealed
    }

    func testEverythingIsScopedByUser() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let store = IntegrationStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let saved = try store.save(user: alice, credentials: .klaviyo(apiKey: Secret("pk_alice")), settings: settings([("list_id", "L1")]))
        XCTAssertEqual(saved.crmType, .klaviyo)
        XCTAssertEqual(saved.status, "connected")
        XCTAssertTrue(saved.isActive)
        XCTAssertTrue(Timestamp.isISO8601(saved.createdAt.text) && saved.createdAt.text.hasSuffix("Z"), saved.createdAt.text)
        XCTAssertEqual(saved.settings.string("list_id"), "L1")
        _ = try store.save(user: alice, credentials: .hubspot(accessToken: Secret("pat-alice")), settings: .defaults)

        XCTAssertEqual(try store.find(user: alice, type: .klaviyo)?.settings.string("list_id"), "L1")
        XCTAssertEqual(try store.list(user: alice).map(\.crmType), [.hubspot, .klaviyo])
        XCTAssertEqual(try apiKey(store, alice), "pk_alice")

        // Bob sees nothing of Alice's, and cannot delete it.
        XCTAssertNil(try store.find(user: bob, type: .klaviyo))
        XCTAssertEqual(try store.list(user: bob).count, 0)
        XCTAssertNil(try store.credentials(user: bob, type: .klaviyo))
        XCTAssertFalse(try store.delete(user: bob, type: .klaviyo))
        XCTAssertNotNil(try store.find(user: alice, type: .klaviyo))

        // Bob's own integration of the same type is separate.
        _ = try store.save(user: bob, credentials: .klaviyo(apiKey: Secret("pk_bob")), settings: .defaults)
        XCTAssertEqual(try apiKey(store, bob), "pk_bob")
        XCTAssertEqual(try apiKey(store, alice), "pk_alice")

        XCTAssertTrue(try store.delete(user: alice, type: .klaviyo))
        XCTAssertNil(try store.find(user: alice, type: .klaviyo))
        XCTAssertNil(try store.credentials(user: alice, type: .klaviyo))
        XCTAssertFalse(try store.delete(user: alice, type: .klaviyo), "already gone")
        XCTAssertEqual(try store.list(user: alice).map(\.crmType), [.hubspot])
        XCTAssertEqual(try apiKey(store, bob), "pk_bob")
    }

    func testReconnectReplacesCredentialsAndSettingsInOneRow() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let store = IntegrationStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let first = try store.save(user: alice, credentials: .klaviyo(apiKey: Secret("pk_old")), settings: settings([("list_id", "L1")]))
        let c = try db.connect()
        try c.execute("UPDATE crm.crm_integrations SET status = 'auth_error', is_active = false, status_detail = 'revoked' WHERE user_id = \(alice)")
        XCTAssertEqual(try store.find(user: alice, type: .klaviyo)?.status, "auth_error")

        let second = try store.save(user: alice, credentials: .klaviyo(apiKey: Secret("pk_new")),
                                    settings: settings([("list_id", "L2")], syncEvents: false))
        XCTAssertEqual(try c.scalar("SELECT count(*) FROM crm.crm_integrations WHERE user_id = \(alice) AND crm_type = 'klaviyo'"), "1")
        XCTAssertEqual(second.settings.string("list_id"), "L2")
        XCTAssertFalse(second.settings.syncEvents)
        XCTAssertEqual(second.status, "connected", "reconnecting clears auth_error")
        XCTAssertTrue(second.isActive)
        XCTAssertEqual(second.createdAt, first.createdAt)
        XCTAssertEqual(try c.scalar("SELECT updated_at > created_at FROM crm.crm_integrations WHERE user_id = \(alice)"), "t")
        XCTAssertEqual(try apiKey(store, alice), "pk_new")
        XCTAssertNil(try c.scalar("SELECT status_detail FROM crm.crm_integrations WHERE user_id = \(alice)"))
        let found = try XCTUnwrap(try store.find(user: alice, type: .klaviyo))
        XCTAssertEqual(found.settings, second.settings)
    }

    /// What connect stores, as PostgreSQL gives it back (jsonb's own text), is read in one pass
    /// (`StoredSettingsScanner`), not through a JSON tree.
    func testStoredSettingsTextIsThePlainShape() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let store = IntegrationStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        var mapped = settings([("list_id", "L1")], syncEvents: false)
        mapped.fieldMapping = [("phone", "phone_number"), ("company", "org.name")]
        var salesforce = settings([("object", "Lead"), ("api_version", "v61.0"), ("events", "Order__e")])
        salesforce.syncContacts = false
        let saved = [
            try store.save(user: alice, credentials: .klaviyo(apiKey: Secret("pk_1")), settings: mapped),
            try store.save(user: alice, credentials: .hubspot(accessToken: Secret("pat-1")), settings: .defaults),
            try store.save(user: alice, credentials: .salesforce(.password(clientID: "cid", clientSecret: Secret("cs"), username: "u@x.com",
                                                                                   password: Secret("pw"), securityToken: Secret("st"), domain: "test")),
                           settings: salesforce),
        ]
        let c = try db.connect()
        for record in saved {
            let text = try XCTUnwrap(try c.scalar("SELECT settings::text FROM crm.crm_integrations WHERE user_id = \(alice) AND crm_type = \(record.crmType)"))
            let read = Array(text.utf8).withUnsafeBufferPointer { bytes in
                var scanner = StoredSettingsScanner(bytes: bytes, type: record.crmType)
                return scanner.read()
            }
            // The general decoder's reading of the same text is the definition.
            let general = IntegrationSettings.fromStored(try JSONParser.parse(Array(text.utf8)), for: record.crmType)
            XCTAssertEqual(try XCTUnwrap(read, "\(record.crmType): \(text) should be read in one pass"), general, text)
            XCTAssertEqual(read, record.settings, "\(record.crmType): \(text)")
        }
        // What was saved is what is read (flags, mapping, type-specific values).
        XCTAssertFalse(saved[0].settings.syncEvents)
        XCTAssertTrue(saved[0].settings.syncContacts)
        XCTAssertFalse(saved[2].settings.syncContacts)
        XCTAssertEqual(saved[0].settings.string("list_id"), "L1")
        XCTAssertEqual(Set(saved[2].settings.specific.map { "\($0.0)=\($0.1.stringValue ?? "?")" }),
                       ["object=Lead", "api_version=v61.0", "events=Order__e"])
        XCTAssertEqual(try store.list(user: alice).map(\.settings), [saved[1].settings, saved[0].settings, saved[2].settings])
        XCTAssertEqual(saved[0].settings.fieldMapping?.map(\.1), ["phone_number", "org.name"])
        XCTAssertEqual(saved[2].settings.string("events"), "Order__e")
    }

    func testCredentialsAreStoredOnlyEncrypted() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let store = IntegrationStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let secrets = ["cs_PLAINTEXT_secret_1", "pw_PLAINTEXT_secret_2", "st_PLAINTEXT_3"]
        _ = try store.save(user: alice, credentials: .salesforce(.password(
            clientID: "cid", clientSecret: Secret(secrets[0]), username: "u@x.com", password: Secret(secrets[1]),
            securityToken: Secret(secrets[2]), domain: "test")), settings: .defaults)
        let c = try db.connect()
        for secret in secrets + [ScratchDatabase.key.revealed] {
            XCTAssertEqual(try c.scalar("SELECT position(convert_to(\(secret), 'UTF8') IN credentials) FROM crm.crm_integrations"), "0", secret)
            XCTAssertEqual(try c.scalar("SELECT count(*) FROM crm.crm_integrations WHERE encode(credentials, 'escape') LIKE '%' || \(secret) || '%' OR settings::text LIKE '%' || \(secret) || '%'"), "0")
        }
        guard case let .salesforce(.password(_, clientSecret, _, password, token, domain))? = try store.credentials(user: alice, type: .salesforce) else {
            return XCTFail("credentials do not come back")
        }
        XCTAssertEqual([clientSecret.revealed, password.revealed, token?.revealed], secrets)
        XCTAssertEqual(domain, "test")

        // The OpenPGP symmetric-key packet (RFC 4880 5.3, 3.7.1.3): version 4, AES-256 (9),
        // iterated and salted s2k (3) with SHA-1 (2), then 8 bytes of salt and the count byte:
        // 0 is 1,024 rounds (the least; see IntegrationStore.encryptionOptions).
        let header = try c.scalar("SELECT encode(substring(credentials from 3 for 13), 'hex') FROM crm.crm_integrations")
        XCTAssertEqual(header?.prefix(8), "04090302", header ?? "-")
        XCTAssertEqual(header?.suffix(2), "00", header ?? "-")

        // Another key cannot read them.
        let wrongKey = IntegrationStore(pool: db.pool(), encryptionKey: Secret("ffffffffffffffffffffffffffffffff"))
        XCTAssertThrowsError(try wrongKey.credentials(user: alice, type: .salesforce)) { error in
            XCTAssertTrue((error as? DatabaseError)?.isDecryptionFailure ?? false, "\(error)")
        }
    }

    func testDeleteCancelsPendingLogsAndKeepsThem() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let store = IntegrationStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        _ = try store.save(user: alice, credentials: .klaviyo(apiKey: Secret("pk")), settings: .defaults)
        _ = try store.save(user: alice, credentials: .hubspot(accessToken: Secret("pat")), settings: .defaults)
        _ = try store.save(user: bob, credentials: .klaviyo(apiKey: Secret("pk")), settings: .defaults)
        let c = try db.connect()
        let rows: [(UserID, String, String)] = [
            (alice, "klaviyo", "pending"), (alice, "klaviyo", "queued"), (alice, "klaviyo", "retrying"), (alice, "klaviyo", "in_flight"),
            (alice, "klaviyo", "success"), (alice, "klaviyo", "failed"), (alice, "hubspot", "pending"), (bob, "klaviyo", "retrying"),
        ]
        for (user, type, status) in rows {
            try c.execute("""
                INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, next_attempt_at)
                VALUES (\(user), \(type), 'contact', \(status), now() + interval '1 minute')
                """)
        }
        XCTAssertEqual(try store.stats(user: alice, type: .klaviyo),
                       ["pending": 1, "queued": 1, "retrying": 1, "in_flight": 1, "success": 1, "failed": 1])
        XCTAssertTrue(try store.delete(user: alice, type: .klaviyo))
        XCTAssertEqual(try c.strings("""
            SELECT user_id || ' ' || crm_type || ' ' || status || ' ' || (next_attempt_at IS NULL) AS k FROM crm.crm_sync_logs ORDER BY id
            """, "k"), [
                "\(alice) klaviyo cancelled true", "\(alice) klaviyo cancelled true", "\(alice) klaviyo cancelled true",
                // A delivery in flight keeps its row: its outcome is still recorded.
                "\(alice) klaviyo in_flight false", "\(alice) klaviyo success false", "\(alice) klaviyo failed false",
                "\(alice) hubspot pending false", "\(bob) klaviyo retrying false",
            ])
        XCTAssertEqual(try store.stats(user: alice, type: .klaviyo), ["cancelled": 3, "in_flight": 1, "success": 1, "failed": 1])
    }

    func testValuesAreBoundNeverSpliced() throws {
        let evil = "x'); DROP TABLE crm.crm_integrations; --"
        let sql: SQL = "SELECT \(evil) AS v, \(alice) AS u"
        XCTAssertEqual(sql.text, "SELECT $1 AS v, $2 AS u")
        XCTAssertEqual(sql.parameters, [evil, alice.value])

        let db = try ScratchDatabase.migrated(for: self)
        let store = IntegrationStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        _ = try store.save(user: alice, credentials: .creatio(.forms(baseURL: "https://a.creatio.com", username: evil, password: Secret(evil))),
                           settings: settings([("contact_entity", .string(evil))]))
        guard case let .creatio(.forms(_, username, password))? = try store.credentials(user: alice, type: .creatio) else {
            return XCTFail("credentials lost")
        }
        XCTAssertEqual(username, evil)
        XCTAssertEqual(password.revealed, evil)
        let c = try db.connect()
        XCTAssertEqual(try c.scalar("SELECT settings->>'contact_entity' FROM crm.crm_integrations WHERE user_id = \(alice)"), evil)
        try c.execute("INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, error) VALUES (\(alice), 'creatio', 'contact', 'failed', \(evil))")
        XCTAssertEqual(try c.scalar("SELECT error FROM crm.crm_sync_logs WHERE error = \(evil)"), evil)
        XCTAssertEqual(try c.scalar("SELECT \(evil)"), evil)
        XCTAssertEqual(try c.scalar("SELECT to_regclass('crm.crm_integrations') IS NOT NULL"), "t", "the table survives")
        XCTAssertEqual(try c.scalar("SELECT count(*) FROM crm.crm_integrations"), "1")
    }
}

final class SyncLogStoreTests: XCTestCase {
    /// A page of a large log is an ordered index walk that stops at the page's end, first page
    /// or deep one, with or without filters, and a deep page starts at its place (its end is an
    /// index bound): the statement is planned for its values. The generic plan, made for the
    /// average user, only filtered by the end, so a deep page read every newer row.
    func testAPageOfALargeLogIsAnOrderedIndexWalkFromItsPlace() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try c.execute("""
            INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request)
            SELECT CASE WHEN g % 10 = 0 THEN 'heavy' ELSE 'u' || g % 5000 END, (ARRAY['klaviyo', 'hubspot'])[1 + g % 2], 'event',
                   (ARRAY['success', 'failed'])[1 + g % 3 / 2], '{"event":"E"}'
              FROM generate_series(1, 100000) g
            """)
        try c.execute("ANALYZE crm.crm_sync_logs")
        var pages: [(String, UserID, LogQuery)] = [("first", UserID("heavy")!, LogQuery())]
        var query = LogQuery()
        query.beforeID = 5000
        pages.append(("deep", UserID("heavy")!, query))
        query.status = "failed"
        query.crmType = .hubspot
        pages.append(("filtered", UserID("heavy")!, query))
        try c.execute("SET plan_cache_mode = force_custom_plan")  // as `Connection` does for it
        for (name, user, query) in pages {
            let sql = SyncLogStore.listSQL(user: user, query: query)
            XCTAssertTrue(sql.plannedPerCall)
            let plan = try ExplainedPlan.of(sql, named: "page_\(name)", on: c)
            let nodes = ExplainedPlan.nodes(plan)
            XCTAssertEqual(nodes.first, "Limit", "\(name): \(nodes)")
            XCTAssertEqual(nodes.count, 2, "\(name): \(nodes)")
            XCTAssertTrue(nodes.last?.hasPrefix("Index Scan on crm_sync_logs_") ?? false, "\(name): \(nodes)")
            if let end = query.beforeID {
                let conditions = ExplainedPlan.indexConditions(plan)
                XCTAssertTrue(conditions.contains { $0.contains("(id < '\(end)'::bigint)") }, "\(name): \(conditions)")
            }
        }
    }

    func testListIsNewestFirstPagedAndScoped() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let alice = UserID("alice")!, bob = UserID("bob")!
        let rows: [(UserID, String, String, String)] = [
            (alice, "klaviyo", "contact", "success"), (alice, "hubspot", "event", "failed"), (bob, "klaviyo", "contact", "success"),
            (alice, "klaviyo", "event", "retrying"), (alice, "klaviyo", "contact", "failed"),
        ]
        for (user, type, operation, status) in rows {
            try c.execute("""
                INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, response)
                VALUES (\(user), \(type), \(operation), \(status), '{"email":"a@b.co"}', '{"ok":true}')
                """)
        }
        let ids = try c.strings("SELECT id FROM crm.crm_sync_logs ORDER BY id", "id").compactMap { Int64($0) }
        let logs = SyncLogStore(pool: db.pool())
        var query = LogQuery()
        query.limit = 2
        let page1 = try logs.list(user: alice, query: query)
        XCTAssertEqual(page1.logs.compactMap { $0["id"]?.intValue }, [ids[4], ids[3]])
        XCTAssertEqual(page1.nextBeforeID, ids[3])
        query.beforeID = page1.nextBeforeID
        let page2 = try logs.list(user: alice, query: query)
        XCTAssertEqual(page2.logs.compactMap { $0["id"]?.intValue }, [ids[1], ids[0]])
        XCTAssertNil(page2.nextBeforeID, "no more pages")

        var filtered = LogQuery()
        filtered.crmType = .klaviyo
        filtered.status = "failed"
        XCTAssertEqual(try logs.list(user: alice, query: filtered).logs.compactMap { $0["id"]?.intValue }, [ids[4]])
        filtered = LogQuery()
        filtered.operation = "event"
        XCTAssertEqual(try logs.list(user: alice, query: filtered).logs.compactMap { $0["id"]?.intValue }, [ids[3], ids[1]])

        let entry = try XCTUnwrap(page1.logs.first)
        XCTAssertEqual(entry.objectValue?.map(\.0), ["id", "crm_type", "operation", "status", "attempts", "http_status", "error",
                                                      "duration_ms", "crm_record_id", "created_at", "updated_at", "next_attempt_at"])
        let detailed = try XCTUnwrap(try logs.get(user: alice, id: ids[4]))
        XCTAssertEqual(detailed["request"], ["email": "a@b.co"])
        XCTAssertEqual(detailed["response"], ["ok": true])
        XCTAssertNil(try logs.get(user: alice, id: ids[2]), "Bob's log is not Alice's")
        XCTAssertNil(try logs.get(user: bob, id: ids[0]))
        XCTAssertEqual(try logs.list(user: bob, query: LogQuery()).logs.count, 1)
    }
}

final class PoolTests: XCTestCase {
    func testStaleConnectionsAreReplacedAfterTheServerDropsThem() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let pool = db.pool(size: 2)
        // Two connections in the pool.
        let pids = try pool.withConnection { outer in
            try [outer.scalar("SELECT pg_backend_pid()"), pool.withConnection { try $0.scalar("SELECT pg_backend_pid()") }]
        }.compactMap { $0 }
        XCTAssertEqual(Set(pids).count, 2)
        XCTAssertEqual(pool.usage.idle, 2)

        let admin = try db.connect()
        let terminated = try admin.scalar("""
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
            """)
        XCTAssertGreaterThanOrEqual(Int(terminated ?? "") ?? 0, 2)
        for _ in 0..<50 {
            if try admin.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(\("{" + pids.joined(separator: ",") + "}")::int[])") == "0" { break }
            usleep(100_000)
        }
        // The next callers never see the dead connections.
        let pid = try pool.withConnection { try $0.scalar("SELECT pg_backend_pid()") }
        XCTAssertFalse(pids.contains(pid ?? ""), "a fresh connection")
        XCTAssertEqual(try pool.withConnection { try $0.scalar("SELECT 1") }, "1")
        XCTAssertEqual(try pool.transaction { try $0.scalar("SELECT 2") }, "2")
        XCTAssertLessThanOrEqual(pool.usage.open, 2)
    }

    func testRequestsGetAConnectionBeforeBackgroundWork() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let pool = db.pool(size: 1)
        let order = Mutex<[String]>([])
        let holding = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            _ = try? pool.withConnection { _ in holding.signal(); release.wait() }
        }
        holding.wait()
        // The only connection is busy: background work queues first, then a request.
        DispatchQueue.global().async(group: group) {
            _ = try? pool.withConnection(priority: .background) { _ in order.withLock { $0.append("background") } }
        }
        XCTAssertTrue(waitUntil { pool.usage.backgroundWaiting == 1 }, "background work waits")
        DispatchQueue.global().async(group: group) {
            _ = try? pool.withConnection(priority: .request) { _ in order.withLock { $0.append("request") } }
        }
        XCTAssertTrue(waitUntil { pool.usage.requestsWaiting == 1 }, "the request waits")
        release.signal()
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(order.withLock { $0 }, ["request", "background"])
    }

    func testConcurrentCallersShareABoundedPool() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let pool = db.pool(size: 2)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            for j in 0..<5 {
                do {
                    let value = try pool.withConnection { try $0.scalar("SELECT \(i * 10 + j)::int + 0 AS n, pg_sleep(0.01)") }
                    if value != String(i * 10 + j) { failures.withLock { $0.append("got \(value ?? "nil") for \(i * 10 + j)") } }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertLessThanOrEqual(pool.usage.open, 2)
    }

    func testClosedPortIsUnavailableQuickly() {
        for dsn in ["host=127.0.0.1 port=1 dbname=x user=x", "postgresql://x@127.0.0.1:1/x"] {
            let pool = Pool(dsn: dsn, size: 2, connectTimeoutSeconds: 1)
            let started = Date()
            XCTAssertThrowsError(try pool.withConnection { try $0.execute("SELECT 1") }) { error in
                XCTAssertEqual((error as? DatabaseError)?.kind, .unavailable, "\(error)")
            }
            XCTAssertLessThan(Date().timeIntervalSince(started), 3)
            XCTAssertEqual(pool.usage.open, 0, "a failed connect does not use up a slot")
        }
    }

    func testUnroutableHostTimesOut() {
        let pool = Pool(dsn: "host=10.255.255.1 port=5432 dbname=x user=x", size: 1, connectTimeoutSeconds: 1)
        let started = Date()
        XCTAssertThrowsError(try pool.withConnection { try $0.execute("SELECT 1") }) { error in
            XCTAssertEqual((error as? DatabaseError)?.kind, .unavailable, "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 4.5)
    }

    func testExhaustedPoolIsUnavailableAfterTheTimeout() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let pool = Pool(dsn: db.dsn, size: 1, connectTimeoutSeconds: 1)
        let holding = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? pool.withConnection { c in
                holding.signal()
                _ = try c.execute("SELECT pg_sleep(2.5)")
            }
            done.signal()
        }
        holding.wait()
        let started = Date()
        XCTAssertThrowsError(try pool.withConnection { try $0.execute("SELECT 1") }) { error in
            XCTAssertEqual((error as? DatabaseError)?.kind, .unavailable, "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 2.4)
        done.wait()
        XCTAssertEqual(try pool.withConnection { try $0.scalar("SELECT 1") }, "1", "usable again once released")
    }
}
