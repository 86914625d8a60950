import CRMCore

/// A sync log row claimed for one delivery attempt.
public struct ClaimedLog: Sendable {
    public let id: Int64
    public let user: UserID
    public let crmType: CRMType
    public let operation: String
    public let request: JSON
    public let uniqueID: String?
    /// Attempts made before this one.
    public let attempts: Int
    /// Of `attempts`, those the CRM refused for its rate limit (they spend no retry budget).
    public var rateLimitedAttempts: Int = 0
    /// Seconds since the row was created (for the retry window).
    public let ageSeconds: Double
    /// The integration's credentials, read with the claim.
    public let target: TargetRead
    /// Claimed from the queue of async syncs (`queued`), where a row waits until its first
    /// attempt: no call can have carried it to a CRM yet. False for a retry, a claim taken over
    /// from a worker that stopped answering, and a manual retry.
    public var neverSent: Bool = false
}

/// An integration's credentials as read with a log row: the delivery's target, nil when the
/// integration is gone or inactive, or an error when they cannot be decrypted or read.
public typealias TargetRead = Result<DeliveryTarget?, DatabaseError>

/// An active integration with its decrypted credentials, for one delivery.
public struct DeliveryTarget: Sendable {
    public let crmType: CRMType
    public let credentials: Credentials
    public let settings: IntegrationSettings
    /// When these credentials were stored (`crm_integrations.updated_at`, as PostgreSQL wrote
    /// it): an authentication failure with them marks the integration only while they are
    /// still the stored ones, not new ones connected while the call was under way.
    public let credentialsStoredAt: String?
    /// Seconds left of the wait the CRM asked for when it last refused a call for this
    /// integration's rate limit, heard by any worker process (`rate_limited_until`); nil when
    /// there is none.
    public let rateLimitedForSeconds: Double?
}

/// What is written after an attempt.
public struct AttemptRecord: Sendable {
    public var status: String
    public var httpStatus: Int?
    public var error: String?
    public var durationMS: Int
    public var crmRecordID: String?
    public var response: JSON?
    /// Seconds from now until the next attempt (status `retrying`).
    public var nextAttemptInSeconds: Double?
    public var authFailure: Bool
    /// The CRM refused the call for the account's rate limit and asked to wait this many
    /// seconds: counted in `rate_limited_attempts` too, and every worker holds the integration
    /// back until then (`rate_limited_until`). Nil for any other outcome.
    public var rateLimitedForSeconds: Double?

    public init(status: String, httpStatus: Int?, error: String?, durationMS: Int, crmRecordID: String?, response: JSON?, nextAttemptInSeconds: Double?, authFailure: Bool,
                rateLimitedForSeconds: Double? = nil) {
        self.status = status
        self.httpStatus = httpStatus
        self.error = error
        self.durationMS = durationMS
        self.crmRecordID = crmRecordID
        self.response = response
        self.nextAttemptInSeconds = nextAttemptInSeconds
        self.authFailure = authFailure
        self.rateLimitedForSeconds = rateLimitedForSeconds
    }
}

/// One sync request's log rows to write: one per active integration of `user` that takes this
/// kind of sync (only `types`, when given).
public struct LogRequest: Sendable {
    public var user: UserID
    public var operation: String
    public var types: [CRMType]?
    public var request: JSON
    public var uniqueID: String?
    /// `queued` for the sweep, else `in_flight`, claimed by the caller.
    public var queued: Bool

    public init(user: UserID, operation: String, types: [CRMType]?, request: JSON, uniqueID: String?, queued: Bool) {
        self.user = user
        self.operation = operation
        self.types = types
        self.request = request
        self.uniqueID = uniqueID
        self.queued = queued
    }
}

/// A log row written for a `LogRequest`.
public struct CreatedLog: Sendable {
    public let crmType: CRMType
    public let id: Int64
    public let uniqueID: String?
    /// The integration's credentials, read with the row for a caller that delivers it now
    /// (nil for a queued row: the sweep reads them when it claims the row).
    public let target: TargetRead?

    public init(crmType: CRMType, id: Int64, uniqueID: String?, target: TargetRead? = nil) {
        self.crmType = crmType
        self.id = id
        self.uniqueID = uniqueID
        self.target = target
    }
}

/// The delivery queue: sync log rows written before a CRM is called, claimed with
/// `FOR UPDATE SKIP LOCKED` (safe across any number of workers), updated after each attempt.
public struct DeliveryStore: Sendable {
    let pool: Pool
    let key: Secret
    /// Whose work this is: the retry sweep uses `.background`, so requests get connections first.
    public var priority: Pool.Priority = .request

    public init(pool: Pool, encryptionKey: Secret) {
        self.pool = pool
        key = encryptionKey
    }

