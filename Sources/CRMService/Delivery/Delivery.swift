import CRMConnectors
import CRMCore
import CRMStore
import Dispatch
import Threads
import Logging
import Synchronization

/// What a sync carries: a contact or an event.
enum Payload: Sendable {
    case contact(Contact)
    case event(Event)

    var operation: String {
        switch self {
        case .contact: "contact"
        case .event: "event"
        }
    }

    /// The JSON kept in the log's `request` column (never credentials), and read back for retries.
    var json: JSON {
        switch self {
        case let .contact(c): c.json
        case let .event(e): e.json
        }
    }

    /// Reads a logged request back.
    static func from(operation: String, request: JSON) -> Payload? {
        guard var r = FieldReader(request, at: []) else { return nil }
        if operation == "contact" { return Contact.read(&r).map(Payload.contact) }
        return Event.read(&r).map(Payload.event)
    }
}

/// A log row of a synchronous sync, with its integration's credentials (read with the row).
struct PreparedAttempt: Sendable {
    let row: CreatedLog
    let target: TargetRead
}

/// Delivers syncs to CRMs for three callers — a synchronous request, an async one (queued for
/// the sweep) and the retry sweep — always the same way: the log row exists before the CRM is
/// called, no database connection is held during the call, and the outcome is written after.
public final class Delivery: Sendable {
    let context: ServiceContext
    let store: DeliveryStore
    /// The same store for the retry sweep: requests get database connections first.
    let backgroundStore: DeliveryStore
    /// This worker's identity in `claimed_by`: stable across restarts of the same service instance.
    public let worker: String
    let policy: RetryPolicy
    let wakeup = Wakeup()
    /// How long a claim lasts: long enough for every CRM call of one delivery to time out.
    let claimSeconds: Double
    /// Writes the log rows of concurrent sync requests together (group commit).
    let logWriter: GroupCommit<LogRequest, [CreatedLog]>
    /// Writes the outcomes of concurrent attempts together: requests' and the sweep's apart
    /// (the sweep's at background priority).
    let outcomeWriter: GroupCommit<DeliveryStore.Outcome, DeliveryStore.Recorded>
    let backgroundOutcomeWriter: GroupCommit<DeliveryStore.Outcome, DeliveryStore.Recorded>
    /// The integrations a CRM is rate-limiting, and the pace this worker calls them at.
    let rateLimits = RateLimits()

    public init(context: ServiceContext, worker: String) {
        self.context = context
        self.worker = worker
        let store = DeliveryStore(pool: context.pool, encryptionKey: context.config.encryptionKey)
        self.store = store
        var backgroundStore = store
        backgroundStore.priority = .background
        self.backgroundStore = backgroundStore
        let claimSeconds = context.config.crmHTTPTimeoutSeconds * 8 + 30
        self.claimSeconds = claimSeconds
        // A few batches committed at a time, each writer holding a connection only while it writes.
        let writers = max(1, min(4, context.config.dbPoolSize / 4))
        let metrics = context.metrics
        let (logMetrics, outcomeMetrics, sweepMetrics) =
            (metrics.databaseWriter("sync_logs"), metrics.databaseWriter("outcomes"), metrics.databaseWriter("sweep_outcomes"))
        logWriter = GroupCommit(writers: writers, written: logMetrics.batch) {
            try store.createLogs($0, worker: worker, claimSeconds: claimSeconds)
        }
        outcomeWriter = GroupCommit(writers: writers, written: outcomeMetrics.batch) { try store.record($0, worker: worker) }
        let sweepStore = backgroundStore
        backgroundOutcomeWriter = GroupCommit(writers: writers, written: sweepMetrics.batch) { try sweepStore.record($0, worker: worker) }
        policy = RetryPolicy(maxAttempts: context.config.crmRetryMaxAttempts, baseDelaySeconds: context.config.crmRetryBaseDelaySeconds)
    }

    /// A `Prefer: respond-async` sync: one log row per targeted integration, committed before
    /// the 202 (nothing accepted is lost), delivered by the sweep. Runs on the calling thread.
    func queue(user: UserID, payload: Payload, targets: [CRMType]?) throws -> (status: Int, body: [UInt8]) {
        accepted(try logWriter.submit(logRequest(user: user, payload: payload, targets: targets, queued: true)))
    }

    /// The same for a task: no thread waits for the commit (see `InlineExecutor`: the answer is
    /// written by the thread that committed the rows).
    func queue(user: UserID, payload: Payload, targets: [CRMType]?) async throws -> (status: Int, body: [UInt8]) {
        accepted(try await logWriter.submit(logRequest(user: user, payload: payload, targets: targets, queued: true)))
    }

