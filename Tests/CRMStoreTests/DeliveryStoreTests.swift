import CRMCore
import Foundation
import Synchronization
import XCTest

@testable import CRMStore

final class DeliveryStoreTests: XCTestCase {
    /// Klaviyo integrations of alice and bob, with their (encrypted) API keys.
    private func connectAliceAndBob(_ c: Connection) throws {
        try c.execute("""
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials, settings) VALUES
              ('alice', 'klaviyo', pgp_sym_encrypt('{"api_key":"pk_alice"}', \(ScratchDatabase.key)), '{}'),
              ('bob', 'klaviyo', pgp_sym_encrypt('{"api_key":"pk_bob"}', \(ScratchDatabase.key)), '{}')
            """)
    }

    /// Inserts one sync log row; times are seconds from now (nil: NULL). Returns its id.
    @discardableResult
    private func insert(_ c: Connection, _ status: String, next: Int?, claimedUntil: Int? = nil, attempts: Int = 0) throws -> Int64 {
        let row = try c.execute("""
            INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, attempts, next_attempt_at, claimed_by, claimed_until)
            VALUES ('alice', 'klaviyo', 'contact', \(status), '{"email":"a@b.co"}', \(attempts),
                    now() + make_interval(secs => \(next)::double precision),
                    CASE WHEN \(claimedUntil)::int IS NOT NULL THEN 'dead-worker' END,
                    now() + make_interval(secs => \(claimedUntil)::double precision))
            RETURNING id
            """).first
        return try XCTUnwrap(row?.int64("id"))
    }

