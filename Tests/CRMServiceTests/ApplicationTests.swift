import CRMCore
import Foundation
import Logging
import XCTest

@testable import CRMService

/// The application end to end in-process, with a database that is not there.
final class ApplicationTests: XCTestCase {
    static let allowedOrigin = "https://app.example.com"

    private func makeApp(_ extra: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws -> Application {
        let env = [
            "DB_DSN": "host=127.0.0.1 port=1 dbname=x user=x", "DB_CONNECT_TIMEOUT_S": "1",
            "CRM_ENCRYPTION_KEY": testKey32, "CORS_ALLOWED_ORIGINS": "\(Self.allowedOrigin), https://admin.example.com",
        ].merging(extra) { $1 }
        let config: Config
        switch Config.load(configReader(env)) {
        case let .success(c): config = c
        case let .failure(problems):
            XCTFail("test config refused: \(problems)", file: file, line: line)
            throw problems
        }
        return Application(context: ServiceContext(config: config, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }))
    }

    private func json(_ response: HTTPResponse, file: StaticString = #filePath, line: UInt = #line) throws -> JSON {
        XCTAssertEqual(response.header("Content-Type"), "application/json; charset=utf-8", file: file, line: line)
        return try JSONParser.parse(response.body)
    }

    func testHealth() throws {
        let response = try makeApp().handle(request("GET", "/health", user: nil))
        XCTAssertEqual(response.status, 200)
        let body = try json(response)
        XCTAssertEqual(body["status"], "ok")
        XCTAssertFalse(body["version"]?.stringValue?.isEmpty ?? true, "version is a non-empty string")
        XCTAssertEqual(body.objectValue?.map(\.0), ["status", "version"])
    }