    /// The credentials columns a statement read with a log row (`connected`, `plain`: the
    /// decrypted credentials, `settings`) as the delivery's target.
    static func target(_ row: Row, type: CRMType) -> TargetRead {
        guard row.bool("connected") == true else { return .success(nil) }
        guard let plain = row.string("plain"), let json = try? JSONParser.parse(plain),
              case let .success(credentials) = Credentials.decode(json, for: type, at: []) else {
            return .failure(DatabaseError(.decoding, message: "the stored \(type.rawValue) credentials are not readable (was CRM_ENCRYPTION_KEY changed?)"))
        }
        return .success(DeliveryTarget(crmType: type, credentials: credentials, settings: row.withValue("settings") { IntegrationSettings.fromStored(utf8: $0, for: type) } ?? .defaults,
                                       credentialsStoredAt: row.string("credentials_at"),
                                       rateLimitedForSeconds: row.string("held_for").flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil }))
    }

    /// Writes the log rows of several sync requests in one statement and one commit (group
    /// commit: under load, concurrent requests share the commit instead of each waiting for its
    /// own). All or none. Event rows get the caller's unique id, else one derived from the row
    /// id. Returns each request's rows by type (empty when no integration takes it).
    public func createLogs(_ requests: [LogRequest], worker: String, claimSeconds: Double) throws -> [[CreatedLog]] {
        guard !requests.isEmpty else { return [] }
        // One request (no concurrency): the plain statement, cheaper than the batch form.
        if requests.count == 1 { return [try createLogs(requests[0], worker: worker, claimSeconds: claimSeconds)] }
        let textArray = Self.arrayLiteral
        let users = textArray(requests.map { $0.user.value })
        let operations = textArray(requests.map { $0.operation })
        let bodies = textArray(requests.map { $0.request.jsonString })
        let uniqueIDs = textArray(requests.map { $0.uniqueID })
        let types = textArray(requests.map { $0.types.map { $0.map(\.rawValue).joined(separator: ",") } })
        let queued = textArray(requests.map { $0.queued ? "t" : "f" })
        let sql = Self.createLogsStatement(users, operations, bodies, uniqueIDs, types, queued, key.revealed, worker, String(claimSeconds))
        var created = [[CreatedLog]](repeating: [], count: requests.count)
        for row in try pool.withConnection(priority: priority, { try $0.execute(sql) }).rows {
            guard let ord = row.int("ord"), (1...requests.count).contains(ord), let id = row.int64("id"),
                  let type = row.string("crm_type").flatMap(CRMType.init) else {
                throw DatabaseError(.decoding, message: "the log insert returned an unreadable row")
            }
            created[ord - 1].append(Self.created(row, id: id, type: type, queued: requests[ord - 1].queued))
        }
        return created
    }

    private static func created(_ row: Row, id: Int64, type: CRMType, queued: Bool) -> CreatedLog {
        CreatedLog(crmType: type, id: id, uniqueID: row.string("unique_id"), target: queued ? nil : target(row, type: type))
    }

    /// One request's log rows (see `createLogs(_:worker:claimSeconds:)`).
    func createLogs(_ request: LogRequest, worker: String, claimSeconds: Double) throws -> [CreatedLog] {
        let sql = Self.createLogSQL(request, worker: worker, claimSeconds: claimSeconds, key: key)
        let rows = try pool.withConnection(priority: priority) { try $0.execute(sql) }.rows
        return try rows.map { row throws(DatabaseError) in
            guard let id = row.int64("id"), let type = row.string("crm_type").flatMap(CRMType.init) else {
                throw DatabaseError(.decoding, message: "the log insert returned an unreadable row")
            }
            return Self.created(row, id: id, type: type, queued: request.queued)
        }.sorted { $0.crmType.rawValue < $1.crmType.rawValue }
    }

    /// The batch log statement: the ids are drawn first (in a materialised CTE) so that a derived
    /// unique id is written with its row, and so that every row can be mapped back to its
    /// request (`ord`). Its values: the requests' users, operations, bodies, unique ids, types
    /// and queued flags (one array each), the key, the worker and the claim's seconds.
    static let createLogsStatement = SQL.Fixed("""
        WITH t AS MATERIALIZED (
            SELECT nextval(pg_get_serial_sequence('crm.crm_sync_logs', 'id')) AS id, r.ord, i.crm_type, r.user_id, r.operation,
                   r.request, r.queued, CASE WHEN r.operation = 'event' THEN r.unique_id END AS unique_id,
                   CASE WHEN NOT r.queued THEN crm.decrypt_credentials(i.credentials, $7) END AS plain,
                   CASE WHEN NOT r.queued THEN i.settings END AS settings,
                   CASE WHEN NOT r.queued THEN i.updated_at END AS credentials_at,
                   CASE WHEN NOT r.queued THEN EXTRACT(EPOCH FROM i.rate_limited_until - now()) END AS held_for
              FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::boolean[])
                   WITH ORDINALITY AS r(user_id, operation, request, unique_id, types, queued, ord)
              JOIN crm.crm_integrations i
                ON i.user_id = r.user_id AND i.is_active
               AND COALESCE((i.settings ->> CASE WHEN r.operation = 'contact' THEN 'sync_contacts' ELSE 'sync_events' END)::boolean, true)
               AND (r.types IS NULL OR i.crm_type = ANY(string_to_array(r.types, ',')))),
        inserted AS (
            INSERT INTO crm.crm_sync_logs (id, user_id, crm_type, operation, status, request, unique_id, next_attempt_at, claimed_by, claimed_until)
            SELECT id, user_id, crm_type, operation, CASE WHEN queued THEN 'queued' ELSE 'in_flight' END, request,
                   CASE WHEN operation = 'event' THEN COALESCE(unique_id, 'crm-log-' || id) END,
                   CASE WHEN queued THEN now() END,
                   CASE WHEN queued THEN NULL ELSE $8 END,
                   CASE WHEN queued THEN NULL ELSE now() + make_interval(secs => $9::double precision) END
              FROM t
            RETURNING id, unique_id)
        SELECT t.ord, inserted.id, t.crm_type, inserted.unique_id, NOT t.queued AS connected, t.plain, t.settings, t.credentials_at,
               t.held_for
          FROM t JOIN inserted USING (id) ORDER BY t.ord, t.crm_type
        """)

    /// One request's log statement (bench/floor/floor.c runs the same text for a synchronous
    /// event; a test keeps them equal). The id is drawn first so that the derived unique id can
    /// be written with the row.
    static func createLogSQL(_ request: LogRequest, worker: String, claimSeconds: Double, key: Secret) -> SQL {
        createLogStatement(request.queued ? "true" : "false", key.revealed, request.user.value,
                           request.operation == "contact" ? "sync_contacts" : "sync_events",
                           request.types.map { "{" + $0.map(\.rawValue).joined(separator: ",") + "}" },
                           request.operation, request.request.jsonString, request.uniqueID, worker, String(claimSeconds))
    }

    /// Its values: queued, the key, the user, the settings flag, the types (an array or NULL),
    /// the operation, the body, the unique id, the worker and the claim's seconds.
    static let createLogStatement = SQL.Fixed("""
        WITH t AS MATERIALIZED (
            SELECT nextval(pg_get_serial_sequence('crm.crm_sync_logs', 'id')) AS id, crm_type,
                   CASE WHEN $1::boolean THEN NULL ELSE crm.decrypt_credentials(credentials, $2) END AS plain,
                   CASE WHEN $1::boolean THEN NULL ELSE settings END AS settings,
                   CASE WHEN $1::boolean THEN NULL ELSE updated_at END AS credentials_at,
                   CASE WHEN $1::boolean THEN NULL ELSE EXTRACT(EPOCH FROM rate_limited_until - now()) END AS held_for
              FROM crm.crm_integrations
             WHERE user_id = $3 AND is_active AND COALESCE((settings ->> $4::text)::boolean, true)
               AND ($5::text[] IS NULL OR crm_type = ANY($5::text[]))),
        inserted AS (
            INSERT INTO crm.crm_sync_logs (id, user_id, crm_type, operation, status, request, unique_id, next_attempt_at, claimed_by, claimed_until)
            SELECT t.id, $3, t.crm_type, $6::text, CASE WHEN $1::boolean THEN 'queued' ELSE 'in_flight' END, $7::jsonb,
                   CASE WHEN $6::text = 'event' THEN COALESCE($8::text, 'crm-log-' || t.id) END,
                   CASE WHEN $1::boolean THEN now() END,
                   CASE WHEN $1::boolean THEN NULL ELSE $9::text END,
                   CASE WHEN $1::boolean THEN NULL ELSE now() + make_interval(secs => $10::double precision) END
              FROM t
            RETURNING id, unique_id)
        SELECT inserted.id, t.crm_type, inserted.unique_id, true AS connected, t.plain, t.settings, t.credentials_at, t.held_for
          FROM t JOIN inserted USING (id)
        """)

    /// Claims up to `limit` due rows: first in-flight rows whose claim expired (their worker
    /// died; rare), then queued or retrying rows whose time has come, oldest `next_attempt_at`
    /// first. Any number of workers may call this at once: rows another one holds are skipped.
    /// Each branch is a top-N scan of its own partial index (migration 004), so the claim costs
    /// the same whatever the size of the backlog or of the finished history. The outer LIMIT
    /// reads the branches in order and pulls from `due` only what `expired` left, so no more
    /// than `limit` rows are ever locked.
    public func claimDue(worker: String, limit: Int, claimSeconds: Double) throws -> [ClaimedLog] {
        let sql = Self.claimSQL(worker: worker, limit: limit, claimSeconds: claimSeconds, key: key)
        return try pool.withConnection(priority: priority) { try $0.execute(sql) }.rows.compactMap(Self.claimed)
    }

    /// The claim statement (the tests EXPLAIN it).
    /// The claimed rows come with their active integration's credentials (see `target(_:type:)`).
    static func claimSQL(worker: String, limit: Int, claimSeconds: Double, key: Secret) -> SQL {
        claimStatement(String(limit), worker, String(claimSeconds), key.revealed)
    }

    /// Its values: the limit, the worker, the claim's seconds and the key.
    static let claimStatement = SQL.Fixed("""
        WITH expired AS (
            SELECT id FROM crm.crm_sync_logs
             WHERE status = 'in_flight' AND claimed_until < now()
             ORDER BY claimed_until
             LIMIT $1::int
             FOR UPDATE SKIP LOCKED),
        due AS (
            SELECT id, status = 'queued' AS never_sent FROM crm.crm_sync_logs
             WHERE status IN ('queued', 'retrying') AND next_attempt_at <= now()
             ORDER BY next_attempt_at, id
             LIMIT $1::int
             FOR UPDATE SKIP LOCKED),
        picked AS (
            SELECT id, false AS never_sent FROM expired UNION ALL SELECT id, never_sent FROM due
             LIMIT $1::int),
        claimed AS (
        UPDATE crm.crm_sync_logs l
           SET status = 'in_flight', claimed_by = $2,
               claimed_until = now() + make_interval(secs => $3::double precision), updated_at = now()
          FROM picked p
         WHERE l.id = p.id
        RETURNING l.id, l.user_id, l.crm_type, l.operation, l.request, l.unique_id, l.attempts, l.rate_limited_attempts,
                  EXTRACT(EPOCH FROM now() - l.created_at) AS age, p.never_sent AND l.attempts = 0 AS never_sent)
        SELECT c.*, i.user_id IS NOT NULL AS connected, crm.decrypt_credentials(i.credentials, $4) AS plain, i.settings,
               i.updated_at AS credentials_at, EXTRACT(EPOCH FROM i.rate_limited_until - now()) AS held_for
          FROM claimed c
          LEFT JOIN crm.crm_integrations i ON i.user_id = c.user_id AND i.crm_type = c.crm_type AND i.is_active
        """)

    /// Rows this worker claimed a while ago and has not started yet, with their integrations'
    /// credentials read again and their claims extended from now: a row that waited for a
    /// delivery slot goes out to the integration as it is now, not as it was at the claim (a
    /// user who connected again is sent with the new credentials). A row whose integration was
    /// disconnected while it waited (none is left that existed at the claim, which set the
    /// row's `updated_at`; one connected since is another integration) is `cancelled`, as the
    /// disconnect cancelled the rows waiting for a retry, and left out. Rows no longer ours are
    /// left out too; the others keep `ids`' order.
    public func refreshClaims(ids: [Int64], worker: String, claimSeconds: Double) throws -> [ClaimedLog] {
        guard !ids.isEmpty else { return [] }
        let list = Self.arrayLiteral(ids.map { String($0) })
        let sql: SQL = """
            WITH ours AS (
                SELECT l.id, EXISTS (SELECT 1 FROM crm.crm_integrations i
                                      WHERE i.user_id = l.user_id AND i.crm_type = l.crm_type AND i.created_at <= l.updated_at) AS connected
                  FROM crm.crm_sync_logs l
                 WHERE l.id = ANY(\(list)::bigint[]) AND l.status = 'in_flight' AND l.claimed_by = \(worker)
                   FOR UPDATE OF l),
            cancelled AS (
                UPDATE crm.crm_sync_logs
                   SET status = 'cancelled', error = 'integration disconnected', next_attempt_at = NULL,
                       claimed_by = NULL, claimed_until = NULL, updated_at = now()
                 WHERE id IN (SELECT id FROM ours WHERE NOT connected)),
            claimed AS (
                UPDATE crm.crm_sync_logs
                   SET claimed_until = now() + make_interval(secs => \(String(claimSeconds))::double precision)
                 WHERE id IN (SELECT id FROM ours WHERE connected)
                RETURNING id, user_id, crm_type, operation, request, unique_id, attempts, rate_limited_attempts,
                          EXTRACT(EPOCH FROM now() - created_at) AS age)
            SELECT c.*, i.user_id IS NOT NULL AS connected, crm.decrypt_credentials(i.credentials, \(key)) AS plain, i.settings,
                   i.updated_at AS credentials_at, EXTRACT(EPOCH FROM i.rate_limited_until - now()) AS held_for
              FROM claimed c
              LEFT JOIN crm.crm_integrations i ON i.user_id = c.user_id AND i.crm_type = c.crm_type AND i.is_active
            """
        let rows = try pool.withConnection(priority: priority) { try $0.execute(sql) }.rows.compactMap(Self.claimed)
        let position = Dictionary(ids.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        return rows.sorted { position[$0.id, default: 0] < position[$1.id, default: 0] }
    }

    /// Takes a `failed` row for a manual retry; nil when the row is not (or no longer) failed.
    public func claimFailed(user: UserID, id: Int64, worker: String, claimSeconds: Double) throws -> ClaimedLog? {
        let sql: SQL = """
            WITH claimed AS (
                UPDATE crm.crm_sync_logs
                   SET status = 'in_flight', claimed_by = \(worker), next_attempt_at = NULL,
                       claimed_until = now() + make_interval(secs => \(String(claimSeconds))::double precision), updated_at = now()
                 WHERE user_id = \(user) AND id = \(id) AND status = 'failed'
                RETURNING id, user_id, crm_type, operation, request, unique_id, attempts, rate_limited_attempts, 0 AS age)
            SELECT c.*, i.user_id IS NOT NULL AS connected, crm.decrypt_credentials(i.credentials, \(key)) AS plain, i.settings,
                   i.updated_at AS credentials_at, EXTRACT(EPOCH FROM i.rate_limited_until - now()) AS held_for
              FROM claimed c
              LEFT JOIN crm.crm_integrations i ON i.user_id = c.user_id AND i.crm_type = c.crm_type AND i.is_active
            """
        return try pool.withConnection(priority: priority) { try $0.execute(sql) }.first.flatMap(Self.claimed)
    }

    /// A worker that restarts under the same identity takes back the rows its previous life left in flight.
    public func releaseClaims(worker: String) throws -> Int {
        try pool.withConnection(priority: priority) {
            try $0.execute("""
                UPDATE crm.crm_sync_logs SET status = 'retrying', next_attempt_at = now(), claimed_by = NULL, claimed_until = NULL, updated_at = now()
                 WHERE status = 'in_flight' AND claimed_by = \(worker)
                """).affectedRows
        }
    }

    /// Gives back rows this worker claimed and did not start, due at once: `queued` again those
    /// no call can have carried yet (`neverSent`, as claimed), the others `retrying`. (Not
    /// "attempts = 0": a claim taken over from a worker that died mid-call has none recorded,
    /// yet its call may have reached the CRM, and its next attempt must look first.) Rows no
    /// longer ours are left alone.
    @discardableResult
    public func releaseClaims(ids: [Int64], neverSent: Set<Int64>, worker: String) throws -> Int {
        guard !ids.isEmpty else { return 0 }
        let list = Self.arrayLiteral(ids.map { String($0) })
        let unsent = Self.arrayLiteral(neverSent.sorted().map { String($0) })
        return try pool.withConnection(priority: priority) {
            try $0.execute("""
                UPDATE crm.crm_sync_logs
                   SET status = CASE WHEN id = ANY(\(unsent)::bigint[]) THEN 'queued' ELSE 'retrying' END, next_attempt_at = now(),
                       claimed_by = NULL, claimed_until = NULL, updated_at = now()
                 WHERE id = ANY(\(list)::bigint[]) AND status = 'in_flight' AND claimed_by = \(worker)
                """).affectedRows
        }
    }

    /// What the error of a row put off by `holdBack` begins with.
    public static let heldBack = "held back: "

    /// Puts a claimed row off without a call (its CRM is rate-limiting the integration): due in
    /// `seconds`, `queued` again when no call can have carried it yet (`neverSent`), else
    /// `retrying`, with `heldBack` and `reason` as its error. Its attempts and last attempt's
    /// details stay as they were. False when the row is no longer ours.
    @discardableResult
    public func holdBack(id: Int64, worker: String, seconds: Double, neverSent: Bool, reason: String) throws -> Bool {
        try pool.withConnection(priority: priority) {
            try $0.execute("""
                UPDATE crm.crm_sync_logs
                   SET status = CASE WHEN \(neverSent)::boolean THEN 'queued' ELSE 'retrying' END,
                       next_attempt_at = now() + make_interval(secs => \(String(seconds))::double precision), error = \(Self.heldBack + reason),
                       claimed_by = NULL, claimed_until = NULL, updated_at = now()
                 WHERE id = \(id) AND status = 'in_flight' AND claimed_by = \(worker)
                """).affectedRows > 0
        }
    }

    /// The rows of an integration put off by `holdBack` come sooner, in the same order: each due
    /// `(due - now) × factor` from now (its CRM's pace has become faster than the one their turns
    /// were given at). Returns how many.
    public func pullForward(user: UserID, type: CRMType, factor: Double) throws -> Int {
        try pool.withConnection(priority: priority) {
            try $0.execute("""
                UPDATE crm.crm_sync_logs
                   SET next_attempt_at = now() + (next_attempt_at - now()) * \(String(factor))::double precision
                 WHERE status IN ('queued', 'retrying') AND next_attempt_at > now()
                   AND user_id = \(user) AND crm_type = \(type) AND starts_with(error, \(Self.heldBack))
                """).affectedRows
        }
    }

    /// Writes an attempt's outcome, only while the row is still ours, and the integration's
    /// last sync (and `auth_error` or a rate limit's wait, when the attempt's credentials,
    /// stored at `credentialsStoredAt`, are still the integration's). See `record(_:worker:)`.
    @discardableResult
    public func record(_ attempt: AttemptRecord, logID: Int64, user: UserID, type: CRMType, credentialsStoredAt: String? = nil,
                       worker: String) throws -> Recorded {
        try record([Outcome(attempt, logID: logID, user: user, type: type, credentialsStoredAt: credentialsStoredAt)], worker: worker)[0]
    }

    /// What became of an outcome.
    public enum Recorded: Sendable, Equatable {
        /// Written as it was.
        case written
        /// Written as `cancelled`: a retry whose integration was disconnected during the call.
        case cancelled
        /// Nothing written: the row was no longer this worker's (taken over, or cancelled).
        case notOurs
    }

    /// One outcome's statement (bench/floor/floor.c runs the same text; a test keeps them equal).
    /// One statement (one round trip, atomic): the integration is touched only when the log row
    /// was still ours.
    static func recordSQL(_ attempt: AttemptRecord, logID: Int64, user: UserID, type: CRMType, credentialsStoredAt: String?,
                          worker: String) -> SQL {
        recordStatement(attempt.status, attempt.httpStatus.map(String.init), attempt.error, String(attempt.durationMS),
                        attempt.crmRecordID, attempt.response?.jsonString, attempt.nextAttemptInSeconds.map { String($0) },
                        String(logID), worker, attempt.authFailure ? "true" : "false", credentialsStoredAt, user.value, type.rawValue,
                        attempt.rateLimitedForSeconds.map { String($0) })
    }

    /// Its values: the status, HTTP status, error, duration, CRM record id, response and seconds
    /// to the next attempt; the log row's id and the worker; whether the credentials failed, and
    /// when they were stored; the user and the CRM; when the CRM refused the call for its rate
    /// limit, the seconds it asked to wait (else NULL).
    static let recordStatement = SQL.Fixed("""
        WITH logged AS (
            UPDATE crm.crm_sync_logs
               SET status = $1, http_status = $2::int, error = $3,
                   duration_ms = $4::int, crm_record_id = COALESCE($5, crm_record_id),
                   response = $6::jsonb, attempts = attempts + 1, rate_limited_attempts = rate_limited_attempts + ($14::double precision IS NOT NULL)::int,
                   updated_at = now(),
                   next_attempt_at = now() + make_interval(secs => $7::double precision),
                   claimed_by = NULL, claimed_until = NULL
             WHERE id = $8::bigint AND status = 'in_flight' AND claimed_by = $9
            RETURNING id),
        touched AS (
            UPDATE crm.crm_integrations
               SET last_sync_at = now(), last_sync_status = $1,
                   status = CASE WHEN $10::boolean AND updated_at = $11::timestamptz THEN 'auth_error' ELSE status END,
                   status_detail = CASE WHEN $10::boolean AND updated_at = $11::timestamptz THEN $3 ELSE status_detail END,
                   rate_limited_until = CASE WHEN updated_at = $11::timestamptz
                                             THEN GREATEST(rate_limited_until, now() + make_interval(secs => $14::double precision))
                                             ELSE rate_limited_until END
             WHERE user_id = $12 AND crm_type = $13 AND EXISTS (SELECT 1 FROM logged)
            RETURNING 1)
        SELECT (SELECT count(*) FROM logged) AS logged
        """)

    /// An attempt's outcome to write (see `record(_:logID:user:type:worker:)`).
    public struct Outcome: Sendable {
        public var attempt: AttemptRecord
        public var logID: Int64
        public var user: UserID
        public var type: CRMType
        /// The attempt's credentials' `DeliveryTarget.credentialsStoredAt` (nil: none were used).
        public var credentialsStoredAt: String?
        public init(_ attempt: AttemptRecord, logID: Int64, user: UserID, type: CRMType, credentialsStoredAt: String? = nil) {
            self.attempt = attempt
            self.logID = logID
            self.user = user
            self.type = type
            self.credentialsStoredAt = credentialsStoredAt
        }
    }

    /// Writes several attempts' outcomes in one statement and one commit (group commit); per
    /// outcome, what became of it. One outcome alone takes the plain statement.
    ///
    /// A transient failure whose integration was disconnected while the call was under way is
    /// not retried: its row is `cancelled`, as the disconnect cancelled the rows already waiting
    /// for a retry ("its integration" is one created no later than the attempt's credentials
    /// were stored: one connected anew after a disconnect is another, and gets nothing of the
    /// old one's, not even its last sync). Only a batch holding such a retry pays for the check:
    /// one more statement first, in the same transaction, which takes those rows out of flight
    /// so that the outcome statement passes them by.
    public func record(_ outcomes: [Outcome], worker: String) throws -> [Recorded] {
        guard !outcomes.isEmpty else { return [] }
        let retries = outcomes.filter { $0.attempt.status == "retrying" && $0.credentialsStoredAt != nil }
        guard !retries.isEmpty else {
            return try pool.withConnection(priority: priority) { try Self.writeOutcomes(outcomes, worker: worker, on: $0) }
        }
        return try pool.transaction(priority: priority) { c in
            let cancelled = Set(try c.execute(Self.cancelSQL(retries, worker: worker)).rows.compactMap { $0.int64("id") })
            let written = try Self.writeOutcomes(outcomes, worker: worker, on: c)
            return zip(outcomes, written).map { outcome, written in cancelled.contains(outcome.logID) ? .cancelled : written }
        }
    }

    /// The retries among `retries` whose integration is gone: cancelled, with the attempt's own
    /// details. Its values: one array per column (ids, HTTP statuses, durations, responses,
    /// users, CRMs, credentials' times), then the worker.
    static func cancelSQL(_ retries: [Outcome], worker: String) -> SQL {
        cancelStatement(arrayLiteral(retries.map { String($0.logID) }), arrayLiteral(retries.map { $0.attempt.httpStatus.map(String.init) }),
                        arrayLiteral(retries.map { String($0.attempt.durationMS) }), arrayLiteral(retries.map { $0.attempt.response?.jsonString }),
                        arrayLiteral(retries.map(\.user.value)), arrayLiteral(retries.map(\.type.rawValue)),
                        arrayLiteral(retries.map(\.credentialsStoredAt)), worker)
    }

    static let cancelStatement = SQL.Fixed("""
        WITH r AS (
            SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::jsonb[], $5::text[], $6::text[], $7::timestamptz[])
                AS r(id, http_status, duration_ms, response, user_id, crm_type, credentials_at))
        UPDATE crm.crm_sync_logs l
           SET status = 'cancelled', error = 'integration disconnected', http_status = r.http_status,
               duration_ms = r.duration_ms, response = r.response, attempts = l.attempts + 1, updated_at = now(),
               next_attempt_at = NULL, claimed_by = NULL, claimed_until = NULL
          FROM r
         WHERE l.id = r.id AND l.status = 'in_flight' AND l.claimed_by = $8
           AND NOT EXISTS (SELECT 1 FROM crm.crm_integrations i
                            WHERE i.user_id = r.user_id AND i.crm_type = r.crm_type AND i.created_at <= r.credentials_at)
        RETURNING l.id
        """)

    /// The outcome statement for `outcomes` (the plain one for one outcome, else the batch) on `c`.
    private static func writeOutcomes(_ outcomes: [Outcome], worker: String, on c: Connection) throws -> [Recorded] {
        if outcomes.count == 1 {
            let o = outcomes[0]
            let sql = recordSQL(o.attempt, logID: o.logID, user: o.user, type: o.type, credentialsStoredAt: o.credentialsStoredAt, worker: worker)
            return [try c.execute(sql).first?.int("logged") ?? 0 > 0 ? .written : .notOurs]
        }
        let a = outcomes.map(\.attempt)
        let ids = Self.arrayLiteral(outcomes.map { String($0.logID) })
        let statuses = Self.arrayLiteral(a.map(\.status))
        let httpStatuses = Self.arrayLiteral(a.map { $0.httpStatus.map(String.init) })
        let errors = Self.arrayLiteral(a.map(\.error))
        let durations = Self.arrayLiteral(a.map { String($0.durationMS) })
        let recordIDs = Self.arrayLiteral(a.map(\.crmRecordID))
        let responses = Self.arrayLiteral(a.map { $0.response?.jsonString })
        let nexts = Self.arrayLiteral(a.map { $0.nextAttemptInSeconds.map { String($0) } })
        let authFailures = Self.arrayLiteral(a.map { $0.authFailure ? "t" : "f" })
        let users = Self.arrayLiteral(outcomes.map(\.user.value))
        let types = Self.arrayLiteral(outcomes.map(\.type.rawValue))
        let storedAt = Self.arrayLiteral(outcomes.map(\.credentialsStoredAt))
        let rateLimited = Self.arrayLiteral(a.map { $0.rateLimitedForSeconds.map { String($0) } })
        let sql = Self.recordBatchStatement(ids, statuses, httpStatuses, errors, durations, recordIDs, responses, nexts, authFailures,
                                            users, types, storedAt, worker, rateLimited)
        let written = Set(try c.execute(sql).rows.compactMap { $0.int64("id") })
        return outcomes.map { written.contains($0.logID) ? .written : .notOurs }
    }

    /// The batch outcome statement: one array per column of the outcomes (as in
    /// `recordStatement`), then the worker, then the seconds of each rate limit's wait (NULL:
    /// not rate-limited). Two outcomes for one integration in a batch touch it once, with
    /// either's status: they were concurrent, so neither is "the last".
    static let recordBatchStatement = SQL.Fixed("""
        WITH r AS (
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[], $7::jsonb[],
                                 $8::double precision[], $9::boolean[], $10::text[], $11::text[], $12::timestamptz[],
                                 $14::double precision[])
                AS r(id, status, http_status, error, duration_ms, crm_record_id, response, next_in, auth_failure, user_id, crm_type,
                     credentials_at, rate_limited_for)),
        logged AS (
            UPDATE crm.crm_sync_logs l
               SET status = r.status, http_status = r.http_status, error = r.error, duration_ms = r.duration_ms,
                   crm_record_id = COALESCE(r.crm_record_id, l.crm_record_id), response = r.response,
                   attempts = l.attempts + 1, rate_limited_attempts = l.rate_limited_attempts + (r.rate_limited_for IS NOT NULL)::int,
                   updated_at = now(),
                   next_attempt_at = now() + make_interval(secs => r.next_in),
                   claimed_by = NULL, claimed_until = NULL
              FROM r
             WHERE l.id = r.id AND l.status = 'in_flight' AND l.claimed_by = $13
            RETURNING l.id),
        touched AS (
            UPDATE crm.crm_integrations i
               SET last_sync_at = now(), last_sync_status = r.status,
                   status = CASE WHEN r.auth_failure AND i.updated_at = r.credentials_at THEN 'auth_error' ELSE i.status END,
                   status_detail = CASE WHEN r.auth_failure AND i.updated_at = r.credentials_at THEN r.error ELSE i.status_detail END,
                   rate_limited_until = CASE WHEN i.updated_at = r.credentials_at
                                             THEN GREATEST(i.rate_limited_until, now() + make_interval(secs => r.rate_limited_for))
                                             ELSE i.rate_limited_until END
              FROM r JOIN logged ON logged.id = r.id
             WHERE i.user_id = r.user_id AND i.crm_type = r.crm_type
            RETURNING 1)
        SELECT id FROM logged
        """)

    /// A PostgreSQL array literal for one bound parameter: every element quoted, nil as NULL
    /// (the cast at the use site gives the element type).
    static func arrayLiteral(_ values: [String?]) -> String {
        // On bytes (quotes and backslashes are ASCII, so UTF-8 passes through untouched), in
        // one pass into room for the worst case (every byte escaped): a batch of JSON bodies is
        // thousands of characters with a quote every few, so no per-run appends, and no pass
        // that only counts (a third of this function's instructions). The room is at most
        // twice the text, and is freed once the statement has run.
        let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        var capacity = 2 + Swift.max(0, values.count - 1)  // braces and commas
        for value in values { capacity += value.map { 2 + 2 * $0.utf8.count } ?? 4 }  // NULL
        return String(unsafeUninitializedCapacity: capacity) { buffer in
            let out = buffer.baseAddress!
            var n = 0
            func escaped(_ bytes: UnsafeBufferPointer<UInt8>) {
                for b in bytes {
                    if b == quote || b == backslash { out[n] = backslash; n += 1 }
                    out[n] = b; n += 1
                }
            }
            out[n] = UInt8(ascii: "{"); n += 1
            for i in values.indices {
                if i > 0 { out[n] = UInt8(ascii: ","); n += 1 }
                guard let value = values[i] else {
                    for b in "NULL".utf8 { out[n] = b; n += 1 }
                    continue
                }
                out[n] = quote; n += 1
                if value.utf8.withContiguousStorageIfAvailable(escaped) == nil { Array(value.utf8).withUnsafeBufferPointer(escaped) }
                out[n] = quote; n += 1
            }
            out[n] = UInt8(ascii: "}"); n += 1
            return n
        }
    }

    /// Rows waiting for delivery (the retry backlog). Two counts, so that each is served by
    /// one of the claim's partial indexes rather than a scan of the whole log.
    public func backlog() throws -> Int {
        try pool.withConnection(priority: priority) {
            try $0.execute("""
                SELECT (SELECT count(*) FROM crm.crm_sync_logs WHERE status IN ('queued', 'retrying'))
                     + (SELECT count(*) FROM crm.crm_sync_logs WHERE status = 'in_flight') AS n
                """).first?.int("n") ?? 0
        }
    }

    static func claimed(_ row: Row) -> ClaimedLog? {
        guard let id = row.int64("id"), let user = row.string("user_id").flatMap(UserID.init),
              let type = row.string("crm_type").flatMap(CRMType.init), let operation = row.string("operation") else { return nil }
        return ClaimedLog(id: id, user: user, crmType: type, operation: operation, request: row.json("request") ?? .null,
                          uniqueID: row.string("unique_id"), attempts: row.int("attempts") ?? 0,
                          rateLimitedAttempts: row.int("rate_limited_attempts") ?? 0,
                          ageSeconds: row.string("age").flatMap(Double.init) ?? 0, target: target(row, type: type),
                          neverSent: row.bool("never_sent") ?? false)
    }
}
