import Threads
import Synchronization

/// A bounded pool of connections. A connection is held only for the statements that need
/// it (never across a CRM call); when the database is gone, callers get `.unavailable`
/// within the connect timeout, and the pool heals itself when it comes back.
public final class Pool: @unchecked Sendable {
    public let dsn: String
    public let size: Int
    public let connectTimeoutSeconds: Int

    private let condition = Condition()
    private var idle: [Connection] = []
    private var open = 0

    public init(dsn: String, size: Int, connectTimeoutSeconds: Int) {
        self.dsn = dsn
        self.size = max(1, size)
        self.connectTimeoutSeconds = max(1, connectTimeoutSeconds)
    }

    public struct Usage: Sendable { public let open: Int; public let idle: Int; public let size: Int }
    public var usage: Usage {
        condition.lock(); defer { condition.unlock() }
        return Usage(open: open, idle: idle.count, size: size)
    }

    /// Runs `body` with a connection. A connection that turns out broken is dropped; if it was
    /// a stale pooled one that failed before any statement of `body` completed, the work is
    /// retried once on a fresh connection (nothing of it was done). Once a statement has
    /// completed, a failure is the caller's to see: the work is never repeated.
    public func withConnection<T>(_ body: (Connection) throws -> T) throws -> T {
        var (connection, reused) = try acquire()
        let completedBefore = connection.completedStatements
        do {
            let value = try body(connection)
            release(connection)
            return value
        } catch let error as DatabaseError where error.kind == .unavailable && reused && !connection.isHealthy
            && connection.completedStatements == completedBefore {
            discard(connection)
            (connection, reused) = try acquire(fresh: true)
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

    public func transaction<T>(_ body: (Connection) throws -> T) throws -> T {
        try withConnection { try $0.transaction(body) }
    }

    private func acquire(fresh: Bool = false) throws(DatabaseError) -> (Connection, Bool) {
        let deadline = Deadline.after(seconds: Double(connectTimeoutSeconds))
        condition.lock()
        while true {
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
                    condition.lock(); open -= 1; condition.signal(); condition.unlock()
                    throw error
                }
            }
            if fresh, let stale = idle.popLast() {
                // Make room for the fresh connection by dropping an idle one.
                open -= 1
                _ = stale
                continue
            }
            guard condition.wait(until: deadline) else {
                condition.unlock()
                throw DatabaseError(.unavailable, message: "no database connection free within \(connectTimeoutSeconds) s")
            }
        }
    }

    private func release(_ connection: Connection) {
        condition.lock()
        idle.append(connection)
        condition.signal()
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
        condition.signal()
        condition.unlock()
    }
}
