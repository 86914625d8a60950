import Dispatch
import XCTest

@testable import CRMService

/// What `/metrics` shows for requests: one series per (route, status), counted across threads
/// (each thread caches its own handles), and the latency histogram per route.
final class ServiceMetricsTests: XCTestCase {
    func testRequestsAreCountedByRouteAndStatusAcrossThreads() {
        let metrics = ServiceMetrics()
        let list = RouteLabel.of(.list)
        // 8 threads × 50 lists: 3 ms each, and every 10th answered 503.
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for i in 0..<50 { metrics.request(route: list, status: i % 10 == 0 ? 503 : 200, duration: .milliseconds(3)) }
        }
        metrics.request(route: .unmatched, status: 404, duration: .milliseconds(40))
        metrics.request(route: .preflight, status: 204, duration: .microseconds(500))
        metrics.request(route: RouteLabel.of(.status), status: 200, duration: .seconds(2))

        let lines = Set(String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self).split(separator: "\n").map(String.init))
        for expected in [
            #"crm_http_requests_total{route="/crm/list",status="200"} 360"#,
            #"crm_http_requests_total{route="/crm/list",status="503"} 40"#,
            #"crm_http_requests_total{route="unmatched",status="404"} 1"#,
            #"crm_http_requests_total{route="preflight",status="204"} 1"#,
            #"crm_http_requests_total{route="/crm/{crm_type}/status",status="200"} 1"#,
            #"crm_http_request_duration_seconds_count{route="/crm/list"} 400"#,
            #"crm_http_request_duration_seconds_bucket{route="/crm/list",le="0.002"} 0"#,
            #"crm_http_request_duration_seconds_bucket{route="/crm/list",le="0.005"} 400"#,
            #"crm_http_request_duration_seconds_sum{route="/crm/list"} 1.2"#,
            #"crm_http_request_duration_seconds_bucket{route="unmatched",le="0.025"} 0"#,
            #"crm_http_request_duration_seconds_bucket{route="unmatched",le="0.05"} 1"#,
            #"crm_http_request_duration_seconds_bucket{route="preflight",le="0.001"} 1"#,
            #"crm_http_request_duration_seconds_bucket{route="/crm/{crm_type}/status",le="1.0"} 0"#,
            #"crm_http_request_duration_seconds_bucket{route="/crm/{crm_type}/status",le="2.5"} 1"#,
        ] {
            XCTAssertTrue(lines.contains(expected), "missing: \(expected)")
        }
        XCTAssertEqual(lines.filter { $0.hasPrefix("# TYPE crm_http_requests_total ") }, ["# TYPE crm_http_requests_total counter"])
        XCTAssertEqual(lines.filter { $0.hasPrefix("# TYPE crm_http_request_duration_seconds ") }, ["# TYPE crm_http_request_duration_seconds histogram"])
    }

    /// The names README documents, each with its type and one `# HELP` line.
    func testEverySeriesHasItsNameTypeAndHelp() {
        let metrics = ServiceMetrics()
        metrics.request(route: RouteLabel.of(.list), status: 200, duration: .milliseconds(1))
        metrics.sync(crmType: "klaviyo", status: "success")
        metrics.crmCall(.klaviyo, duration: .milliseconds(5))
        metrics.databaseWriter("outcomes").batch(items: 3, duration: .milliseconds(2))
        metrics.heldBack(.hubspot)
        let lines = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self).split(separator: "\n").map(String.init)
        let types = [
            "crm_http_requests_total": "counter", "crm_http_request_duration_seconds": "histogram", "crm_syncs_total": "counter",
            "crm_call_duration_seconds": "histogram", "crm_db_write_duration_seconds": "histogram", "crm_db_write_batch_size": "histogram",
            "crm_deliveries_held_back_total": "counter",
        ]
        for (name, type) in types {
            XCTAssertEqual(lines.filter { $0.hasPrefix("# TYPE \(name) ") }, ["# TYPE \(name) \(type)"], name)
            XCTAssertEqual(lines.filter { $0.hasPrefix("# HELP \(name) ") }.count, 1, name)
        }
        XCTAssertEqual(Set(lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }), Set(types.keys.map { Substring($0) }))
        XCTAssertTrue(lines.contains(#"crm_syncs_total{crm_type="klaviyo",status="success"} 1"#))
        XCTAssertTrue(lines.contains(#"crm_deliveries_held_back_total{crm_type="hubspot"} 1"#))
        XCTAssertTrue(lines.contains(#"crm_deliveries_held_back_total{crm_type="klaviyo"} 0"#), "every CRM's series from the start")
        XCTAssertTrue(lines.contains(#"crm_db_write_batch_size_sum{writer="outcomes"} 3.0"#), lines.joined(separator: "\n"))
    }

    func testEveryRouteIsLabelledByItsPattern() {
        for route in Routes.all { XCTAssertEqual(RouteLabel.of(route.id).name, route.pattern) }
        let indexes = RouteID.allCases.map { RouteLabel.of($0).index } + [RouteLabel.preflight.index, RouteLabel.unmatched.index]
        XCTAssertEqual(indexes.sorted(), Array(0..<RouteLabel.count), "dense and distinct: they index the per-thread tables")
    }

    func testWriterAndCRMCallHistograms() {
        let metrics = ServiceMetrics()
        let outcomes = metrics.databaseWriter("outcomes")
        outcomes.batch(items: 3, duration: .milliseconds(4))
        outcomes.batch(items: 40, duration: .milliseconds(30))
        metrics.crmCall(.hubspot, duration: .milliseconds(120))
        metrics.sync(crmType: "hubspot", status: "success")
        metrics.sync(crmType: "hubspot", status: "success")

        let lines = Set(String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self).split(separator: "\n").map(String.init))
        for expected in [
            #"crm_db_write_duration_seconds_bucket{writer="outcomes",le="0.005"} 1"#,
            #"crm_db_write_duration_seconds_count{writer="outcomes"} 2"#,
            #"crm_db_write_batch_size_bucket{writer="outcomes",le="4.0"} 1"#,
            #"crm_db_write_batch_size_bucket{writer="outcomes",le="64.0"} 2"#,
            #"crm_db_write_batch_size_sum{writer="outcomes"} 43.0"#,
            #"crm_call_duration_seconds_bucket{crm_type="hubspot",le="0.25"} 1"#,
            #"crm_call_duration_seconds_count{crm_type="klaviyo"} 0"#,
            #"crm_syncs_total{crm_type="hubspot",status="success"} 2"#,
        ] {
            XCTAssertTrue(lines.contains(expected), "missing: \(expected)")
        }
    }
}
