import Glibc
import CLibPQ
import CRMCore

/// One libpq connection. Not shared: the pool hands it to one thread at a time.
public final class Connection: @unchecked Sendable {
    private var conn: OpaquePointer?
    var rawConnection: OpaquePointer? { conn }
    /// Statements that completed: the pool retries work on a fresh connection only when none did.
    public private(set) var completedStatements = 0
    public let createdAt: ContinuousClock.Instant = .now

    /// Opens a connection with the session settings every statement here relies on.
    public init(dsn: String, connectTimeoutSeconds: Int) throws(DatabaseError) {
        // Our keywords first, then the DSN (expanded) so its own settings win; connect_timeout
        // is ours unless the DSN sets it. libpq's minimum useful value is 2 s.
        // TCP keepalives and a user timeout notice a database host that vanished mid-query.
        let keys = ["connect_timeout", "application_name", "keepalives", "keepalives_idle", "keepalives_interval",
                    "keepalives_count", "tcp_user_timeout", "dbname"]
        let values = [String(max(2, connectTimeoutSeconds)), "crm-service", "1", "10", "3", "3", "15000", dsn]
        let connection = keys.withCStrings { k in
            values.withCStrings { v in PQconnectdbParams(k, v, 1) }
        }
        conn = connection
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { Connection.lastError($0) } ?? "out of memory"
            if let connection { PQfinish(connection) }
            conn = nil
            throw DatabaseError(.unavailable, message: "could not connect to the database: \(message)")
        }
        // Server NOTICEs (e.g. "already exists, skipping") are not errors: keep them off stderr.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        // Everything below relies on these: schema-qualified names still need pgcrypto on the path,
        // timestamps are decoded as ISO UTC.
        _ = try execute("SET search_path TO crm, public")
        _ = try execute("SET TIME ZONE 'UTC'")
        _ = try execute("SET DateStyle TO ISO")
        // No statement of this service runs long: a stuck one fails instead of pinning a thread.
        _ = try execute("SET statement_timeout = '15s'")
        // Keep bound parameters (the encryption key) out of server logs where we are allowed to.
        _ = try? execute("SET log_parameter_max_length = 0")
    }

    deinit { if let conn { PQfinish(conn) } }

    public var isHealthy: Bool { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }

    static func lastError(_ conn: OpaquePointer) -> String {
        String(cString: PQerrorMessage(conn)).trimming(" \n")
    }

    /// Runs one statement with bound parameters (text format), returning rows as text.
    @discardableResult
    public func execute(_ sql: SQL) throws(DatabaseError) -> QueryResult {
        guard let conn else { throw DatabaseError(.unavailable, message: "connection is closed") }
        do {
            return try run(sql, on: conn)
        } catch let error where error.sqlState == "0A000" || error.sqlState == "26000" {
            // A schema change invalidated a prepared plan (or the statement is gone): prepare afresh, once.
            prepared.removeValue(forKey: StatementKey(text: sql.text))
            if let id = sql.fixedID, id < preparedFixed.count { preparedFixed[id] = nil }
            return try run(sql, on: conn)
        }
    }

    /// Statements with parameters are prepared once per connection (the SQL texts are fixed at
    /// the call sites, so this cache is bounded) and then executed by name: PostgreSQL skips
    /// parsing and planning on every later call. Parameterless ones use the simple protocol.
    private var prepared: [StatementKey: PreparedStatement] = [:]
    /// The same for `SQL.Fixed` statements, by their id: the hottest ones, found without hashing.
    private var preparedFixed: [PreparedStatement?] = []
    /// Names are never reused: one prepared again after a schema change gets a new name, as
    /// the server still holds the old one.
    private var preparedCount = 0

    /// A prepared statement's name, and its result's column names once seen: they are fixed
    /// for the statement (a schema change that alters them makes PostgreSQL refuse the plan,
    /// and the statement is prepared afresh), so they are read from libpq only once. A class:
    /// a call takes one reference to it, not one to each of its parts.
    final class PreparedStatement {
        let name: String
        /// `name` as the C string libpq takes, made once (passing the String would convert it,
        /// an allocation, on every call).
        let cName: UnsafeMutablePointer<CChar>
        var columns: [String]?

        init(name: String) {
            self.name = name
            cName = strdup(name)
        }

        deinit { free(cName) }
    }

    /// A statement's text as the cache's key, hashed by its length and a few 8-byte samples
    /// rather than all its bytes (up to ~1.5 KB, hashed on every call otherwise). Keys with
    /// the same hash still compare their whole texts.
    struct StatementKey: Hashable {
        let text: String

        func hash(into hasher: inout Hasher) {
            let utf8 = text.utf8
            hasher.combine(utf8.count)
            let sampled: Void? = utf8.withContiguousStorageIfAvailable { bytes in
                guard let base = UnsafeRawPointer(bytes.baseAddress), bytes.count >= 8 else { return }
                for quarter in 0...4 {  // the first 8 bytes, the last 8, and three between
                    hasher.combine(base.loadUnaligned(fromByteOffset: quarter * (bytes.count - 8) / 4, as: UInt64.self))
                }
            }
            if sampled == nil || utf8.count < 8 { hasher.combine(text) }
        }
    }

    private func run(_ sql: SQL, on conn: OpaquePointer) throws(DatabaseError) -> QueryResult {
        let params = sql.parameters
        guard !params.isEmpty else { return try completed(PQexec(conn, sql.text), conn, columns: nil) }
        if sql.plannedPerCall {
            // The unnamed statement: parsed and planned with these values, every call.
            let result = params.withOptionalCStrings { values in PQexecParams(conn, sql.text, Int32(params.count), nil, values, nil, nil, 0) }
            return try completed(result, conn, columns: nil)
        }
        let statement: PreparedStatement
        if let id = sql.fixedID, id < preparedFixed.count, let known = preparedFixed[id] {
            statement = known
        } else if sql.fixedID == nil, let known = prepared[StatementKey(text: sql.text)] {
            statement = known
        } else {
            preparedCount += 1
            statement = PreparedStatement(name: "crm_\(preparedCount)")
            guard let preparation = PQprepare(conn, statement.name, sql.text, Int32(params.count), nil) else {
                throw DatabaseError(.unavailable, message: Connection.lastError(conn))
            }
            defer { PQclear(preparation) }
            if PQresultStatus(preparation) != PGRES_COMMAND_OK { throw Self.error(preparation, conn) }
            remember(statement, for: sql)
        }
        let result = params.withOptionalCStrings { values in PQexecPrepared(conn, statement.cName, Int32(params.count), values, nil, nil, 0) }
        let completed = try completed(result, conn, columns: statement.columns)
        if statement.columns == nil, let first = completed.first { statement.columns = first.data.columns }
        return completed
    }

    private func remember(_ statement: PreparedStatement, for sql: SQL) {
        if let id = sql.fixedID {
            if id >= preparedFixed.count { preparedFixed += Array(repeating: nil, count: id + 1 - preparedFixed.count) }
            preparedFixed[id] = statement
        } else {
            prepared[StatementKey(text: sql.text)] = statement
        }
    }

    /// The result's rows, or the error it carries. A result with rows is kept by them and freed
    /// with the last; any other is freed here.
    private func completed(_ result: OpaquePointer?, _ conn: OpaquePointer, columns: [String]?) throws(DatabaseError) -> QueryResult {
        guard let result else {
            throw DatabaseError(.unavailable, message: Connection.lastError(conn))
        }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            completedStatements += 1
            return Self.rows(of: result, columns: columns)
        default:
            defer { PQclear(result) }
            throw Self.error(result, conn)
        }
    }

    private static func error(_ result: OpaquePointer, _ conn: OpaquePointer) -> DatabaseError {
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
        let message = primary ?? Connection.lastError(conn)
        if PQstatus(conn) != CONNECTION_OK || DatabaseError.isConnectionState(state) {
            return DatabaseError(.unavailable, sqlState: state, message: message)
        }
        return DatabaseError(.query, sqlState: state, message: message)
    }

    /// Rows that read `result` in place (it is freed with the last of them; at once when there
    /// are none). `columns`: the names when already known (a prepared statement's), else read from libpq.
    private static func rows(of result: OpaquePointer, columns known: [String]?) -> QueryResult {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        let affected = affectedRows(PQcmdTuples(result))
        guard rowCount > 0 else {
            PQclear(result)
            return QueryResult(rows: .none, affectedRows: affected)
        }
        let columns = known.flatMap { $0.count == columnCount ? $0 : nil } ?? (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        let data = ResultData(columns: columns, result: result)
        return QueryResult(rows: Rows(data: data, count: rowCount), affectedRows: affected)
    }

    /// PQcmdTuples' digits (0 when the command reports no count).
    static func affectedRows(_ text: UnsafePointer<CChar>?) -> Int {
        guard var p = text else { return 0 }
        var n = 0
        while p.pointee >= 0x30 && p.pointee <= 0x39 {
            n = n &* 10 &+ Int(p.pointee - 0x30)
            p += 1
        }
        return n
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    public func transaction<T>(_ body: (Connection) throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body(self)
            try execute("COMMIT")
            return value
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
    }
}

extension Array where Element == String {
    func withCStrings<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        let owned = map { strdup($0) }
        defer { owned.forEach { free($0) } }
        var pointers: [UnsafePointer<CChar>?] = owned.map { UnsafePointer($0) }
        pointers.append(nil)
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

extension Array where Element == String? {
    /// The values as NUL-terminated C strings (nil stays NULL), all in one temporary buffer:
    /// on the stack when small, as for most statements; on the heap for big ones (a batch of
    /// JSON bodies), which would otherwise leave a thread's stack resident at their size.
    func withOptionalCStrings<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        if isEmpty { return body(nil) }
        // Read through one buffer pointer, by index: iterating the array (and `withUTF8` on a
        // copy of each String) took and dropped ~15 references per statement.
        return withUnsafeBufferPointer { values in
            var size = 0
            for i in values.indices { size += (values[i]?.utf8.count ?? 0) + 1 }
            if size > 2048 {
                var heap = [CChar](repeating: 0, count: size)
                return heap.withUnsafeMutableBufferPointer { Self.write(values, into: $0, body) }
            }
            return withUnsafeTemporaryAllocation(of: CChar.self, capacity: size) { Self.write(values, into: $0, body) }
        }
    }

    private static func write<R>(_ values: UnsafeBufferPointer<String?>, into storage: UnsafeMutableBufferPointer<CChar>,
                                 _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: values.count) { pointers in
            var written = 0
            for i in values.indices {
                guard let utf8 = values[i]?.utf8 else { pointers[i] = nil; continue }
                let start = storage.baseAddress! + written
                let copied: Void? = utf8.withContiguousStorageIfAvailable { bytes in
                    guard let source = bytes.baseAddress else { return }  // "" has no storage
                    UnsafeMutableRawPointer(start).copyMemory(from: source, byteCount: bytes.count)
                }
                if copied == nil { _ = UnsafeMutableBufferPointer(start: start, count: utf8.count).withMemoryRebound(to: UInt8.self) { $0.initialize(from: utf8) } }
                written += utf8.count
                storage[written] = 0
                written += 1
                pointers[i] = UnsafePointer(start)
            }
            return body(UnsafePointer(pointers.baseAddress))
        }
    }
}

extension Connection {
    /// Runs a multi-statement script with no parameters (schema files only, never user input).
    func executeScript(_ script: String) throws(DatabaseError) {
        guard let conn = rawConnection else { throw DatabaseError(.unavailable, message: "connection is closed") }
        guard let result = PQexec(conn, script) else { throw DatabaseError(.unavailable, message: Connection.lastError(conn)) }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY else {
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) } ?? Connection.lastError(conn)
            throw DatabaseError(PQstatus(conn) == CONNECTION_OK ? .query : .unavailable, sqlState: state, message: message)
        }
    }
}