    private func accepted(_ rows: [CreatedLog]) -> (status: Int, body: [UInt8]) {
        if !rows.isEmpty { wakeup.signal() }
        return (202, Self.acceptedBody(rows))
    }

    /// The 202 body for queued rows, written in place (every async sync answers with it): what
    /// `body(_:)` gives for results `{"crm_type", "status": "queued", "log_id"}`, none a success
    /// or a failure yet.
    static func acceptedBody(_ rows: [CreatedLog]) -> [UInt8] {
        var out = JSONBytes(capacity: 64 + rows.count * 64)
        out.literal(#"{"results":["#)
        for (i, row) in rows.enumerated() {
            if i > 0 { out.literal(",") }
            out.literal(#"{"crm_type":"#)
            out.string(row.crmType.rawValue)
            out.literal(#","status":"queued","log_id":"#)
            out.int(row.id)
            out.literal("}")
        }
        out.literal(#"],"success_count":0,"failure_count":0}"#)
        return out.finish()
    }

    /// A synchronous sync, first part: the log rows (committed) with their integrations'
    /// credentials, read by the same statement. No thread waits for the commit. The part that
    /// waits on CRMs is `deliver`.
    func prepare(user: UserID, payload: Payload, targets: [CRMType]?) async throws -> [PreparedAttempt] {
        let rows = try await logWriter.submit(logRequest(user: user, payload: payload, targets: targets, queued: false))
        return rows.map { row in
            PreparedAttempt(row: row, target: row.target ?? .failure(DatabaseError(.decoding, message: "the credentials were not read")))
        }
    }

    /// The deliveries of prepared rows, to all targeted CRMs at once.
    func deliver(_ prepared: [PreparedAttempt], user: UserID, payload: Payload) async -> (status: Int, body: JSON) {
        if prepared.count == 1 { return (200, Self.body([await deliver(prepared[0], user: user, payload: payload)])) }  // no child task
        return (200, Self.body(await deliverAll(prepared, user: user, payload: payload)))
    }

    @inline(never)
    private func deliver(_ one: PreparedAttempt, user: UserID, payload: Payload) async -> JSON {
        await attempt(id: one.row.id, user: user, type: one.row.crmType, payload: payload, uniqueID: one.row.uniqueID,
                      attemptsBefore: 0, rateLimitedBefore: 0, ageSeconds: 0, background: false, neverSent: true, target: one.target)
    }

    /// Results in the order of the rows.
    private func deliverAll(_ prepared: [PreparedAttempt], user: UserID, payload: Payload) async -> [JSON] {
        await withTaskGroup(of: (Int, JSON).self) { group in
            for (index, one) in prepared.enumerated() { group.addTask { (index, await self.deliver(one, user: user, payload: payload)) } }
            var results = [JSON?](repeating: nil, count: prepared.count)
            for await (index, result) in group { results[index] = result }
            return results.compactMap { $0 }
        }
    }

    private func logRequest(user: UserID, payload: Payload, targets: [CRMType]?, queued: Bool) -> LogRequest {
        var uniqueID: String?
        if case let .event(event) = payload { uniqueID = event.uniqueID }
        return LogRequest(user: user, operation: payload.operation, types: targets, request: payload.json, uniqueID: uniqueID, queued: queued)
    }

    /// Re-delivers a `failed` log now (manual retry); nil when it is not failed.
    func retry(user: UserID, id: Int64) async throws -> JSON? {
        let store = self.store, worker = self.worker, claimSeconds = self.claimSeconds
        guard let log = try await context.database.run({ try store.claimFailed(user: user, id: id, worker: worker, claimSeconds: claimSeconds) }) else {
            return nil
        }
        return await attempt(log, background: false)
    }

    /// One attempt for a claimed row (`background`: by the retry sweep).
    /// `called` runs once, when the CRM call has ended (or there was none to make), before
    /// the outcome is written.
    func attempt(_ log: ClaimedLog, background: Bool, called: () -> Void = {}) async -> JSON {
        guard let payload = Payload.from(operation: log.operation, request: log.request) else {
            called()
            return await unreadable(log, background: background)
        }
        return await attempt(id: log.id, user: log.user, type: log.crmType, payload: payload, uniqueID: log.uniqueID,
                             attemptsBefore: log.attempts, rateLimitedBefore: log.rateLimitedAttempts, ageSeconds: log.ageSeconds,
                             background: background, neverSent: log.neverSent, target: log.target, called: called)
    }

    /// A logged request that cannot be read back fails for good (its own function: see `attempt`).
    @inline(never)
    private func unreadable(_ log: ClaimedLog, background: Bool) async -> JSON {
        let record = AttemptRecord(status: "failed", httpStatus: nil, error: "the logged request is not readable", durationMS: 0,
                                   crmRecordID: nil, response: nil, nextAttemptInSeconds: nil, authFailure: false)
        await write(DeliveryStore.Outcome(record, logID: log.id, user: log.user, type: log.crmType), background: background)
        return Self.result(log.crmType, log.id, record, action: nil)
    }

    private func outcomeWriter(_ background: Bool) -> GroupCommit<DeliveryStore.Outcome, DeliveryStore.Recorded> {
        background ? backgroundOutcomeWriter : outcomeWriter
    }

    /// The CRM call with the credentials read with the row (no thread waits on it), then the
    /// outcome (group commit). Each step is a function of its own, not inlined:
    /// an async function's frame lives on the task's heap for as long as it runs (across the
    /// CRM call) with a place for each of its locals, so small frames that come and go keep
    /// the memory of a call in flight small.
    @inline(never)
    /// `neverSent`: no call can have carried this row to a CRM yet (the attempt of the request
    /// that wrote it, or the first of a queued async sync). `rateLimitedBefore`: of
    /// `attemptsBefore`, those the CRM refused for its rate limit.
    private func attempt(id: Int64, user: UserID, type: CRMType, payload: Payload, uniqueID: String?, attemptsBefore: Int, rateLimitedBefore: Int,
                         ageSeconds: Double, background: Bool, neverSent: Bool, target: TargetRead, called: () -> Void = {}) async -> JSON {
        var key = RateLimits.Key(user: user, type: type)
        if case let .success(delivering?) = target {
            key.credentials = delivering.credentialsStoredAt
            // A refusal another worker heard (read with the credentials): this one waits too.
            if let seconds = delivering.rateLimitedForSeconds { rateLimits.heard(key, waitSeconds: seconds) }
        }
        switch rateLimits.admit(key) {
        case let .wait(turn) where ageSeconds + turn <= policy.windowSeconds:
            // The CRM is rate-limiting this integration: no call now (it would be refused), the
            // row's turn comes later. Unless that is past the retry window: then it tries now.
            called()
            return await holdBack(id: id, user: user, type: type, turn: turn, neverSent: neverSent, background: background)
        case let .go(pullForward: factor?):
            pullForward(user: user, type: type, factor: factor)
        default:
            break
        }
        let started = ContinuousClock.now
        // An id derived from this row (the client gave none), on a row never sent: no earlier
        // call can have carried it, so connectors need not look for the event first.
        var clientGaveID = false
        if case let .event(event) = payload { clientGaveID = event.uniqueID != nil }
        let mayBeRecorded = !neverSent || clientGaveID
        let outcome = await call(user: user, type: type, payload: payload, uniqueID: uniqueID ?? "crm-log-\(id)",
                                 mayBeRecorded: mayBeRecorded, target: target)
        called()
        let attempts = attemptsBefore + 1
        let (record, action) = record(of: outcome, attempts: attempts, rateLimitedBefore: rateLimitedBefore, ageSeconds: ageSeconds, key: key,
                                      since: started)
        let recorded = await write(DeliveryStore.Outcome(record, logID: id, user: user, type: type, credentialsStoredAt: key.credentials),
                                   background: background)
        // A retry cancelled because the integration was disconnected during the call is counted
        // and logged as what the log row says; the answer keeps the attempt's own status (see
        // README, Operations: Delivery).
        report(record, status: recorded == .cancelled ? "cancelled" : record.status, id: id, user: user, type: type, attempts: attempts)
        return Self.result(type, id, record, action: action)
    }

    /// The CRM call with the integration's credentials.
    @inline(never)
    private func call(user: UserID, type: CRMType, payload: Payload, uniqueID: String, mayBeRecorded: Bool, target: TargetRead) async -> DeliveryOutcome {
        switch Self.plan(target, user: user, type: type) {
        case let .send(syncTarget):
            let started = ContinuousClock.now
            let outcome = await send(payload, uniqueID: uniqueID, mayBeRecorded: mayBeRecorded, to: context.connectors.connector(for: type), for: syncTarget)
            context.metrics.crmCall(type, duration: ContinuousClock.now - started)
            return outcome
        case let .done(outcome): return outcome
        }
    }

    private enum Plan {
        case send(SyncTarget)
        /// Nothing to call the CRM with.
        case done(DeliveryOutcome)
    }

    private static func plan(_ target: TargetRead, user: UserID, type: CRMType) -> Plan {
        switch target {
        case let .failure(error):
            // Credentials that cannot be read now (say, while CRM_ENCRYPTION_KEY is being set
            // right): a transient failure, tried again later.
            .done(.transient(httpStatus: nil, error: error.message, retryAfterSeconds: nil, response: nil))
        case .success(nil):
            .done(.permanent(httpStatus: nil, error: "the \(type.rawValue) integration is no longer connected", authFailure: false, response: nil))
        case let .success(target?):
            .send(SyncTarget(user: user, credentials: target.credentials, settings: target.settings))
        }
    }

    @inline(never)
    private func send(_ payload: Payload, uniqueID: String, mayBeRecorded: Bool, to connector: any Connector, for target: SyncTarget) async -> DeliveryOutcome {
        switch payload {
        case let .contact(contact): await connector.upsertContact(contact, for: target)
        case let .event(event): await connector.sendEvent(event, uniqueID: uniqueID, mayBeRecorded: mayBeRecorded, for: target)
        }
    }

    /// What the log row records of an outcome (and the sync's action, for the answer). A call
    /// refused for the CRM's rate limit spends no attempt: it waits for its turn at the
    /// integration's pace (`RateLimits`), within the retry window.
    @inline(never)
    private func record(of outcome: DeliveryOutcome, attempts: Int, rateLimitedBefore: Int, ageSeconds: Double, key: RateLimits.Key,
                        since started: ContinuousClock.Instant) -> (AttemptRecord, action: String?) {
        let elapsed = ContinuousClock.now - started
        let ms = Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
        switch outcome {
        case let .success(action, recordID, status, detail, response):
            return (AttemptRecord(status: "success", httpStatus: status, error: detail, durationMS: ms, crmRecordID: recordID,
                                  response: response, nextAttemptInSeconds: nil, authFailure: false), action)
        case let .permanent(status, error, auth, response):
            return (AttemptRecord(status: "failed", httpStatus: status, error: error, durationMS: ms, crmRecordID: nil,
                                  response: response, nextAttemptInSeconds: nil, authFailure: auth), nil)
        case let .transient(status, error, retryAfter, response, rateLimited):
            let delay = rateLimited
                ? policy.delay(afterRateLimitWithTurn: rateLimits.limited(key, retryAfter: retryAfter), age: ageSeconds)
                : policy.delay(afterAttempts: attempts - rateLimitedBefore, age: ageSeconds, retryAfter: retryAfter)
            // Written with the outcome: every worker holds the integration back until the wait ends.
            let wait = rateLimited ? RateLimits.waitSeconds(retryAfter: retryAfter) : nil
            if let delay {
                return (AttemptRecord(status: "retrying", httpStatus: status, error: error, durationMS: ms, crmRecordID: nil,
                                      response: response, nextAttemptInSeconds: delay, authFailure: false, rateLimitedForSeconds: wait), nil)
            }
            return (AttemptRecord(status: "failed", httpStatus: status, error: "gave up after \(attempts) attempts: \(error)", durationMS: ms,
                                  crmRecordID: nil, response: response, nextAttemptInSeconds: nil, authFailure: false, rateLimitedForSeconds: wait), nil)
        }
    }

    /// A delivery put off without a call, to its `turn` (seconds from now) at the pace of an
    /// integration its CRM is rate-limiting. Its attempts stay as they were; a row never sent
    /// is `queued` again (its first attempt needs no lookup then), others `retrying`.
    @inline(never)
    private func holdBack(id: Int64, user: UserID, type: CRMType, turn: Double, neverSent: Bool, background: Bool) async -> JSON {
        let reason = "\(type.rawValue) is rate-limiting this integration; the next attempt is due in \(Int(turn.rounded(.up))) s"
        let store = background ? backgroundStore : self.store, worker = self.worker
        do {
            _ = try await context.database.run { try store.holdBack(id: id, worker: worker, seconds: turn, neverSent: neverSent, reason: reason) }
        } catch {
            // Not written: the claim expires and the row is delivered then.
            context.logger.error("could not put a delivery off", metadata: ["log_id": "\(id)", "error": "\(error)"])
        }
        context.metrics.heldBack(type)
        context.logger.info("delivery held back", metadata: [
            "log_id": "\(id)", "user_id": "\(user)", "crm_type": "\(type.rawValue)", "next_attempt_in_s": "\(Int(turn.rounded(.up)))",
        ])
        let record = AttemptRecord(status: neverSent ? "queued" : "retrying", httpStatus: nil, error: DeliveryStore.heldBack + reason, durationMS: 0, crmRecordID: nil,
                                   response: nil, nextAttemptInSeconds: turn, authFailure: false)
        return Self.result(type, id, record, action: nil)
    }

    /// The deliveries put off for an integration come sooner: its pace has become faster than
    /// the one their turns were given at (`RateLimits.Admission`). In the background, off this
    /// delivery's way; if it fails, they come at their turns.
    private func pullForward(user: UserID, type: CRMType, factor: Double) {
        let store = backgroundStore, context = self.context
        Task {
            do {
                let rows = try await context.database.run { try store.pullForward(user: user, type: type, factor: factor) }
                context.logger.info("held-back deliveries pulled forward", metadata: [
                    "user_id": "\(user)", "crm_type": "\(type.rawValue)", "rows": "\(rows)", "factor": "\((factor * 100).rounded() / 100)",
                ])
            } catch {
                context.logger.warning("could not pull held-back deliveries forward", metadata: ["crm_type": "\(type.rawValue)", "error": "\(error)"])
            }
        }
    }

    /// What became of the outcome; nil when it could not be written.
    @inline(never) @discardableResult
    private func write(_ outcome: DeliveryStore.Outcome, background: Bool) async -> DeliveryStore.Recorded? {
        do {
            return try await outcomeWriter(background).submit(outcome)
        } catch {
            // The outcome could not be written: the claim expires and the row is delivered again
            // (upserts and deduplicated events make that harmless).
            context.logger.error("could not record a delivery attempt", metadata: ["log_id": "\(outcome.logID)", "error": "\(error)"])
            return nil
        }
    }

    /// Metrics and the attempt's log lines.
    @inline(never)
    private func report(_ record: AttemptRecord, status: String, id: Int64, user: UserID, type: CRMType, attempts: Int) {
        context.metrics.sync(crmType: type.rawValue, status: status)
        // DEBUG adds what the CRM said (never a credential: requests are not logged, and
        // credentials never reach `record`).
        context.logger.debug("delivery detail", metadata: [
            "log_id": "\(id)", "crm_type": "\(type.rawValue)", "error": "\(record.error ?? "-")",
            "crm_record_id": "\(record.crmRecordID ?? "-")", "next_attempt_in_s": "\(record.nextAttemptInSeconds.map { String(Int($0)) } ?? "-")",
            "crm_response": "\(record.response.map { String($0.jsonString.prefix(2000)) } ?? "-")",
        ])
        context.logger.info("delivery attempt", metadata: [
            "log_id": "\(id)", "user_id": "\(user)", "crm_type": "\(type.rawValue)", "status": "\(status)",
            "http_status": "\(record.httpStatus.map(String.init) ?? "-")", "attempts": "\(attempts)", "duration_ms": "\(record.durationMS)",
        ])
    }

    static func result(_ type: CRMType, _ id: Int64, _ record: AttemptRecord, action: String?) -> JSON {
        var pairs: [(String, JSON)] = [("crm_type", .string(type.rawValue)), ("status", .string(record.status))]
        if let action { pairs.append(("action", .string(action))) }
        if let recordID = record.crmRecordID { pairs.append(("crm_record_id", .string(recordID))) }
        if let error = record.error { pairs.append(("detail", .string(error))) }
        pairs.append(("log_id", .int(id)))
        return .object(pairs)
    }

    static func body(_ results: [JSON]) -> JSON {
        let success = results.filter { $0["status"]?.stringValue == "success" }.count
        let failed = results.filter { $0["status"]?.stringValue == "failed" }.count
        return .object([("results", .array(results)), ("success_count", .int(Int64(success))), ("failure_count", .int(Int64(failed)))])
    }
}

/// Wakes idle sweep threads when work is queued, instead of waiting for their next poll.
final class Wakeup: @unchecked Sendable {
    private let condition = Condition()
    private var pending = 0

    func signal() {
        condition.lock()
        pending += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until signalled or `seconds` pass.
    func wait(seconds: Double) {
        condition.lock()
        if pending == 0 { condition.wait(until: .after(seconds: seconds)) }
        pending = max(0, pending - 1)
        condition.unlock()
    }
}
