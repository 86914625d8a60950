import CRMCore

/// A stored integration as the API shows it: never with credentials.
public struct IntegrationRecord: Sendable {
    public var crmType: CRMType
    public var isActive: Bool
    public var status: String
    public var settings: IntegrationSettings
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    public var lastSyncAt: Timestamp?
    public var lastSyncStatus: String?
}

/// Integrations per user. Credentials go in through `pgp_sym_encrypt` with the key bound as a
/// parameter and come out only through `credentials(...)`; every query is scoped by user id.
public struct IntegrationStore: Sendable {
    let pool: Pool
    let key: Secret

    public init(pool: Pool, encryptionKey: Secret) {
        self.pool = pool
        self.key = encryptionKey
    }

    /// pgcrypto options for stored credentials: AES-256, and the least key stretching (1,024
    /// s2k rounds instead of pgcrypto's random 65,536–253,952). Stretching protects guessable
    /// passphrases; CRM_ENCRYPTION_KEY is a 32-character random secret, where it adds nothing
    /// but ~230 µs of database CPU to every decrypt (one per delivery).
    public static let encryptionOptions = "cipher-algo=aes256, s2k-count=1024"

    /// What every query of an integration selects, in this order (`record` reads by position).
    static let columns = ["crm_type", "is_active", "status", "settings", "created_at", "updated_at", "last_sync_at", "last_sync_status"]

    /// Connects (or reconnects): replaces credentials and settings, clears an auth_error and the
    /// wait a rate-limiting CRM asked for (new credentials may be another account's).
    public func save(user: UserID, credentials: Credentials, settings: IntegrationSettings) throws -> IntegrationRecord {
        let sql: SQL = """
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials, settings)
            VALUES (\(user), \(credentials.crmType), pgp_sym_encrypt(\(credentials.storageJSON), \(key), \(Self.encryptionOptions)), \(settings.json))
            ON CONFLICT (user_id, crm_type) DO UPDATE
               SET credentials = EXCLUDED.credentials, settings = EXCLUDED.settings, is_active = true,
                   status = 'connected', status_detail = NULL, rate_limited_until = NULL, updated_at = now()
            RETURNING crm_type, is_active, status, settings, created_at, updated_at, last_sync_at, last_sync_status
            """
        let result = try pool.withConnection { try $0.execute(sql) }
        guard let row = result.first else { throw DatabaseError(.decoding, message: "upsert returned no row") }
        return try Self.record(row)
    }

    public func find(user: UserID, type: CRMType) throws -> IntegrationRecord? {
        let sql: SQL = """
            SELECT crm_type, is_active, status, settings, created_at, updated_at, last_sync_at, last_sync_status
              FROM crm.crm_integrations WHERE user_id = \(user) AND crm_type = \(type)
            """
        return try pool.withConnection { try $0.execute(sql) }.first.map(Self.record)
    }

    /// The list statement, fixed: `GET /crm/list` is the service's most frequent request
    /// (bench/floor/floor.c runs the same text; a test keeps them equal).
    static let listStatement = SQL.Fixed("""
        SELECT crm_type, is_active, status, settings, created_at, updated_at, last_sync_at, last_sync_status
          FROM crm.crm_integrations WHERE user_id = $1 ORDER BY crm_type
        """)

    public func list(user: UserID) throws -> [IntegrationRecord] {
        let sql = Self.listStatement(user.value)
        let rows = try pool.withConnection { try $0.execute(sql) }.rows
        var records: [IntegrationRecord] = []
        records.reserveCapacity(rows.count)
        for row in rows {
            if let record = try? Self.record(row) { records.append(record) }
        }
        return records
    }

    /// Destroys the stored credentials and cancels pending deliveries; logs are kept. A delivery
    /// in flight right now still records its outcome (the CRM may already have the data).
    /// Returns false when the user had no such integration.
    public func delete(user: UserID, type: CRMType) throws -> Bool {
        try pool.transaction { c in
            let deleted = try c.execute("DELETE FROM crm.crm_integrations WHERE user_id = \(user) AND crm_type = \(type)")
            guard deleted.affectedRows > 0 else { return false }
            try c.execute("""
                UPDATE crm.crm_sync_logs
                   SET status = 'cancelled', error = 'integration disconnected', next_attempt_at = NULL, updated_at = now()
                 WHERE user_id = \(user) AND crm_type = \(type) AND status IN ('pending', 'queued', 'retrying')
                """)
            return true
        }
    }

