import CRMConnectors
import CRMCore
import CRMStore
import HTTPClient
import Logging
import Threads

/// Everything a handler needs, built once at start-up and shared by all request threads and tasks.
public struct ServiceContext: Sendable {
    public let config: Config
    public let pool: Pool
    public let integrations: IntegrationStore
    public let logs: SyncLogStore
    public let connectors: ConnectorRegistry
    /// The one client all connectors share (its calls in flight are a metric).
    public let httpClient: HTTPClient
    public let logger: Logger
    public let metrics: ServiceMetrics
    /// Runs the database calls of requests that wait on a CRM (those run as tasks, and a task
    /// must not block its thread): one thread per pooled connection.
    public let database: BlockingExecutor
    /// Requests doing work at once at most, 2 × FCGI_THREADS: those waiting on a CRM don't
    /// count (see `ActiveLimit`). More only queue inside the worker and stretch the tail.
    public let active: ActiveLimit

    public init(config: Config, logger: Logger) {
        self.config = config
        self.logger = logger
        pool = Pool(dsn: config.databaseDSN, size: config.dbPoolSize, connectTimeoutSeconds: config.dbConnectTimeoutSeconds)
        integrations = IntegrationStore(pool: pool, encryptionKey: config.encryptionKey)
        logs = SyncLogStore(pool: pool)
        httpClient = HTTPClient(timeoutSeconds: config.crmHTTPTimeoutSeconds, blockPrivateAddresses: !config.allowPrivateURLs)
        connectors = ConnectorRegistry(client: httpClient, endpoints: config.endpoints)
        metrics = ServiceMetrics()
        database = BlockingExecutor(threads: config.dbPoolSize)
        active = ActiveLimit(limit: 2 * config.fcgiThreads)
    }
}
