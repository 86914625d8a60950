import CRMCore

/// `Idempotency-Key`: the first response to a (user, key) is kept for 24 h and replayed.
public struct IdempotencyStore: Sendable {
    let pool: Pool

    public init(pool: Pool) { self.pool = pool }

    public enum Begin: Sendable {
        /// First use: go ahead, then `finish`.
        case proceed
        /// Seen before: this is the first response.
        case replay(status: Int, body: JSON)
        /// The first request with this key has not finished yet.
        case inProgress
        /// The key was used for a different request.
        case mismatch
    }

    public func begin(user: UserID, key: String, requestHash: String) throws -> Begin {
        try pool.transaction { c in
            // Keys older than 24 h are forgotten.
            try c.execute("DELETE FROM crm.crm_idempotency_keys WHERE user_id = \(user) AND key = \(key) AND created_at < now() - interval '24 hours'")
            let inserted = try c.execute("""
                INSERT INTO crm.crm_idempotency_keys (user_id, key, request_hash) VALUES (\(user), \(key), \(requestHash))
                ON CONFLICT (user_id, key) DO NOTHING
                """).affectedRows
            if inserted > 0 { return .proceed }
            guard let row = try c.execute("""
                SELECT request_hash, response_status, response FROM crm.crm_idempotency_keys WHERE user_id = \(user) AND key = \(key)
                """).first else { return .inProgress }
            guard row.string("request_hash") == requestHash else { return .mismatch }
            guard let status = row.int("response_status"), let body = row.json("response") else { return .inProgress }
            return .replay(status: status, body: body)
        }
    }

    public func finish(user: UserID, key: String, status: Int, body: JSON) throws {
        try finish(user: user, key: key, status: status, body: body.jsonString)
    }

    /// The same with the body already written as JSON text.
    public func finish(user: UserID, key: String, status: Int, body: String) throws {
        _ = try pool.withConnection {
            try $0.execute("""
                UPDATE crm.crm_idempotency_keys SET response_status = \(status), response = \(body)
                 WHERE user_id = \(user) AND key = \(key)
                """)
        }
    }

    /// The request failed before anything was accepted: the key may be used again.
    public func abandon(user: UserID, key: String) throws {
        _ = try pool.withConnection {
            try $0.execute("DELETE FROM crm.crm_idempotency_keys WHERE user_id = \(user) AND key = \(key) AND response IS NULL")
        }
    }
}
