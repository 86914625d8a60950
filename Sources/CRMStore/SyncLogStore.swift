import CRMCore

/// Reads of the audit log, always scoped to one user.
public struct SyncLogStore: Sendable {
    let pool: Pool

    public init(pool: Pool) { self.pool = pool }

    static let listColumns = """
        id, crm_type, operation, status, attempts, http_status, error, duration_ms, crm_record_id,
        created_at, updated_at, next_attempt_at
        """

    /// Newest first; `next_before_id` is set when there may be more.
    public func list(user: UserID, query: LogQuery) throws -> (logs: [JSON], nextBeforeID: Int64?) {
        let rows = try pool.withConnection { try $0.execute(Self.listSQL(user: user, query: query)) }.rows
        let page = rows.prefix(query.limit).map { Self.logJSON($0, detailed: false) }
        let next = rows.count > query.limit ? rows[query.limit - 1].int64("id") : nil
        return (Array(page), next)
    }

    /// The page statement (the tests EXPLAIN it), planned for its values on every call. Its
    /// generic plan, which a prepared statement takes after five calls, can only filter by the
    /// page's end (`$n IS NULL OR id < $n`): a deep page of a large log read every newer row.
    static func listSQL(user: UserID, query: LogQuery) -> SQL {
        var sql: SQL = """
            SELECT id, crm_type, operation, status, attempts, http_status, error, duration_ms, crm_record_id,
                   created_at, updated_at, next_attempt_at
              FROM crm.crm_sync_logs
             WHERE user_id = \(user)
               AND (\(query.crmType)::text IS NULL OR crm_type = \(query.crmType))
               AND (\(query.status)::text IS NULL OR status = \(query.status))
               AND (\(query.operation)::text IS NULL OR operation = \(query.operation))
               AND (\(query.beforeID)::bigint IS NULL OR id < \(query.beforeID))
             ORDER BY id DESC
             LIMIT \(query.limit + 1)
            """
        sql.plannedPerCall = true
        return sql
    }

    public func get(user: UserID, id: Int64) throws -> JSON? {
        let sql: SQL = """
            SELECT id, crm_type, operation, status, attempts, http_status, error, duration_ms, crm_record_id,
                   created_at, updated_at, next_attempt_at, request, response
              FROM crm.crm_sync_logs WHERE user_id = \(user) AND id = \(id)
            """
        return try pool.withConnection { try $0.execute(sql) }.first.map { Self.logJSON($0, detailed: true) }
    }

    static func logJSON(_ row: Row, detailed: Bool) -> JSON {
        var pairs: [(String, JSON)] = [
            ("id", row.int64("id").map(JSON.int) ?? .null),
            ("crm_type", JSON(row.string("crm_type"))),
            ("operation", JSON(row.string("operation"))),
            ("status", JSON(row.string("status"))),
            ("attempts", JSON(row.int("attempts") ?? 0)),
            ("http_status", JSON(row.int("http_status"))),
            ("error", JSON(row.string("error"))),
            ("duration_ms", JSON(row.int("duration_ms"))),
            ("crm_record_id", JSON(row.string("crm_record_id"))),
            ("created_at", JSON(row.timestamp("created_at"))),
            ("updated_at", JSON(row.timestamp("updated_at"))),
            ("next_attempt_at", JSON(row.timestamp("next_attempt_at"))),
        ]
        if detailed {
            pairs.append(("request", row.json("request") ?? .null))
            pairs.append(("response", row.json("response") ?? .null))
        }
        return .object(pairs)
    }
}
