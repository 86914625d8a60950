import Threads
import Synchronization

/// A bounded pool of connections. A connection is held only for the statements that need
/// it (never across a CRM call); when the database is gone, callers get `.unavailable`
/// within the connect timeout, and the pool heals itself when it comes back.
public final class Pool: @unchecked Sendable {
    public let dsn: String
    public let size: Int
    public let connectTimeoutSeconds: Int

    /// Lane 0: request threads waiting; lane 1: background work waiting.
    private let condition = Condition(lanes: 2)
    private var idle: [Connection] = []
    private var open = 0
    private var requestsWaiting = 0
    private var backgroundWaiting = 0

    /// Who is asking: a request being answered, or background work (the retry sweep), which
    /// gets a connection only when no request is waiting for one, so that a big backlog being
    /// delivered cannot starve the requests.
    public enum Priority: Sendable { case request, background }

    public init(dsn: String, size: Int, connectTimeoutSeconds: Int) {
        self.dsn = dsn
        self.size = max(1, size)
        self.connectTimeoutSeconds = max(1, connectTimeoutSeconds)
    }

    public struct Usage: Sendable {
        public let open: Int, idle: Int, size: Int
        /// Callers waiting for a connection, by priority.
        public let requestsWaiting: Int, backgroundWaiting: Int
    }
    public var usage: Usage {
        condition.lock(); defer { condition.unlock() }
        return Usage(open: open, idle: idle.count, size: size, requestsWaiting: requestsWaiting, backgroundWaiting: backgroundWaiting)
    }

    /// Runs `body` with a connection. A connection that turns out broken is dropped; if it was
    /// a stale pooled one that failed before any statement of `body` completed, the work is
    /// retried once on a fresh connection (nothing of it was done). Once a statement has
    /// completed, a failure is the caller's to see: the work is never repeated.
    public func withConnection<T>(priority: Priority = .request, _ body: (Connection) throws -> T) throws -> T {
        var (connection, reused) = try acquire(priority: priority)
        let completedBefore = connection.completedStatements
        do {
            let value = try body(connection)
            release(connection)
            return value
        } catch let error as DatabaseError where error.kind == .unavailable && reused && !connection.isHealthy
            && connection.completedStatements == completedBefore {
            discard(connection)
            (connection, reused) = try acquire(fresh: true, priority: priority)
            do {
                let value = try body(connection)
                release(connection)
                return value
            } catch {
                connection.isHealthy ? release(connection) : discard(connection)
                throw error
            }
        } catch {
            connection.isHealthy ? release(connection) : discard(connection)
            throw error
        }
    }

    public func transaction<T>(priority: Priority = .request, _ body: (Connection) throws -> T) throws -> T {
        try withConnection(priority: priority) { try $0.transaction(body) }
    }

    private func acquire(fresh: Bool = false, priority: Priority) throws(DatabaseError) -> (Connection, Bool) {
        // Background work can wait longer than a request would (it yields to requests, and a
        // delivery that gives up here counts as a failed attempt); its claim lasts far longer.
        let patience = priority == .request ? connectTimeoutSeconds : max(30, connectTimeoutSeconds)
        let deadline = Deadline.after(seconds: Double(patience))
        let lane = priority == .request ? 0 : 1
        condition.lock()
        while true {
            if priority == .background && requestsWaiting > 0 {
                // Requests first: wait for a turn (woken when no request is waiting).
                backgroundWaiting += 1
                let woken = condition.wait(lane: lane, until: deadline)
                backgroundWaiting -= 1
                guard woken else {
                    condition.unlock()
                    throw DatabaseError(.unavailable, message: "no database connection free within \(patience) s")
                }
                continue
            }
            if !fresh, let connection = idle.popLast() {
                condition.unlock()
                return (connection, true)
            }
            if open < size {
                open += 1
                condition.unlock()
                do {
                    return (try Connection(dsn: dsn, connectTimeoutSeconds: connectTimeoutSeconds), false)
                } catch {
                    condition.lock(); open -= 1; wakeOne(); condition.unlock()
                    throw error
                }
            }
            if fresh, let stale = idle.popLast() {
                // Make room for the fresh connection by dropping an idle one.
                open -= 1
                _ = stale
                continue
            }
            if priority == .request { requestsWaiting += 1 } else { backgroundWaiting += 1 }
            let woken = condition.wait(lane: lane, until: deadline)
            if priority == .request { requestsWaiting -= 1 } else { backgroundWaiting -= 1 }
            guard woken else {
                condition.unlock()
                throw DatabaseError(.unavailable, message: "no database connection free within \(patience) s")
            }
        }
    }

    /// Wakes one waiter for a freed connection (or slot): a request if one waits, else background work.
    private func wakeOne() {
        if requestsWaiting > 0 { condition.signal(lane: 0) } else { condition.signal(lane: 1) }
    }

    private func release(_ connection: Connection) {
        condition.lock()
        idle.append(connection)
        wakeOne()
        condition.unlock()
    }

    private func discard(_ connection: Connection) {
        condition.lock()
        open -= 1
        // Other idle connections are probably dead too (server restart): drop them so the
        // next callers connect afresh instead of failing one by one.
        if !connection.isHealthy {
            open -= idle.count
            idle.removeAll()
        }
        wakeOne()
        condition.unlock()
    }
}
