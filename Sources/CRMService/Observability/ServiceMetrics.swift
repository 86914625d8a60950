import CRMCore
import CRMStore
import Metrics
import Prometheus
import Glibc
import Synchronization

/// The service's metrics, recorded through swift-metrics into a Prometheus registry that
/// `/metrics` renders. Each worker process has its own registry (Prometheus sums across them).
public final class ServiceMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        ]
        // Items per group-commit batch: powers of two up to the largest batch (64).
        factory.valueHistogramBuckets["crm_db_write_batch_size"] = [1, 2, 4, 8, 16, 32, 64]
        self.factory = factory
        crmCallTimers = Dictionary(uniqueKeysWithValues: CRMType.allCases.map {
            ($0, TimerHandle(Timer(label: "crm_call_duration_seconds", dimensions: [("crm_type", $0.rawValue)], factory: factory)))
        })
    }

    /// A swift-metrics handle made once (see `requestHandles`); they are not marked Sendable.
    fileprivate struct TimerHandle: @unchecked Sendable {
        let timer: Metrics.Timer
        init(_ timer: Metrics.Timer) { self.timer = timer }
        func record(_ duration: Duration) { timer.record(duration: duration) }
    }

    private let crmCallTimers: [CRMType: TimerHandle]

    /// One delivery attempt's calls to a CRM (all the HTTP requests it made), by CRM type:
    /// how slow each CRM is, apart from the worker's own time.
    public func crmCall(_ type: CRMType, duration: Duration) {
        crmCallTimers[type]?.record(duration)
    }

    /// The metrics of one group-commit writer (`writer`: what it writes).
    public func databaseWriter(_ writer: String) -> DatabaseWriterMetrics {
        DatabaseWriterMetrics(
            duration: TimerHandle(Timer(label: "crm_db_write_duration_seconds", dimensions: [("writer", writer)], factory: factory)),
            batchSize: Recorder(label: "crm_db_write_batch_size", dimensions: [("writer", writer)], aggregate: true, factory: factory))
    }

    /// One batch written: how long its statement and commit took (with the wait for a pool
    /// connection), and how many items shared them.
    public struct DatabaseWriterMetrics: @unchecked Sendable {
        fileprivate let duration: TimerHandle
        fileprivate let batchSize: Metrics.Recorder
        public func batch(items: Int, duration: Duration) {
            self.duration.record(duration)
            batchSize.record(items)
        }
    }

    /// One HTTP request: counted by route and status, its latency in the histogram.
    public func request(route: String, status: Int, duration: Duration) {
        let handles = requestHandles(route: route, status: status)
        handles.count.increment()
        handles.latency.record(duration: duration)
    }

    /// The handles per (route, status), made once: the registry lookup behind a new handle
    /// (labels hashed, a lock, a dictionary) is far dearer than this one. Routes and statuses
    /// are a small fixed set, so the cache stays small.
    private func requestHandles(route: String, status: Int) -> RequestHandles {
        let key = RequestKey(route: route, status: status)
        // Each request thread keeps its own copy of the handles it used: no lock to contend for.
        let local: ThreadCache
        if let raw = pthread_getspecific(threadCacheKey) {
            local = Unmanaged<ThreadCache>.fromOpaque(raw).takeUnretainedValue()
        } else {
            local = ThreadCache()
            pthread_setspecific(threadCacheKey, Unmanaged.passRetained(local).toOpaque())
        }
        if let known = local.handles[key] { return known }
        let handles = sharedRequestHandles(key)
        local.handles[key] = handles
        return handles
    }

    private final class ThreadCache { var handles: [RequestKey: RequestHandles] = [:] }
    private let threadCacheKey: pthread_key_t = {
        var key = pthread_key_t()
        // A thread's cache is released when the thread ends.
        pthread_key_create(&key) { raw in raw.map { Unmanaged<ThreadCache>.fromOpaque($0).release() } }
        return key
    }()

    deinit { pthread_key_delete(threadCacheKey) }

    private func sharedRequestHandles(_ key: RequestKey) -> RequestHandles {
        let (route, status) = (key.route, key.status)
        if let known = requestCache.withLock({ $0[key] }) { return known }
        let made = RequestHandles(
            count: Counter(label: "crm_http_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory),
            latency: Timer(label: "crm_http_request_duration_seconds", dimensions: [("route", route)], factory: factory))
        requestCache.withLock { $0[key] = made }
        return made
    }

    private struct RequestKey: Hashable { let route: String; let status: Int }
    private struct RequestHandles: @unchecked Sendable { let count: Metrics.Counter; let latency: Metrics.Timer }
    private let requestCache = Mutex<[RequestKey: RequestHandles]>([:])

    /// One delivery attempt's outcome.
    public func sync(crmType: String, status: String) {
        let key = SyncKey(crmType: crmType, status: status)
        if let counter = syncCache.withLock({ $0[key] }) { return counter.increment() }
        let counter = Counter(label: "crm_syncs_total", dimensions: [("crm_type", crmType), ("status", status)], factory: factory)
        syncCache.withLock { $0[key] = counter }
        counter.increment()
    }

    private struct SyncKey: Hashable { let crmType: String; let status: String }
    private let syncCache = Mutex<[SyncKey: Metrics.Counter]>([:])

    /// The Prometheus text, with the gauges read now (backlog, pool use).
    /// Requests being handled right now (most of them waiting on a CRM): compare with FCGI_MAX_REQUESTS.
    let requestsInProgress = Atomic<Int>(0)

    public func render(pool: Pool, backlog: Int?, crmCallsInFlight: Int) -> [UInt8] {
        let usage = pool.usage
        Gauge(label: "crm_http_requests_in_progress", factory: factory).record(requestsInProgress.load(ordering: .relaxed))
        Gauge(label: "crm_outbound_calls_in_flight", factory: factory).record(crmCallsInFlight)
        Gauge(label: "crm_db_pool_connections", dimensions: [("state", "open")], factory: factory).record(usage.open)
        Gauge(label: "crm_db_pool_connections", dimensions: [("state", "idle")], factory: factory).record(usage.idle)
        Gauge(label: "crm_db_pool_size", factory: factory).record(usage.size)
        if let backlog { Gauge(label: "crm_sync_retry_backlog", factory: factory).record(backlog) }
        return registry.emitToBuffer()
    }
}
