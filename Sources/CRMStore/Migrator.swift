import CRMCore

/// Brings a new, legacy or current database to the current schema, in one transaction,
/// recording what it applied. Safe to run again and from several hosts at once.
public struct Migrator: Sendable {
    public struct Report: Sendable, Equatable {
        public var created: Bool
        public var applied: [String]
    }

    public let schema: String
    public let migrations: [(version: String, sql: String)]

    public init(schema: String, migrations: [(version: String, sql: String)]) {
        self.schema = schema
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// The schema and migrations compiled into this binary.
    public static let embedded = Migrator(schema: EmbeddedSQL.schema, migrations: EmbeddedSQL.migrations)

    public func migrate(_ connection: Connection) throws -> Report {
        try connection.transaction { c in
            // One migrator at a time, whichever host it runs on.
            try c.execute("SELECT pg_advisory_xact_lock(7412001)")
            try c.execute("CREATE SCHEMA IF NOT EXISTS crm")
            try c.execute("""
                CREATE TABLE IF NOT EXISTS crm.schema_migrations (
                    version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let done = Set(try c.execute("SELECT version FROM crm.schema_migrations").rows.compactMap { $0.string("version") })
            let hasTables = try c.execute("SELECT to_regclass('crm.crm_integrations') IS NOT NULL AS present").first?.bool("present") ?? false

            if !hasTables {
                // A new database: the full schema, and every migration counted as applied.
                try c.executeScript(schema)
                for m in migrations { try record(m.version, on: c) }
                return Report(created: true, applied: [])
            }
            var applied: [String] = []
            for m in migrations where !done.contains(m.version) {
                try c.executeScript(m.sql)
                try record(m.version, on: c)
                applied.append(m.version)
            }
            return Report(created: false, applied: applied)
        }
    }

    private func record(_ version: String, on c: Connection) throws {
        try c.execute("INSERT INTO crm.schema_migrations (version) VALUES (\(version)) ON CONFLICT DO NOTHING")
    }
}