    func testArrayLiteralsRoundTripThroughPostgreSQL() throws {
        // The batch statements bind whole columns as one text[] literal each: every value
        // must come back as it went in, whatever it contains.
        let values: [String?] = ["plain", nil, "", "NULL", #"{"email":"a@b.co","note":"say \"hi\" \\ bye"}"#, "a,b}{c", "Tél 東京 🎉",
                                 " spaced ", "back\\slash\"", "line\nbreak\ttab"]
        XCTAssertEqual(DeliveryStore.arrayLiteral([]), "{}")
        XCTAssertEqual(DeliveryStore.arrayLiteral([nil, "x\"y"]), #"{NULL,"x\"y"}"#)
        let c = try ScratchDatabase.create(for: self).connect()
        let rows = try c.execute("SELECT v, v IS NULL AS missing FROM unnest(\(DeliveryStore.arrayLiteral(values))::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n").rows
        XCTAssertEqual(rows.map { $0.string("v") }, values)
        XCTAssertEqual(rows.map { $0.bool("missing") }, values.map { $0 == nil })
    }

    func testArrayLiteralsMatchAPlainEscapingOfRandomValues() {
        func reference(_ values: [String?]) -> String {
            "{" + values.map { v in v.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" } ?? "NULL" }
                .joined(separator: ",") + "}"
        }
        let alphabet: [Character] = ["a", "\"", "\\", "{", "}", ",", " ", "é", "東", "🎉", "\n", "N"]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let values: [String?] = (0..<Int.random(in: 0...6, using: &generator)).map { _ in
                Bool.random(using: &generator) && Int.random(in: 0...4, using: &generator) == 0 ? nil
                    : String((0..<Int.random(in: 0...40, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
            }
            XCTAssertEqual(DeliveryStore.arrayLiteral(values), reference(values), "\(values)")
        }
        // The worst case fills all the room the literal is written into: every byte escaped.
        let worst: [String?] = [String(repeating: "\"\\", count: 700), "\"", nil, "\\"]
        XCTAssertEqual(DeliveryStore.arrayLiteral(worst), reference(worst))
    }

    func testClaimTakesExpiredClaimsFirstThenDueRowsOldestFirstUpToTheLimit() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)

        // Never claimed: finished rows (even with a past next_attempt_at), legacy pending rows,
        // live claims, and queued/retrying rows not yet due (or without a time).
        var untouched: [Int64] = []
        for status in ["success", "failed", "cancelled", "pending"] { untouched.append(try insert(c, status, next: -600)) }
        untouched.append(try insert(c, "in_flight", next: nil, claimedUntil: 600))
        untouched.append(try insert(c, "in_flight", next: -900, claimedUntil: 60))
        untouched.append(try insert(c, "queued", next: 3600))
        untouched.append(try insert(c, "retrying", next: 60, attempts: 2))
        untouched.append(try insert(c, "queued", next: nil))

        // Due, in the order they are to be claimed: expired claims by claimed_until (even when
        // their next_attempt_at is later than every queued row's), then by next_attempt_at, id.
        let q2 = try insert(c, "queued", next: -60)
        let e2 = try insert(c, "in_flight", next: -30, claimedUntil: -60, attempts: 1)
        let q1 = try insert(c, "queued", next: -300)
        let q3 = try insert(c, "queued", next: -120)
        let e1 = try insert(c, "in_flight", next: nil, claimedUntil: -600)
        let r1 = try insert(c, "retrying", next: -180, attempts: 3)
        // Due at the same moment as q2: the lower id (q2) first.
        let q4 = try insert(c, "queued", next: 0)
        try c.execute("UPDATE crm.crm_sync_logs SET next_attempt_at = (SELECT next_attempt_at FROM crm.crm_sync_logs WHERE id = \(q2)) WHERE id = \(q4)")

        func claim(_ limit: Int) throws -> Set<Int64> {
            let claimed = try store.claimDue(worker: "w1", limit: limit, claimSeconds: 300)
            XCTAssertLessThanOrEqual(claimed.count, limit)
            return Set(claimed.map(\.id))
        }
        XCTAssertEqual(try claim(1), [e1], "the longest-expired claim first")
        XCTAssertEqual(try claim(3), [e2, q1, r1], "then the other expired claim, then due rows by next_attempt_at")
        XCTAssertEqual(try claim(1), [q3])
        XCTAssertEqual(try claim(1), [q2], "equal next_attempt_at: by id")
        XCTAssertEqual(try claim(5), [q4])
        XCTAssertEqual(try claim(10), [], "nothing else is due")

        let claimedRows = try c.strings("""
            SELECT id || ' ' || status || ' ' || claimed_by || ' ' || (claimed_until > now() + interval '250 seconds') AS k
              FROM crm.crm_sync_logs WHERE id = ANY(\("{\([e1, e2, q1, q2, q3, q4, r1].map(String.init).joined(separator: ","))}")::bigint[])
             ORDER BY id
            """, "k")
        XCTAssertEqual(claimedRows, [e1, e2, q1, q2, q3, q4, r1].sorted().map { "\($0) in_flight w1 true" })
        XCTAssertEqual(try c.strings("""
            SELECT status || ' ' || COALESCE(claimed_by, '-') AS k FROM crm.crm_sync_logs
             WHERE id = ANY(\("{\(untouched.map(String.init).joined(separator: ","))}")::bigint[]) ORDER BY id
            """, "k"), ["success -", "failed -", "cancelled -", "pending -", "in_flight dead-worker", "in_flight dead-worker",
                        "queued -", "retrying -", "queued -"])
    }

    func testRowsClaimedAheadAndNotStartedAreGivenBackAsTheyWere() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let queued = try insert(c, "queued", next: -60)
        let retrying = try insert(c, "retrying", next: -50, attempts: 2)
        let started = try insert(c, "queued", next: -40)
        let others = try insert(c, "queued", next: -30)
        XCTAssertEqual(Set(try store.claimDue(worker: "w1", limit: 3, claimSeconds: 300).map(\.id)), [queued, retrying, started])
        XCTAssertEqual(try store.claimDue(worker: "w2", limit: 1, claimSeconds: 300).map(\.id), [others])

        // Only the rows named, only while this worker holds them.
        XCTAssertEqual(try store.releaseClaims(ids: [queued, retrying, others], neverSent: [queued], worker: "w1"), 2)
        XCTAssertEqual(try store.releaseClaims(ids: [], neverSent: [], worker: "w1"), 0)
        func state(_ id: Int64) throws -> [String?] {
            let row = try XCTUnwrap(c.execute("SELECT status, claimed_by, next_attempt_at <= now() AS due FROM crm.crm_sync_logs WHERE id = \(id)").first)
            return [row.string("status"), row.string("claimed_by"), row.string("due")]
        }
        XCTAssertEqual(try state(queued), ["queued", nil, "t"])
        XCTAssertEqual(try state(retrying), ["retrying", nil, "t"], "attempted before: retrying")
        XCTAssertEqual(try c.execute("SELECT attempts FROM crm.crm_sync_logs WHERE id = \(retrying)").first?.int("attempts"), 2)
        XCTAssertEqual(try state(started)[0...1], ["in_flight", "w1"])
        XCTAssertEqual(try state(others)[0...1], ["in_flight", "w2"])
        // Given back, they are due again at once.
        XCTAssertEqual(Set(try store.claimDue(worker: "w3", limit: 5, claimSeconds: 300).map(\.id)), [queued, retrying])
    }

    func testRowsHeldAheadAreReadAgainWithTheIntegrationAsItIsNow() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        func connect(_ apiKey: String) throws {
            try c.execute("""
                INSERT INTO crm.crm_integrations (user_id, crm_type, credentials) VALUES ('alice', 'klaviyo', pgp_sym_encrypt(\(#"{"api_key":""# + apiKey + #""}"#), \(ScratchDatabase.key)))
                ON CONFLICT (user_id, crm_type) DO UPDATE SET credentials = EXCLUDED.credentials, updated_at = clock_timestamp()
                """)
        }
        func apiKey(_ log: ClaimedLog) throws -> String? {
            guard let target = try log.target.get() else { return nil }
            guard case let .klaviyo(key) = target.credentials else { XCTFail("\(target.credentials)"); return nil }
            return key.revealed
        }
        try connect("pk_old")
        let first = try insert(c, "queued", next: -60)
        let second = try insert(c, "retrying", next: -30, attempts: 1)
        let taken = try insert(c, "queued", next: -10)
        let claimed = try store.claimDue(worker: "w1", limit: 3, claimSeconds: 5)
        XCTAssertEqual(try claimed.map(apiKey), ["pk_old", "pk_old", "pk_old"])
        let oldStoredAt = try XCTUnwrap(try claimed[0].target.get()?.credentialsStoredAt)
        // Another worker took one over (its claim had expired) while it waited.
        try c.execute("UPDATE crm.crm_sync_logs SET claimed_by = 'w2' WHERE id = \(taken)")

        // The user connected again meanwhile: the rows still ours come back with the new key,
        // in the order asked, and their claims now run from this moment.
        try connect("pk_new")
        let refreshed = try store.refreshClaims(ids: [second, taken, first], worker: "w1", claimSeconds: 600)
        XCTAssertEqual(refreshed.map(\.id), [second, first])
        XCTAssertEqual(try refreshed.map(apiKey), ["pk_new", "pk_new"])
        XCTAssertNotEqual(try refreshed[0].target.get()?.credentialsStoredAt, oldStoredAt)
        XCTAssertEqual(refreshed.map(\.attempts), [1, 0])
        XCTAssertEqual(refreshed[0].request, ["email": "a@b.co"])
        XCTAssertEqual(try c.strings("""
            SELECT status || ' ' || claimed_by || ' ' || (claimed_until > now() + interval '500 seconds') AS k
              FROM crm.crm_sync_logs ORDER BY id
            """, "k"), ["in_flight w1 true", "in_flight w1 true", "in_flight w2 false"])

        // Disconnected meanwhile: cancelled, as the disconnect cancelled the rows waiting for a
        // retry, and left out. Disconnected and connected anew: the same (the new integration
        // is another one).
        let state = { (id: Int64) in try c.scalar("SELECT concat_ws(' ', status, error, claimed_by, CASE WHEN next_attempt_at IS NULL THEN 'not due' END) FROM crm.crm_sync_logs WHERE id = \(id)") }
        try c.execute("DELETE FROM crm.crm_integrations WHERE user_id = 'alice'")
        XCTAssertEqual(try store.refreshClaims(ids: [first], worker: "w1", claimSeconds: 600).count, 0)
        XCTAssertEqual(try state(first), "cancelled integration disconnected not due")
        try connect("pk_newest")
        let next = try insert(c, "queued", next: -5)
        XCTAssertEqual(try store.claimDue(worker: "w1", limit: 1, claimSeconds: 5).map(\.id), [next])
        XCTAssertEqual(try store.refreshClaims(ids: [next], worker: "w1", claimSeconds: 600).map(apiKey), ["pk_newest"])
        try c.execute("DELETE FROM crm.crm_integrations WHERE user_id = 'alice'")
        try connect("pk_other_account")
        XCTAssertEqual(try store.refreshClaims(ids: [next, second], worker: "w1", claimSeconds: 600).count, 0,
                       "rows claimed before the new integration existed are not sent to it")
        XCTAssertEqual(try state(next), "cancelled integration disconnected not due")
        XCTAssertEqual(try state(second), "cancelled integration disconnected not due")
        XCTAssertEqual(try state(taken), "in_flight w2", "another worker's row is left alone")
        XCTAssertEqual(try store.refreshClaims(ids: [], worker: "w1", claimSeconds: 600).count, 0)
    }

