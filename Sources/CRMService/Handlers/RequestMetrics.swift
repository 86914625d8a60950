import Synchronization

/// Request counters for `/metrics` (Prometheus text). A stand-in until the metrics issue
/// moves this onto swift-metrics and swift-prometheus.
public final class RequestMetrics: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    public init() {}

    public func record(route: String, status: Int) {
        counts.withLock { $0["\(route)|\(status)", default: 0] += 1 }
    }

    public func prometheusText() -> String {
        var out = "# HELP crm_http_requests_total HTTP requests by route and status.\n# TYPE crm_http_requests_total counter\n"
        for (key, value) in counts.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|")
            out += "crm_http_requests_total{route=\"\(parts[0])\",status=\"\(parts.count > 1 ? parts[1] : "")\"} \(value)\n"
        }
        return out
    }
}