    func testRequestIDIsEchoedWhenSaneAndReplacedOtherwise() throws {
        let app = try makeApp()
        func requestID(_ given: String?, path: String = "/health") -> String? {
            var r = request("GET", path, user: nil)
            r.headers["x-request-id"] = given
            return app.handle(r).header("X-Request-Id")
        }
        for sane in ["abc-123", "req.1:2_3-x", String(repeating: "a", count: 128), "0"] {
            XCTAssertEqual(requestID(sane), sane)
        }
        XCTAssertEqual(requestID("trace-404", path: "/nope"), "trace-404", "errors carry it too")
        var generated = Set<String>()
        for insane in [nil, "", "has space", String(repeating: "a", count: 129), String(repeating: "b", count: 200), "x\r\nSet-Cookie: a=b",
                       "ünï", "a/b", "<script>"] as [String?] {
            let id = try XCTUnwrap(requestID(insane))
            XCTAssertNotEqual(id, insane)
            XCTAssertTrue((1...128).contains(id.count) && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }, id)
            generated.insert(id)
        }
        XCTAssertEqual(generated.count, 9, "each generated id is new")
    }

    func testCORSPreflight() throws {
        let app = try makeApp(["API_KEY": "k3y-Secret"])
        var preflight = request("OPTIONS", "/crm/connect", user: nil)
        preflight.headers["origin"] = Self.allowedOrigin
        preflight.headers["access-control-request-method"] = "POST"
        preflight.headers["access-control-request-headers"] = "content-type, x-user-id, x-api-key"
        let ok = app.handle(preflight)
        XCTAssertEqual(ok.status, 204, "answered before the API key and user checks")
        XCTAssertEqual(ok.header("Access-Control-Allow-Origin"), Self.allowedOrigin)
        let methods = try XCTUnwrap(ok.header("Access-Control-Allow-Methods")).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        XCTAssertTrue(Set(["GET", "POST", "DELETE"]).isSubset(of: methods), "\(methods)")
        let headers = try XCTUnwrap(ok.header("Access-Control-Allow-Headers")).lowercased()
        for h in ["content-type", "x-user-id", "x-api-key", "idempotency-key", "prefer"] { XCTAssertTrue(headers.contains(h), h) }
        XCTAssertNotNil(ok.header("X-Request-Id"))

        preflight.headers["origin"] = "https://evil.example.com"
        let refused = app.handle(preflight)
        XCTAssertEqual(refused.status, 400)
        XCTAssertEqual(try json(refused)["detail"], "Disallowed CORS origin")
        XCTAssertNil(refused.header("Access-Control-Allow-Origin"))
    }

    func testCORSHeadersOnlyForAllowedOrigins() throws {
        let app = try makeApp()
        var r = request("GET", "/health", user: nil)
        r.headers["origin"] = Self.allowedOrigin
        let allowed = app.handle(r)
        XCTAssertEqual(allowed.header("Access-Control-Allow-Origin"), Self.allowedOrigin)
        XCTAssertTrue(allowed.header("Access-Control-Expose-Headers")?.contains("X-Request-Id") ?? false)
        r.headers["origin"] = "https://admin.example.com"
        XCTAssertEqual(app.handle(r).header("Access-Control-Allow-Origin"), "https://admin.example.com")
        for other in ["https://evil.example.com", "https://app.example.com.evil.com", "http://app.example.com", "null"] {
            r.headers["origin"] = other
            XCTAssertNil(app.handle(r).header("Access-Control-Allow-Origin"), other)
        }
        r.headers["origin"] = nil
        XCTAssertNil(app.handle(r).header("Access-Control-Allow-Origin"))
        // Errors carry the header as well, so a browser can read them.
        var error = request("GET", "/crm/list", user: nil)
        error.headers["origin"] = Self.allowedOrigin
        XCTAssertEqual(app.handle(error).header("Access-Control-Allow-Origin"), Self.allowedOrigin)
    }

    func testErrorsAreFastAPIShaped() throws {
        let app = try makeApp()
        let notFound = app.handle(request("GET", "/crm/nope/status"))
        XCTAssertEqual(notFound.status, 404)
        XCTAssertEqual(try json(notFound), ["detail": "Unsupported CRM type 'nope'. Supported: creatio, hubspot, klaviyo, salesforce"])
        let notAllowed = app.handle(request("GET", "/crm/validate"))
        XCTAssertEqual(notAllowed.status, 405)
        XCTAssertEqual(notAllowed.header("Allow"), "POST")
        let invalid = app.handle(request("POST", "/crm/sync/contact", body: #"{"email":"x","first_name":1}"#))
        XCTAssertEqual(invalid.status, 422)
        let detail = try XCTUnwrap(json(invalid)["detail"]?.arrayValue)
        XCTAssertEqual(detail.count, 2)
        XCTAssertEqual(Set(detail.compactMap { $0["loc"]?.jsonString }), [#"["body","email"]"#, #"["body","first_name"]"#])
        for issue in detail { XCTAssertEqual(issue.objectValue?.map(\.0), ["loc", "msg", "type"]) }
        let noUser = app.handle(request("GET", "/crm/list", user: nil))
        XCTAssertEqual(noUser.status, 401)
        XCTAssertEqual(try json(noUser), ["detail": "Missing X-User-Id header"])
    }

    func testDatabaseDownIs503WithRetryAfter() throws {
        let app = try makeApp()
        for r in [request("GET", "/crm/list"), request("GET", "/crm/hubspot/status"), request("GET", "/crm/sync/logs"),
                  request("GET", "/crm/sync/logs/1"), request("DELETE", "/crm/hubspot/disconnect"), request("GET", "/health/ready", user: nil)] {
            let started = Date()
            let response = app.handle(r)
            XCTAssertLessThan(Date().timeIntervalSince(started), 5, "\(r.path) must not hang")
            XCTAssertEqual(response.status, 503, r.path)
            let retryAfter = try XCTUnwrap(response.header("Retry-After").flatMap { Int($0) }, r.path)
            XCTAssertGreaterThanOrEqual(retryAfter, 1)
            let body = try json(response)
            XCTAssertEqual(body.objectValue?.map(\.0), ["detail"])
            let detail = try XCTUnwrap(body["detail"]?.stringValue)
            XCTAssertFalse(detail.contains("127.0.0.1") || detail.contains("port=1") || detail.contains("connect"), "no internals: \(detail)")
        }
    }

    /// Against the `postgres` database of the test cluster, which has no crm schema: the database
    /// answers (ready), and a query that fails is a 500 that says nothing about SQL.
    func testRealBugsAre500WithARequestIDAndNothingElse() throws {
        let env = ProcessInfo.processInfo.environment
        guard let dsn = env["TEST_DB_DSN"], !dsn.isEmpty, !dsn.contains("://") else {
            let message = "TEST_DB_DSN is not set (as a keyword DSN): run `scripts/pg.sh start` and `export TEST_DB_DSN=\"$(scripts/pg.sh dsn crm_test)\"`"
            if let ci = env["CI"], !ci.isEmpty, ci != "0", ci.lowercased() != "false" { return XCTFail(message) }
            throw XCTSkip(message)
        }
        let app = try makeApp(["DB_DSN": dsn + " dbname=postgres"])
        XCTAssertEqual(app.handle(request("GET", "/health/ready", user: nil)).status, 200)
        var r = request("GET", "/crm/list")
        r.headers["x-request-id"] = "bug-report-1"
        let response = app.handle(r)
        XCTAssertEqual(response.status, 500)
        XCTAssertEqual(try json(response), ["detail": "Internal server error", "request_id": "bug-report-1"])
        XCTAssertEqual(response.header("X-Request-Id"), "bug-report-1")
    }

    func testOpenAPIDocumentsExactlyTheRoutes() throws {
        let response = try makeApp().handle(request("GET", "/openapi.json", user: nil))
        XCTAssertEqual(response.status, 200)
        let document = try json(response)
        XCTAssertTrue(document["openapi"]?.stringValue?.hasPrefix("3.1") ?? false)
        let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
        var documented = Set<String>()
        for (path, item) in try XCTUnwrap(document["paths"]?.objectValue) {
            for (key, _) in item.objectValue ?? [] where methods.contains(key) { documented.insert("\(key.uppercased()) \(path)") }
        }
        XCTAssertEqual(documented, Set(Routes.all.map { "\($0.method) \($0.pattern)" }))
    }

    func testDocsAndMetrics() throws {
        let app = try makeApp(["API_KEY": "k3y-Secret"])
        let docs = app.handle(request("GET", "/docs", user: nil))
        XCTAssertEqual(docs.status, 200)
        XCTAssertTrue(docs.header("Content-Type")?.hasPrefix("text/html") ?? false)
        XCTAssertTrue(String(decoding: docs.body, as: UTF8.self).lowercased().contains("<html"))
        XCTAssertEqual(app.handle(request("GET", "/metrics", user: nil)).status, 401)
        var metrics = request("GET", "/metrics", user: nil)
        metrics.headers["x-api-key"] = "k3y-Secret"
        let text = app.handle(metrics)
        XCTAssertEqual(text.status, 200)
        XCTAssertTrue(text.header("Content-Type")?.hasPrefix("text/plain") ?? false)
        XCTAssertTrue(String(decoding: text.body, as: UTF8.self).contains("/docs"), "earlier requests are counted")
    }

    func testFieldMappings() throws {
        let app = try makeApp()
        let all = app.handle(request("GET", "/crm/field-mappings"))
        XCTAssertEqual(all.status, 200)
        let mappings = try XCTUnwrap(json(all)["field_mappings"]?.objectValue)
        XCTAssertEqual(mappings.map(\.0).sorted(), ["creatio", "hubspot", "klaviyo", "salesforce"])
        for (type, mapping) in mappings {
            XCTAssertEqual(mapping["crm_type"]?.stringValue, type)
            XCTAssertNotNil(mapping["contact"]?["email"]?.stringValue, "\(type) maps email")
            XCTAssertNotNil(mapping["event"]?.objectValue, type)
            XCTAssertNotNil(mapping["custom_properties"]?.stringValue, type)
        }
        let hubspot = app.handle(request("GET", "/crm/field-mappings/hubspot"))
        XCTAssertEqual(hubspot.status, 200)
        let body = try json(hubspot)
        XCTAssertEqual(body["crm_type"], "hubspot")
        XCTAssertEqual(body["contact"]?["email"], "email")
        XCTAssertEqual(body["contact"]?["first_name"], "firstname")
        XCTAssertEqual(app.handle(request("GET", "/crm/field-mappings/nope")).status, 404)
    }
}