    /// Only a row claimed from the async queue, never attempted, is known never to have reached
    /// a CRM: connectors then skip looking for its event there.
    func testOnlyAQueuedRowNeverAttemptedIsClaimedAsNeverSent() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let queued = try insert(c, "queued", next: -60)
        let retrying = try insert(c, "retrying", next: -60, attempts: 1)
        // Given back by a worker that restarted under the same identity: it may have called.
        let released = try insert(c, "retrying", next: -60)
        // Taken over from a worker that stopped answering mid-call.
        let expired = try insert(c, "in_flight", next: nil, claimedUntil: -60)
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let claimed = try store.claimDue(worker: "w1", limit: 10, claimSeconds: 60)
        XCTAssertEqual(Set(claimed.map(\.id)), [queued, retrying, released, expired])
        XCTAssertEqual(Set(claimed.filter(\.neverSent).map(\.id)), [queued])
        // Given back unstarted (claimed ahead), it is queued again, and still never sent; the
        // claim taken over is not, though no attempt of it was recorded.
        XCTAssertEqual(try store.releaseClaims(ids: [queued, expired], neverSent: [queued], worker: "w1"), 2)
        try c.execute("UPDATE crm.crm_sync_logs SET next_attempt_at = now() - interval '1 second' WHERE id IN (\(queued), \(expired))")
        XCTAssertEqual(Set(try store.claimDue(worker: "w1", limit: 10, claimSeconds: 60).map { [$0.id: $0.neverSent] }),
                       [[queued: true], [expired: false]])
    }

    func testRateLimitedAttemptsAreCountedApartAndAHeldBackRowKeepsItsAttempts() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try c.execute("INSERT INTO crm.crm_integrations (user_id, crm_type, credentials, settings) VALUES ('alice', 'klaviyo', '\\x00', '{}')")
        let retried = try insert(c, "retrying", next: -60, attempts: 1)
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let refused = AttemptRecord(status: "retrying", httpStatus: 429, error: "throttled", durationMS: 3, crmRecordID: nil, response: nil,
                                    nextAttemptInSeconds: 0, authFailure: false, rateLimitedForSeconds: 5)
        let failed = AttemptRecord(status: "retrying", httpStatus: 503, error: "down", durationMS: 3, crmRecordID: nil, response: nil,
                                   nextAttemptInSeconds: 0, authFailure: false)
        // Written alone (the plain statement), then in a batch, then not rate-limited.
        for records in [[refused], [refused, refused], [failed, failed]] {
            try c.execute("UPDATE crm.crm_sync_logs SET next_attempt_at = now() - interval '1 second' WHERE id = \(retried)")
            let claimed = try store.claimDue(worker: "w1", limit: 10, claimSeconds: 60).filter { $0.id == retried }
            XCTAssertEqual(claimed.count, 1)
            var outcomes = [DeliveryStore.Outcome(records[0], logID: retried, user: UserID("alice")!, type: .klaviyo)]
            if records.count > 1 {
                let other = try insert(c, "in_flight", next: nil)
                try c.execute("UPDATE crm.crm_sync_logs SET claimed_by = 'w1', claimed_until = now() + interval '1 minute' WHERE id = \(other)")
                outcomes.append(DeliveryStore.Outcome(records[1], logID: other, user: UserID("alice")!, type: .klaviyo))
            }
            XCTAssertEqual(Set(try store.record(outcomes, worker: "w1")), [.written])
        }
        try c.execute("UPDATE crm.crm_sync_logs SET next_attempt_at = now() - interval '1 second' WHERE id = \(retried)")
        let log = try XCTUnwrap(try store.claimDue(worker: "w1", limit: 10, claimSeconds: 60).first { $0.id == retried })
        XCTAssertEqual([log.attempts, log.rateLimitedAttempts], [4, 2], "1 before, 2 refused for the rate limit, 1 failed")

        // Held back without a call: due later, attempts as they were; a row never sent is queued again.
        XCTAssertTrue(try store.holdBack(id: retried, worker: "w1", seconds: 30, neverSent: false, reason: "klaviyo is rate-limiting"))
        let queued = try insert(c, "queued", next: -60)
        let queuedLog = try XCTUnwrap(try store.claimDue(worker: "w1", limit: 10, claimSeconds: 60).first { $0.id == queued })
        XCTAssertTrue(queuedLog.neverSent)
        XCTAssertTrue(try store.holdBack(id: queued, worker: "w1", seconds: 5, neverSent: true, reason: "klaviyo is rate-limiting"))
        XCTAssertFalse(try store.holdBack(id: queued, worker: "w1", seconds: 5, neverSent: true, reason: "klaviyo is rate-limiting"), "no longer in flight: untouched")
        let rows = try c.execute("""
            SELECT id, status, attempts, rate_limited_attempts, error, claimed_by, round(extract(epoch FROM next_attempt_at - now())) AS next_in
              FROM crm.crm_sync_logs WHERE id IN (\(retried), \(queued)) ORDER BY id
            """).rows
        XCTAssertEqual(rows.map { [$0.string("status"), $0.string("attempts"), $0.string("rate_limited_attempts"), $0.string("error"), $0.string("claimed_by")] },
                       [["retrying", "4", "2", "held back: klaviyo is rate-limiting", nil], ["queued", "0", "0", "held back: klaviyo is rate-limiting", nil]])
        XCTAssertEqual(rows.map { Double($0.string("next_in") ?? "") ?? -1 }, [30, 5], accuracy: 2)
    }

    /// Rows put off for an integration's rate limit come sooner, in order, when its pace has
    /// become faster; no other row moves (an ordinary retry keeps its backoff).
    func testHeldBackRowsOfOneIntegrationArePulledForward() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let claimed = try insert(c, "in_flight", next: nil)
        try c.execute("UPDATE crm.crm_sync_logs SET claimed_by = 'w1', claimed_until = now() + interval '1 minute' WHERE id = \(claimed)")
        XCTAssertTrue(try store.holdBack(id: claimed, worker: "w1", seconds: 100, neverSent: true, reason: "klaviyo is rate-limiting"))
        let later = try insert(c, "retrying", next: 60)
        let retry = try insert(c, "retrying", next: 100)
        let bobs = try insert(c, "queued", next: 100)
        let due = try insert(c, "queued", next: -5)
        try c.execute("UPDATE crm.crm_sync_logs SET error = 'held back: klaviyo is rate-limiting' WHERE id IN (\(later), \(bobs), \(due))")
        try c.execute("UPDATE crm.crm_sync_logs SET error = 'klaviyo answered HTTP 503' WHERE id = \(retry)")
        try c.execute("UPDATE crm.crm_sync_logs SET user_id = 'bob' WHERE id = \(bobs)")

        XCTAssertEqual(try store.pullForward(user: UserID("alice")!, type: .klaviyo, factor: 0.5), 2)
        let rows = try c.execute("""
            SELECT round(extract(epoch FROM next_attempt_at - now())) AS next_in FROM crm.crm_sync_logs ORDER BY id
            """).rows
        XCTAssertEqual(rows.map { Double($0.string("next_in") ?? "") ?? -1 }, [50, 30, 100, 100, -5], accuracy: 2)
        XCTAssertEqual(try store.pullForward(user: UserID("alice")!, type: .hubspot, factor: 0.5), 0)
    }

    /// A refusal for the rate limit is written to the integration (`rate_limited_until`, by
    /// both outcome statements, never shortened), and every statement that reads credentials
    /// for a delivery reads the wait that is left, so that other worker processes hold back.
    func testARateLimitWaitIsSharedThroughTheIntegration() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try connectAliceAndBob(c)
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        func waits(_ rows: [[CreatedLog]]) throws -> [Double?] { try rows.flatMap { $0 }.map { try $0.target?.get()?.rateLimitedForSeconds } }
        func outcome(_ log: CreatedLog, _ user: String, wait: Double?) throws -> DeliveryStore.Outcome {
            DeliveryStore.Outcome(AttemptRecord(status: "retrying", httpStatus: wait == nil ? 503 : 429, error: "not now", durationMS: 1, crmRecordID: nil,
                                                response: nil, nextAttemptInSeconds: 60, authFailure: false, rateLimitedForSeconds: wait),
                                  logID: log.id, user: UserID(user)!, type: .klaviyo, credentialsStoredAt: try log.target?.get()?.credentialsStoredAt)
        }
        let first = try store.createLogs([contactRequest("alice")], worker: "w1", claimSeconds: 60)
        XCTAssertEqual(try waits(first), [nil], "never refused")
        // Refused alone (the plain statement): 30 s.
        XCTAssertEqual(try store.record([try outcome(first[0][0], "alice", wait: 30)], worker: "w1"), [.written])
        // Two more in a batch: bob's 20 s; alice's 10 s and a 503 change nothing of her 30.
        let more = try store.createLogs([contactRequest("alice"), contactRequest("bob"), contactRequest("alice")], worker: "w1", claimSeconds: 60)
        XCTAssertEqual(try waits(more).map { $0.map { $0.rounded() } }, [30, nil, 30])
        XCTAssertEqual(try store.record([try outcome(more[0][0], "alice", wait: 10), try outcome(more[1][0], "bob", wait: 20),
                                         try outcome(more[2][0], "alice", wait: nil)], worker: "w1"), [.written, .written, .written])
        XCTAssertEqual(try c.strings("""
            SELECT round(extract(epoch FROM rate_limited_until - now())) AS left FROM crm.crm_integrations ORDER BY user_id
            """, "left").compactMap(Double.init), [30, 20], accuracy: 2)
        let refusals = try c.execute("SELECT id, rate_limited_attempts FROM crm.crm_sync_logs").rows
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: refusals.map { ($0.int64("id") ?? 0, $0.string("rate_limited_attempts") ?? "") }),
                       [first[0][0].id: "1", more[0][0].id: "1", more[1][0].id: "1", more[2][0].id: "0"])

        // Read by the single and the batch log statements, the claim, the refresh of a claim and a manual retry.
        XCTAssertEqual(try waits(store.createLogs([contactRequest("bob")], worker: "w1", claimSeconds: 60)).map { $0 ?? 0 }, [20], accuracy: 2)
        XCTAssertEqual(try waits(store.createLogs([contactRequest("bob"), contactRequest("alice")], worker: "w1", claimSeconds: 60)).map { $0 ?? 0 }, [20, 30],
                       accuracy: 2)
        XCTAssertEqual(try waits(store.createLogs([contactRequest("bob", queued: true)], worker: "w1", claimSeconds: 60)), [nil], "queued: nothing read")
        try c.execute("UPDATE crm.crm_sync_logs SET next_attempt_at = now() - interval '1 second' WHERE status IN ('queued', 'retrying')")
        let claimed = try store.claimDue(worker: "w2", limit: 10, claimSeconds: 60)
        XCTAssertEqual(claimed.count, 5)
        XCTAssertEqual(try claimed.map { try $0.target.get()?.rateLimitedForSeconds ?? 0 }.sorted(), [20, 20, 30, 30, 30], accuracy: 2)
        let refreshed = try store.refreshClaims(ids: claimed.map(\.id), worker: "w2", claimSeconds: 60)
        XCTAssertEqual(try refreshed.map { try $0.target.get()?.rateLimitedForSeconds ?? 0 }.sorted(), [20, 20, 30, 30, 30], accuracy: 2)
        try c.execute("UPDATE crm.crm_sync_logs SET status = 'failed', claimed_by = NULL WHERE id = \(claimed[0].id)")
        let retried = try XCTUnwrap(try store.claimFailed(user: claimed[0].user, id: claimed[0].id, worker: "w2", claimSeconds: 60))
        XCTAssertNotNil(try retried.target.get()?.rateLimitedForSeconds)

        // Connecting again clears the wait (new credentials may be another account's), and a
        // refusal of a call made with the credentials it replaced leaves it clear.
        let sent = try store.createLogs([contactRequest("alice"), contactRequest("alice"), contactRequest("bob")], worker: "w1", claimSeconds: 60)
        _ = try IntegrationStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
            .save(user: UserID("alice")!, credentials: .klaviyo(apiKey: Secret("pk_alice_2")), settings: .defaults)
        XCTAssertEqual(try store.record([try outcome(sent[0][0], "alice", wait: 40)], worker: "w1"), [.written])
        XCTAssertEqual(try store.record([try outcome(sent[1][0], "alice", wait: 40), try outcome(sent[2][0], "bob", wait: 40)], worker: "w1"),
                       [.written, .written])
        XCTAssertEqual(try c.strings("""
            SELECT coalesce(round(extract(epoch FROM rate_limited_until - now())), 0) AS left FROM crm.crm_integrations ORDER BY user_id
            """, "left").compactMap(Double.init), [0, 40], accuracy: 2)
        XCTAssertEqual(try waits(store.createLogs([contactRequest("alice")], worker: "w1", claimSeconds: 60)), [nil])

        // A wait that is over is no wait.
        try c.execute("UPDATE crm.crm_integrations SET rate_limited_until = now() - interval '1 second'")
        XCTAssertEqual(try waits(store.createLogs([contactRequest("bob"), contactRequest("alice")], worker: "w1", claimSeconds: 60)), [nil, nil])
    }

    func testClaimedRowsCarryWhatTheDeliveryNeeds() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let id = try insert(c, "retrying", next: -5, attempts: 2)
        try c.execute("UPDATE crm.crm_sync_logs SET operation = 'event', unique_id = 'u-1', created_at = now() - interval '90 seconds' WHERE id = \(id)")
        try c.execute("""
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials, settings)
            VALUES ('alice', 'klaviyo', pgp_sym_encrypt('{"api_key":"pk_alice"}', \(ScratchDatabase.key)), '{"sync_contacts": false}')
            """)
        let claimed = try DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key).claimDue(worker: "w1", limit: 5, claimSeconds: 60)
        let log = try XCTUnwrap(claimed.first)
        XCTAssertEqual(claimed.count, 1)
        // The integration's credentials and settings come with the claim, decrypted.
        let target = try XCTUnwrap(try log.target.get())
        guard case let .klaviyo(apiKey) = target.credentials else { return XCTFail("\(target.credentials)") }
        XCTAssertEqual(apiKey.revealed, "pk_alice")
        XCTAssertFalse(target.settings.syncContacts)
        XCTAssertEqual(log.id, id)
        XCTAssertEqual(log.user.value, "alice")
        XCTAssertEqual(log.crmType, .klaviyo)
        XCTAssertEqual(log.operation, "event")
        XCTAssertEqual(log.request, ["email": "a@b.co"])
        XCTAssertEqual(log.uniqueID, "u-1")
        XCTAssertEqual(log.attempts, 2)
        XCTAssertEqual(log.ageSeconds, 90, accuracy: 5)
    }

    func testConcurrentWorkersClaimEveryDueRowExactlyOnce() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try c.execute("""
            INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, next_attempt_at, claimed_by, claimed_until)
            SELECT 'alice', 'klaviyo', 'contact', s, '{}', now() - g * interval '1 second',
                   CASE WHEN s = 'in_flight' THEN 'dead-worker' END, CASE WHEN s = 'in_flight' THEN now() - interval '1 minute' END
              FROM generate_series(1, 300) g, LATERAL (SELECT (ARRAY['queued', 'retrying', 'queued', 'in_flight', 'success'])[1 + g % 5] AS s) x
            """)
        let due = Set(try c.strings("SELECT id FROM crm.crm_sync_logs WHERE status <> 'success'", "id").compactMap(Int64.init))
        XCTAssertEqual(due.count, 240)

        let store = DeliveryStore(pool: db.pool(size: 6), encryptionKey: ScratchDatabase.key)
        let claims = Mutex<[Int64]>([]), problems = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { worker in
            var empty = 0
            while empty < 3 {
                do {
                    let got = try store.claimDue(worker: "w\(worker)", limit: 7, claimSeconds: 300)
                    if got.count > 7 { problems.withLock { $0.append("\(got.count) rows for a limit of 7") } }
                    claims.withLock { $0.append(contentsOf: got.map(\.id)) }
                    empty = got.isEmpty ? empty + 1 : 0
                } catch {
                    problems.withLock { $0.append("\(error)") }
                    return
                }
            }
        }
        XCTAssertEqual(problems.withLock { $0 }, [])
        let all = claims.withLock { $0 }
        XCTAssertEqual(all.count, due.count, "no row claimed twice")
        XCTAssertEqual(Set(all), due)
        XCTAssertEqual(try c.scalar("SELECT count(*) FROM crm.crm_sync_logs WHERE status = 'in_flight' AND claimed_by LIKE 'w%'"), "240")
        XCTAssertEqual(try store.backlog(), 240)
    }

    /// The claim reads both partial indexes in order under a LIMIT and sorts nothing, with a
    /// custom plan and with the generic one a prepared statement may switch to. The table
    /// holds enough rows (and statistics) that the planner's choice is not a coin toss.
    func testClaimIsATopNScanOfThePartialIndexes() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try c.execute("""
            INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, next_attempt_at, claimed_by, claimed_until)
            SELECT 'u' || g % 100, 'klaviyo', 'contact',
                   CASE WHEN g <= 2000 THEN (ARRAY['queued', 'retrying'])[1 + g % 2]
                        WHEN g <= 2020 THEN 'in_flight'
                        ELSE (ARRAY['success', 'failed', 'cancelled'])[1 + g % 3] END,
                   jsonb_build_object('email', 'u' || g || '@example.com'),
                   CASE WHEN g <= 2000 THEN now() - interval '1 hour' + g * interval '3 seconds' END,
                   CASE WHEN g > 2000 AND g <= 2020 THEN 'w' END,
                   CASE WHEN g > 2000 AND g <= 2020 THEN now() + (g - 2010) * interval '1 minute' END
              FROM generate_series(1, 7000) g
            """)
        // The claim reads each claimed row's integration: as many as the bench seeds.
        try c.execute("""
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials)
            SELECT 'u' || g, t, '\\x00' FROM generate_series(0, 9999) g, unnest(ARRAY['klaviyo', 'hubspot', 'salesforce']) t
            """)
        try c.execute("ANALYZE crm.crm_sync_logs")
        try c.execute("ANALYZE crm.crm_integrations")
        let claim = DeliveryStore.claimSQL(worker: "w", limit: 16, claimSeconds: 60, key: ScratchDatabase.key)
        for mode in ["force_custom_plan", "force_generic_plan"] {
            try c.execute(SQL(stringLiteral: "SET plan_cache_mode = \(mode)"))
            let plan = try ExplainedPlan.of(claim, named: "claim_\(mode)", on: c)
            let all = ExplainedPlan.nodes(plan)
            XCTAssertTrue(all.contains("ModifyTable on crm_sync_logs"), "\(mode): \(all)")
            let ctes = Dictionary(ExplainedPlan.subplans(plan), uniquingKeysWith: { first, _ in first })
            XCTAssertEqual(ctes["CTE expired"], ["Limit", "LockRows", "Index Scan on crm_sync_logs_claims_idx"], "\(mode): \(all)")
            XCTAssertEqual(ctes["CTE due"], ["Limit", "LockRows", "Index Scan on crm_sync_logs_queue_idx"], "\(mode): \(all)")
            XCTAssertFalse(all.contains { $0.contains("Sort") || $0.hasPrefix("Seq Scan") || $0.hasPrefix("Bitmap") }, "\(mode): \(all)")
        }
    }

    // MARK: - Writing log rows (group commit)

    func testOneStatementWritesTheLogRowsOfManyRequestsEachToItsOwn() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        // alice: klaviyo + hubspot (hubspot takes no events); bob: salesforce; carol: an inactive one only.
        try c.execute("""
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials, settings, is_active) VALUES
              ('alice', 'klaviyo', '\\x00', '{}', true), ('alice', 'hubspot', '\\x00', '{"sync_events": false}', true),
              ('bob', 'salesforce', '\\x00', '{}', true), ('carol', 'klaviyo', '\\x00', '{}', false)
            """)
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let alice = UserID("alice")!, bob = UserID("bob")!, carol = UserID("carol")!
        let contact = JSON.object([("email", "a@b.co"), ("note", "quote \" and backslash \\ and , { }")])
        let requests = [
            LogRequest(user: alice, operation: "contact", types: nil, request: contact, uniqueID: nil, queued: true),
            LogRequest(user: alice, operation: "event", types: nil, request: .object([("event", "E")]), uniqueID: nil, queued: false),
            LogRequest(user: bob, operation: "event", types: [.salesforce], request: .object([("event", "F")]), uniqueID: "given-1", queued: true),
            LogRequest(user: carol, operation: "contact", types: nil, request: contact, uniqueID: nil, queued: true),
            LogRequest(user: alice, operation: "contact", types: [.hubspot, .salesforce], request: contact, uniqueID: nil, queued: false),
        ]
        let created = try store.createLogs(requests, worker: "w1", claimSeconds: 60)
        XCTAssertEqual(created.map { $0.map(\.crmType) }, [[.hubspot, .klaviyo], [.klaviyo], [.salesforce], [], [.hubspot]])
        // A derived unique id names its own row; a given one is kept; contacts have none.
        XCTAssertEqual(created[1][0].uniqueID, "crm-log-\(created[1][0].id)")
        XCTAssertEqual(created[2][0].uniqueID, "given-1")
        XCTAssertNil(created[0][0].uniqueID)
        XCTAssertEqual(Set(created.flatMap { $0 }.map(\.id)).count, 5, "every row its own id")
        // Rows delivered now come with their credentials, queued ones without. These cannot be
        // decrypted ('\\x00'): each such row says so, and the others' statement still succeeds.
        for (index, rows) in created.enumerated() {
            for row in rows {
                if requests[index].queued {
                    XCTAssertNil(row.target)
                } else if case let .failure(error)? = row.target {
                    XCTAssertTrue(error.message.contains("not readable"), error.message)
                } else {
                    XCTFail("\(row.crmType): \(String(describing: row.target))")
                }
            }
        }

        for (index, rows) in created.enumerated() {
            for row in rows {
                let stored = try XCTUnwrap(c.execute("""
                    SELECT user_id, operation, status, request::text AS request, claimed_by,
                           next_attempt_at IS NOT NULL AS due, claimed_until > now() AS claimed
                      FROM crm.crm_sync_logs WHERE id = \(row.id)
                    """).first)
                let request = requests[index]
                XCTAssertEqual(stored.string("user_id"), request.user.value)
                XCTAssertEqual(stored.string("operation"), request.operation)
                XCTAssertEqual(try JSONParser.parse(XCTUnwrap(stored.string("request"))), request.request)
                XCTAssertEqual(stored.string("status"), request.queued ? "queued" : "in_flight")
                XCTAssertEqual(stored.bool("due"), request.queued)
                XCTAssertEqual(stored.string("claimed_by"), request.queued ? nil : "w1")
                XCTAssertEqual(stored.bool("claimed"), request.queued ? nil : true)
            }
        }
        XCTAssertEqual(try c.scalar("SELECT count(*) FROM crm.crm_sync_logs"), "5")
    }

    /// A row delivered now is written with its integration's decrypted credentials, by the
    /// one-request statement and by the batch alike; under another key they are reported as
    /// unreadable, and the row is written all the same.
    func testLogRowsDeliveredNowComeWithTheirCredentials() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try connectAliceAndBob(c)
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        func apiKey(_ row: CreatedLog?) throws -> String? {
            guard case let .klaviyo(key)? = try row?.target?.get()?.credentials else { return nil }
            return key.revealed
        }
        XCTAssertEqual(try apiKey(store.createLogs([contactRequest("alice")], worker: "w1", claimSeconds: 60)[0].first), "pk_alice")
        let batch = try store.createLogs([contactRequest("alice"), contactRequest("bob")], worker: "w1", claimSeconds: 60)
        XCTAssertEqual(try batch.map { try apiKey($0.first) }, ["pk_alice", "pk_bob"])

        let otherKey = DeliveryStore(pool: db.pool(), encryptionKey: Secret("fedcba9876543210fedcba9876543210"))
        for rows in [try otherKey.createLogs([contactRequest("alice")], worker: "w1", claimSeconds: 60),
                     try otherKey.createLogs([contactRequest("alice"), contactRequest("bob")], worker: "w1", claimSeconds: 60)] {
            for row in rows.flatMap({ $0 }) {
                guard case let .failure(error)? = row.target else { return XCTFail("\(String(describing: row.target))") }
                XCTAssertTrue(error.message.contains("not readable"), error.message)
            }
        }
        XCTAssertEqual(try c.scalar("SELECT count(*) FROM crm.crm_sync_logs"), "6")
    }

    func testOneStatementWritesManyOutcomesOnlyForRowsStillOurs() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        try c.execute("""
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials, settings) VALUES
              ('alice', 'klaviyo', '\\x00', '{}'), ('bob', 'hubspot', '\\x00', '{}'), ('carol', 'klaviyo', '\\x00', '{}'),
              ('dave', 'klaviyo', '\\x00', '{}')
            """)
        func claimed(_ user: String, _ type: String, by worker: String) throws -> Int64 {
            try XCTUnwrap(c.execute("""
                INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, claimed_by, claimed_until)
                VALUES (\(user), \(type), 'contact', 'in_flight', '{}', \(worker), now() + interval '1 minute') RETURNING id
                """).first?.int64("id"))
        }
        let ok = try claimed("alice", "klaviyo", by: "w1")
        let later = try claimed("bob", "hubspot", by: "w1")
        let taken = try claimed("carol", "klaviyo", by: "w2")   // another worker's claim meanwhile
        let stale = try claimed("dave", "klaviyo", by: "w1")
        let storedAt = { (user: String) in try c.scalar("SELECT updated_at FROM crm.crm_integrations WHERE user_id = \(user)") }
        let bobsCredentials = try storedAt("bob")
        // Dave connected new credentials while an attempt with the old ones was under way.
        let davesOldCredentials = try storedAt("dave")
        try c.execute("UPDATE crm.crm_integrations SET updated_at = updated_at + interval '1 second' WHERE user_id = 'dave'")
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        let written = try store.record([
            .init(AttemptRecord(status: "success", httpStatus: 200, error: nil, durationMS: 12, crmRecordID: "rec-1",
                                response: .object([("id", "rec-1"), ("note", "a \"quoted\" {value}")]), nextAttemptInSeconds: nil, authFailure: false),
                  logID: ok, user: UserID("alice")!, type: .klaviyo),
            .init(AttemptRecord(status: "retrying", httpStatus: 401, error: "token, expired", durationMS: 7, crmRecordID: nil,
                                response: nil, nextAttemptInSeconds: 30, authFailure: true),
                  logID: later, user: UserID("bob")!, type: .hubspot, credentialsStoredAt: bobsCredentials),
            .init(AttemptRecord(status: "success", httpStatus: 200, error: nil, durationMS: 5, crmRecordID: nil,
                                response: nil, nextAttemptInSeconds: nil, authFailure: false),
                  logID: taken, user: UserID("carol")!, type: .klaviyo),
            .init(AttemptRecord(status: "failed", httpStatus: 401, error: "invalid key", durationMS: 6, crmRecordID: nil,
                                response: nil, nextAttemptInSeconds: nil, authFailure: true),
                  logID: stale, user: UserID("dave")!, type: .klaviyo, credentialsStoredAt: davesOldCredentials),
        ], worker: "w1")
        XCTAssertEqual(written, [.written, .written, .notOurs, .written])

        let row = { (id: Int64) throws -> Row in try XCTUnwrap(c.execute("""
            SELECT status, http_status, error, duration_ms, crm_record_id, response::text AS response, attempts, claimed_by,
                   round(extract(epoch FROM next_attempt_at - now())) AS next_in FROM crm.crm_sync_logs WHERE id = \(id)
            """).first) }
        let first = try row(ok), second = try row(later), third = try row(taken)
        XCTAssertEqual([first.string("status"), first.string("http_status"), first.string("crm_record_id"), first.string("attempts")],
                       ["success", "200", "rec-1", "1"])
        XCTAssertEqual(try JSONParser.parse(XCTUnwrap(first.string("response"))), .object([("id", "rec-1"), ("note", "a \"quoted\" {value}")]))
        XCTAssertNil(first.string("claimed_by"))
        XCTAssertNil(first.string("next_in"))
        XCTAssertEqual([second.string("status"), second.string("error"), second.string("attempts")], ["retrying", "token, expired", "1"])
        XCTAssertEqual(Double(second.string("next_in") ?? "") ?? 0, 30, accuracy: 2)
        XCTAssertEqual([third.string("status"), third.string("claimed_by"), third.string("attempts")], ["in_flight", "w2", "0"], "not ours: untouched")

        let integration = { (user: String) throws -> [String?] in
            let r = try XCTUnwrap(c.execute("SELECT status, status_detail, last_sync_status FROM crm.crm_integrations WHERE user_id = \(user)").first)
            return [r.string("status"), r.string("status_detail"), r.string("last_sync_status")]
        }
        XCTAssertEqual(try integration("alice"), ["connected", nil, "success"])
        XCTAssertEqual(try integration("bob"), ["auth_error", "token, expired", "retrying"])
        XCTAssertEqual(try integration("carol"), ["connected", nil, nil], "its outcome was not written")
        XCTAssertEqual(try integration("dave"), ["connected", nil, "failed"], "its new credentials are not the ones that failed")

        // The statement for one outcome alone: the same rule.
        let again = try claimed("dave", "klaviyo", by: "w1")
        let failed = AttemptRecord(status: "failed", httpStatus: 401, error: "still invalid", durationMS: 6, crmRecordID: nil,
                                   response: nil, nextAttemptInSeconds: nil, authFailure: true)
        XCTAssertEqual(try store.record(failed, logID: again, user: UserID("dave")!, type: .klaviyo, credentialsStoredAt: davesOldCredentials, worker: "w1"), .written)
        XCTAssertEqual(try integration("dave"), ["connected", nil, "failed"])
        let last = try claimed("dave", "klaviyo", by: "w1")
        XCTAssertEqual(try store.record(failed, logID: last, user: UserID("dave")!, type: .klaviyo, credentialsStoredAt: try storedAt("dave"), worker: "w1"), .written)
        XCTAssertEqual(try integration("dave"), ["auth_error", "still invalid", "failed"])
    }

    func testARetryForAnIntegrationDisconnectedDuringTheCallIsCancelled() throws {
        let db = try ScratchDatabase.migrated(for: self)
        let c = try db.connect()
        let store = DeliveryStore(pool: db.pool(), encryptionKey: ScratchDatabase.key)
        func connect(_ user: String) throws -> String? {
            try c.scalar("""
                INSERT INTO crm.crm_integrations (user_id, crm_type, credentials) VALUES (\(user), 'klaviyo', '\\x00')
                ON CONFLICT (user_id, crm_type) DO UPDATE SET credentials = EXCLUDED.credentials, updated_at = clock_timestamp()
                RETURNING updated_at
                """)
        }
        func claimed(_ user: String) throws -> Int64 {
            try XCTUnwrap(c.execute("""
                INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, claimed_by, claimed_until)
                VALUES (\(user), 'klaviyo', 'contact', 'in_flight', '{}', 'w1', now() + interval '1 minute') RETURNING id
                """).first?.int64("id"))
        }
        func disconnect(_ user: String) throws { try c.execute("DELETE FROM crm.crm_integrations WHERE user_id = \(user)") }
        let transient = AttemptRecord(status: "retrying", httpStatus: 503, error: "unavailable", durationMS: 9, crmRecordID: nil,
                                      response: nil, nextAttemptInSeconds: 30, authFailure: false)
        let success = AttemptRecord(status: "success", httpStatus: 200, error: nil, durationMS: 9, crmRecordID: "rec-9",
                                    response: nil, nextAttemptInSeconds: nil, authFailure: false)
        // Per user, the integration the attempt's credentials came from and what happened to it during the call.
        let gone = try XCTUnwrap(try connect("gone"))           // disconnected
        let replaced = try XCTUnwrap(try connect("replaced"))   // disconnected, then connected anew
        let rekeyed = try XCTUnwrap(try connect("rekeyed"))     // connected again over it (new credentials): the same integration
        let done = try XCTUnwrap(try connect("done"))           // disconnected, but the call succeeded
        let rows = (gone: try claimed("gone"), replaced: try claimed("replaced"), rekeyed: try claimed("rekeyed"),
                    done: try claimed("done"), unread: try claimed("unread"))
        try disconnect("gone")
        try disconnect("replaced")
        _ = try connect("replaced")
        _ = try connect("rekeyed")
        try disconnect("done")
        let outcomes: [DeliveryStore.Outcome] = [
            .init(transient, logID: rows.gone, user: UserID("gone")!, type: .klaviyo, credentialsStoredAt: gone),
            .init(transient, logID: rows.replaced, user: UserID("replaced")!, type: .klaviyo, credentialsStoredAt: replaced),
            .init(transient, logID: rows.rekeyed, user: UserID("rekeyed")!, type: .klaviyo, credentialsStoredAt: rekeyed),
            .init(success, logID: rows.done, user: UserID("done")!, type: .klaviyo, credentialsStoredAt: done),
            // Credentials that could not be read (no integration to compare with): retried, as before.
            .init(transient, logID: rows.unread, user: UserID("unread")!, type: .klaviyo, credentialsStoredAt: nil),
        ]
        func state(_ id: Int64) throws -> [String?] {
            let r = try XCTUnwrap(c.execute("""
                SELECT status, error, http_status, attempts, claimed_by, next_attempt_at IS NOT NULL AS due FROM crm.crm_sync_logs WHERE id = \(id)
                """).first)
            return [r.string("status"), r.string("error"), r.string("http_status"), r.string("attempts"), r.string("claimed_by"), r.string("due")]
        }
        let expected: [[String?]] = [
            ["cancelled", "integration disconnected", "503", "1", nil, "f"],
            ["cancelled", "integration disconnected", "503", "1", nil, "f"],
            ["retrying", "unavailable", "503", "1", nil, "t"],
            ["success", nil, "200", "1", nil, "f"],
            ["retrying", "unavailable", "503", "1", nil, "t"],
        ]
        let ids = [rows.gone, rows.replaced, rows.rekeyed, rows.done, rows.unread]
        let recorded: [DeliveryStore.Recorded] = [.cancelled, .cancelled, .written, .written, .written]
        XCTAssertEqual(try store.record(outcomes, worker: "w1"), recorded)
        XCTAssertEqual(try ids.map(state), expected, "the batch statement")
        let lastSync = { (user: String) in try c.scalar("SELECT coalesce(last_sync_status, '-') FROM crm.crm_integrations WHERE user_id = \(user)") }
        XCTAssertEqual(try lastSync("replaced"), "-", "the new integration has not synced: the old one's attempt is not its")
        XCTAssertEqual(try lastSync("rekeyed"), "retrying")

        // The statement for one outcome alone: the same rule.
        try c.execute("""
            UPDATE crm.crm_sync_logs SET status = 'in_flight', claimed_by = 'w1', attempts = 0, error = NULL, http_status = NULL,
                   next_attempt_at = NULL, crm_record_id = NULL
            """)
        try c.execute("UPDATE crm.crm_integrations SET last_sync_status = NULL")
        XCTAssertEqual(try outcomes.map {
            try store.record($0.attempt, logID: $0.logID, user: $0.user, type: $0.type, credentialsStoredAt: $0.credentialsStoredAt, worker: "w1")
        }, recorded)
        // Recorded again, the rows are no longer in flight: nothing is written.
        XCTAssertEqual(try store.record(outcomes, worker: "w1"), Array(repeating: .notOurs, count: outcomes.count))
        XCTAssertEqual(try ids.map(state), expected, "the statement for one outcome")
        XCTAssertEqual(try lastSync("replaced"), "-")
        XCTAssertEqual(try lastSync("rekeyed"), "retrying")
    }
}

private func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
}

/// A contact sync request of `user`, delivered now unless `queued`.
private func contactRequest(_ user: String, queued: Bool = false) -> LogRequest {
    LogRequest(user: UserID(user)!, operation: "contact", types: nil, request: ["email": "a@b.co"], uniqueID: nil, queued: queued)
}