    /// The decrypted credentials, for a CRM call. nil when not connected.
    public func credentials(user: UserID, type: CRMType) throws -> Credentials? {
        let sql: SQL = """
            SELECT pgp_sym_decrypt(credentials, \(key)) AS plain
              FROM crm.crm_integrations WHERE user_id = \(user) AND crm_type = \(type)
            """
        guard let text = try pool.withConnection({ try $0.execute(sql) }).first?.string("plain") else { return nil }
        guard let json = try? JSONParser.parse(text), case let .success(credentials) = Credentials.decode(json, for: type, at: []) else {
            throw DatabaseError(.decoding, message: "stored credentials for \(type.rawValue) are not readable")
        }
        return credentials
    }

    /// Counts of this integration's sync logs by status.
    public func stats(user: UserID, type: CRMType) throws -> [String: Int] {
        let sql: SQL = """
            SELECT status, count(*) AS n FROM crm.crm_sync_logs
             WHERE user_id = \(user) AND crm_type = \(type) GROUP BY status
            """
        var counts: [String: Int] = [:]
        for row in try pool.withConnection({ try $0.execute(sql) }).rows {
            if let status = row.string("status") { counts[status] = row.int("n") ?? 0 }
        }
        return counts
    }

    /// The end of the wait the CRM asked for when it last refused a call of this integration for
    /// its rate limit, while that wait lasts (nil when there is none, or it is over).
    public func rateLimitedUntil(user: UserID, type: CRMType) throws -> Timestamp? {
        let sql: SQL = """
            SELECT rate_limited_until FROM crm.crm_integrations
             WHERE user_id = \(user) AND crm_type = \(type) AND rate_limited_until > now()
            """
        return try pool.withConnection { try $0.execute(sql) }.first?.timestamp("rate_limited_until")
    }

    /// A row of `columns`, read by position: this runs for every integration of every list.
    static func record(_ row: Row) throws -> IntegrationRecord {
        assert(row.data.columns == columns, "the query selects IntegrationStore.columns in order")
        guard let type = row.withValue(at: 0, CRMType.init(utf8:)) ?? nil else {
            throw DatabaseError(.decoding, message: "unknown crm_type in database")
        }
        return IntegrationRecord(
            crmType: type,
            isActive: row.bool(at: 1) ?? true,
            status: row.string(at: 2) ?? "connected",
            settings: row.withValue(at: 3) { IntegrationSettings.fromStored(utf8: $0, for: type) } ?? .defaults,
            createdAt: row.timestamp(at: 4) ?? Timestamp(),
            updatedAt: row.timestamp(at: 5) ?? Timestamp(),
            lastSyncAt: row.timestamp(at: 6),
            lastSyncStatus: row.string(at: 7))
    }
}

/// Re-encryption of every stored credential from one key to another.
public enum KeyRotation {
    public enum Failure: Error, CustomStringConvertible {
        case wrongCurrentKey
        public var description: String {
            "the current key does not decrypt every stored credential; nothing was changed"
        }
    }

    /// In one transaction: every row is decrypted with `current` and encrypted with `new`. One row
    /// the current key cannot decrypt aborts the statement, so a wrong key changes nothing.
    public static func rotate(on connection: Connection, current: Secret, new: Secret) throws -> Int {
        do {
            return try connection.transaction { c in
                let rows = try c.execute("""
                    UPDATE crm.crm_integrations
                       SET credentials = pgp_sym_encrypt(pgp_sym_decrypt(credentials, \(current)), \(new), \(IntegrationStore.encryptionOptions))
                    """).affectedRows
                // Prove the new key reads every row back before committing.
                let readable = try c.execute("""
                    SELECT count(pgp_sym_decrypt(credentials, \(new))) AS n FROM crm.crm_integrations
                    """).first?.int("n") ?? -1
                guard readable == rows else { throw DatabaseError(.query, message: "re-encrypted rows do not decrypt with the new key") }
                return rows
            }
        } catch let error as DatabaseError where error.isDecryptionFailure {
            throw Failure.wrongCurrentKey
        }
    }
}
