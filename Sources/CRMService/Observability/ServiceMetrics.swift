import CRMCore
import CRMStore
import Prometheus
import Glibc
import Synchronization

/// The service's metrics, kept in a Prometheus registry that `/metrics` renders. Each worker
/// process has its own registry (Prometheus sums across them). The registry's own types are
/// used directly: through swift-metrics' `Timer`, a request's latency went through an
/// existential and an unspecialised generic histogram (~1,100 instructions a request).
public final class ServiceMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    /// Every series' name and `# HELP` text (one text per name: the registry refuses two).
    /// Computed: the descriptor type is not Sendable, and it is read only when a handle is made.
    enum Names {
        private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "crm", metricName: metric, unitName: unit, helpText: help)
        }
        static var requests: MetricNameDescriptor { name("http_requests", "total", "HTTP requests answered, by route pattern and status.") }
        static var requestDuration: MetricNameDescriptor { name("http_request_duration", "seconds", "Time to answer an HTTP request inside the worker, by route pattern.") }
        static var requestsInProgress: MetricNameDescriptor { name("http_requests_in_progress", "", "HTTP requests being answered now (compare with FCGI_MAX_REQUESTS).") }
        static var syncs: MetricNameDescriptor { name("syncs", "total", "Delivery attempts to a CRM, by CRM type and outcome.") }
        static var heldBack: MetricNameDescriptor { name("deliveries_held_back", "total", "Deliveries put off without a call, their CRM rate-limiting the integration, by CRM type.") }
        static var crmCall: MetricNameDescriptor { name("call_duration", "seconds", "One delivery attempt's HTTP calls to a CRM, by CRM type.") }
        static var outboundCallsInFlight: MetricNameDescriptor { name("outbound_calls_in_flight", "", "Calls to CRMs waiting for an answer now.") }
        static var retryBacklog: MetricNameDescriptor { name("sync_retry_backlog", "", "Sync log rows not yet delivered: queued, waiting for a retry or in flight (all workers).") }
        static var databaseWrite: MetricNameDescriptor { name("db_write_duration", "seconds", "One group-commit batch: its statement and commit, with the wait for a connection.") }
        static var databaseWriteBatch: MetricNameDescriptor { name("db_write_batch_size", "", "Items written per group-commit batch.") }
        static var poolConnections: MetricNameDescriptor { name("db_pool_connections", "", "Database connections of this worker, by state.") }
        static var poolSize: MetricNameDescriptor { name("db_pool_size", "", "The most database connections this worker opens (DB_POOL_SIZE).") }
    }

    /// Latency buckets (seconds), for requests, CRM calls and database writes alike.
    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]
    /// Items per group-commit batch: powers of two up to the largest batch (64).
    static let batchSizeBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64]

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        crmCallHistograms = Dictionary(uniqueKeysWithValues: CRMType.allCases.map {
            ($0, registry.makeDurationHistogram(descriptor: Names.crmCall, labels: [("crm_type", $0.rawValue)], buckets: Self.durationBuckets))
        })
        heldBackCounters = Dictionary(uniqueKeysWithValues: CRMType.allCases.map {
            ($0, registry.makeCounter(descriptor: Names.heldBack, labels: [("crm_type", $0.rawValue)]))
        })
    }

    private let crmCallHistograms: [CRMType: DurationHistogram]
    private let heldBackCounters: [CRMType: Counter]

    /// A delivery put off without a call: its CRM is rate-limiting the integration.
    public func heldBack(_ type: CRMType) {
        heldBackCounters[type]?.increment()
    }

    /// One delivery attempt's calls to a CRM (all the HTTP requests it made), by CRM type:
    /// how slow each CRM is, apart from the worker's own time.
    public func crmCall(_ type: CRMType, duration: Duration) {
        crmCallHistograms[type]?.record(duration)
    }

    /// The metrics of one group-commit writer (`writer`: what it writes).
    public func databaseWriter(_ writer: String) -> DatabaseWriterMetrics {
        DatabaseWriterMetrics(
            duration: registry.makeDurationHistogram(descriptor: Names.databaseWrite, labels: [("writer", writer)], buckets: Self.durationBuckets),
            batchSize: registry.makeValueHistogram(descriptor: Names.databaseWriteBatch, labels: [("writer", writer)], buckets: Self.batchSizeBuckets))
    }

    /// One batch written: how long its statement and commit took (with the wait for a pool
    /// connection), and how many items shared them.
    public struct DatabaseWriterMetrics: Sendable {
        let duration: DurationHistogram
        let batchSize: ValueHistogram
        public func batch(items: Int, duration: Duration) {
            self.duration.record(duration)
            batchSize.record(Double(items))
        }
    }

    /// One HTTP request: counted by route and status, its latency in the histogram.
    public func request(route: RouteLabel, status: Int, duration: Duration) {
        let handles = requestHandles(route: route, status: status)
        handles.count.increment()
        handles.latency.record(duration)
    }

    /// The handles per (route, status), made once: the registry lookup behind a new handle
    /// (labels hashed, a lock, a dictionary) is far dearer than this one. Routes and statuses
    /// are a small fixed set, so the caches stay small.
    private func requestHandles(route: RouteLabel, status: Int) -> RequestHandles {
        // Each request thread keeps its own table of the handles it used: no lock to contend
        // for, and no hashing (a route's few statuses are scanned).
        let local: ThreadCache
        if let raw = pthread_getspecific(threadCacheKey) {
            local = Unmanaged<ThreadCache>.fromOpaque(raw).takeUnretainedValue()
        } else {
            local = ThreadCache()
            pthread_setspecific(threadCacheKey, Unmanaged.passRetained(local).toOpaque())
        }
        if let known = local.byRoute[route.index].first(where: { $0.status == status }) { return known }
        let handles = sharedRequestHandles(route: route, status: status)
        local.byRoute[route.index].append(handles)
        return handles
    }

    private final class ThreadCache {
        /// By `RouteLabel.index`: the handles this thread has used, one per status seen.
        var byRoute = [[RequestHandles]](repeating: [], count: RouteLabel.count)
    }
    private let threadCacheKey: pthread_key_t = {
        var key = pthread_key_t()
        // A thread's cache is released when the thread ends.
        pthread_key_create(&key) { raw in raw.map { Unmanaged<ThreadCache>.fromOpaque($0).release() } }
        return key
    }()

    deinit { pthread_key_delete(threadCacheKey) }

    private func sharedRequestHandles(route: RouteLabel, status: Int) -> RequestHandles {
        let key = RequestKey(route: route.index, status: status)
        if let known = requestCache.withLock({ $0[key] }) { return known }
        let made = RequestHandles(
            status: status,
            count: registry.makeCounter(descriptor: Names.requests, labels: [("route", route.name), ("status", String(status))]),
            latency: registry.makeDurationHistogram(descriptor: Names.requestDuration, labels: [("route", route.name)], buckets: Self.durationBuckets))
        requestCache.withLock { $0[key] = made }
        return made
    }

    private struct RequestKey: Hashable { let route: Int; let status: Int }
    private struct RequestHandles: Sendable { let status: Int; let count: Counter; let latency: DurationHistogram }
    private let requestCache = Mutex<[RequestKey: RequestHandles]>([:])

    /// One delivery attempt's outcome.
    public func sync(crmType: String, status: String) {
        let key = SyncKey(crmType: crmType, status: status)
        if let counter = syncCache.withLock({ $0[key] }) { return counter.increment() }
        let counter = registry.makeCounter(descriptor: Names.syncs, labels: [("crm_type", crmType), ("status", status)])
        syncCache.withLock { $0[key] = counter }
        counter.increment()
    }

    private struct SyncKey: Hashable { let crmType: String; let status: String }
    private let syncCache = Mutex<[SyncKey: Counter]>([:])

    /// Requests being handled right now (most of them waiting on a CRM): compare with FCGI_MAX_REQUESTS.
    let requestsInProgress = Atomic<Int>(0)

    /// The Prometheus text, with the gauges read now (backlog, pool use).
    public func render(pool: Pool, backlog: Int?, crmCallsInFlight: Int) -> [UInt8] {
        let usage = pool.usage
        func gauge(_ name: MetricNameDescriptor, _ value: Int, labels: [(String, String)] = []) {
            registry.makeGauge(descriptor: name, labels: labels).set(to: Double(value))
        }
        gauge(Names.requestsInProgress, requestsInProgress.load(ordering: .relaxed))
        gauge(Names.outboundCallsInFlight, crmCallsInFlight)
        gauge(Names.poolConnections, usage.open, labels: [("state", "open")])
        gauge(Names.poolConnections, usage.idle, labels: [("state", "idle")])
        gauge(Names.poolSize, usage.size)
        if let backlog { gauge(Names.retryBacklog, backlog) }
        return registry.emitToBuffer()
    }
}
