import CRMCore
import XCTest

@testable import CRMService

/// The whole HTTP surface of the router, in-process: request in, `Command` or FastAPI-style error out.
final class RouterRoutingTests: XCTestCase {
    func testEveryRouteDecodesToItsCommand() throws {
        var covered = Set<RouteID>()
        func check(_ id: RouteID, _ request: HTTPRequest, line: UInt = #line, _ verify: (Command) -> Bool) {
            covered.insert(id)
            guard let command = decode(request, line: line) else { return }
            XCTAssertTrue(verify(command), "\(request.method) \(request.path) decoded to \(command)", line: line)
            XCTAssertEqual(Router(apiKey: nil).decode(request).route, id, "metrics and logs name the route the command came by", line: line)
        }
        let user = UserID(testUser)!

        check(.health, request("GET", "/health", user: nil)) { if case .health = $0 { true } else { false } }
        check(.ready, request("GET", "/health/ready", user: nil)) { if case .ready = $0 { true } else { false } }
        check(.openAPI, request("GET", "/openapi.json", user: nil)) { if case .openAPI = $0 { true } else { false } }
        check(.docs, request("GET", "/docs", user: nil)) { if case .docs = $0 { true } else { false } }
        check(.metrics, request("GET", "/metrics", user: nil)) { if case .metrics = $0 { true } else { false } }
        check(.validate, request("POST", "/crm/validate", body: #"{"crm_type":"klaviyo","credentials":{"api_key":"pk_1"}}"#)) {
            if case let .validate(.klaviyo, .klaviyo(key)) = $0 { key.revealed == "pk_1" } else { false }
        }
        check(.connect, request("POST", "/crm/connect",
                                body: #"{"crm_type":"hubspot","credentials":{"access_token":"pat-1"},"settings":{"events":"note","sync_events":false}}"#)) {
            if case let .connect(u, .hubspot, .hubspot(token), settings) = $0 {
                u == user && token.revealed == "pat-1" && settings.string("events") == "note" && !settings.syncEvents && settings.syncContacts
            } else { false }
        }
        check(.list, request("GET", "/crm/list")) { if case let .list(u) = $0 { u == user } else { false } }
        check(.syncContact, request("POST", "/crm/sync/contact", body: #"""
            {"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","phone":"+44 1","company":"AE","title":"Dr",
             "address":{"line1":"1 St","city":"London","postal_code":"N1","country":"GB"},
             "custom_properties":{"plan":"pro","seats":3,"vip":true,"note":null},"crm_types":["hubspot","klaviyo","hubspot"]}
            """#)) {
            guard case let .syncContact(u, c, targets, options) = $0 else { return false }
            return u == user && c.email == "ada@example.com" && c.firstName == "Ada" && c.lastName == "Lovelace" && c.title == "Dr"
                && c.address?.city == "London" && c.address?.postalCode == "N1" && c.customProperties.map(\.0) == ["plan", "seats", "vip", "note"]
                && targets == [.hubspot, .klaviyo] && options == SyncOptions()
        }
        check(.syncEvent, request("POST", "/crm/sync/event",
                                  body: #"{"event":"Order Placed","email":"ada@example.com","properties":{"sku":"A1"},"value":12.5,"timestamp":"2025-01-02T03:04:05Z","unique_id":"o-1"}"#)) {
            guard case let .syncEvent(u, e, targets, _) = $0 else { return false }
            return u == user && e.name == "Order Placed" && e.value == 12.5 && e.timestamp == "2025-01-02T03:04:05Z"
                && e.uniqueID == "o-1" && e.properties.map(\.0) == ["sku"] && targets == nil
        }
        check(.listLogs, request("GET", "/crm/sync/logs?crm_type=klaviyo&status=failed&operation=event&limit=5&before_id=99")) {
            guard case let .listLogs(u, q) = $0 else { return false }
            return u == user && q.crmType == .klaviyo && q.status == "failed" && q.operation == "event" && q.limit == 5 && q.beforeID == 99
        }
        check(.getLog, request("GET", "/crm/sync/logs/42")) { if case let .getLog(u, id) = $0 { u == user && id == 42 } else { false } }
        check(.retryLog, request("POST", "/crm/sync/logs/42/retry")) { if case let .retryLog(u, id) = $0 { u == user && id == 42 } else { false } }
        check(.fieldMappings, request("GET", "/crm/field-mappings")) { if case .fieldMappings = $0 { true } else { false } }
        check(.fieldMapping, request("GET", "/crm/field-mappings/hubspot")) { if case .fieldMapping(.hubspot) = $0 { true } else { false } }
        check(.status, request("GET", "/crm/salesforce/status")) { if case let .status(u, .salesforce) = $0 { u == user } else { false } }
        check(.disconnect, request("DELETE", "/crm/creatio/disconnect")) { if case let .disconnect(u, .creatio) = $0 { u == user } else { false } }

        XCTAssertEqual(covered, Set(RouteID.allCases), "every RouteID needs a case here")
        XCTAssertEqual(Set(Routes.all.map(\.id)), Set(RouteID.allCases), "every RouteID has a route")
        XCTAssertEqual(Routes.all.count, Set(Routes.all.map { "\($0.method) \($0.pattern)" }).count, "no duplicate routes")
    }

    /// A request refused after its route matched is still counted and logged under that route;
    /// only one that matched none is `unmatched`.
    func testRefusedRequestsKeepTheirRoute() {
        let router = Router(apiKey: Secret("k3y-Secret"))
        let cases: [(HTTPRequest, RouteID?, Int)] = [
            (request("POST", "/crm/sync/contact", headers: ["x-api-key": "k3y-Secret"], body: #"{"email":"not-an-email"}"#), .syncContact, 422),
            (request("POST", "/crm/sync/event", headers: ["x-api-key": "k3y-Secret"], body: "{"), .syncEvent, 422),
            (request("GET", "/crm/pipedrive/status", headers: ["x-api-key": "k3y-Secret"]), .status, 404),
            (request("GET", "/crm/list", user: nil, headers: ["x-api-key": "k3y-Secret"]), .list, 401),
            (request("GET", "/crm/list", headers: ["x-api-key": "wrong"]), .list, 401),
            (request("GET", "/crm/sync/logs/0", headers: ["x-api-key": "k3y-Secret"]), .getLog, 422),
            (request("POST", "/crm/connect", headers: ["x-api-key": "k3y-Secret"], body: "{}", contentType: "text/plain"), .connect, 415),
            (request("POST", "/crm/sync/event", headers: ["x-api-key": "k3y-Secret"],
                     bytes: [UInt8](repeating: 0x20, count: Router.maxBodyBytes + 1)), .syncEvent, 413),
            (request("GET", "/crm/nothing/here", headers: ["x-api-key": "k3y-Secret"]), nil, 404),
            (request("DELETE", "/crm/list", headers: ["x-api-key": "k3y-Secret"]), nil, 405),
        ]
        for (request, route, status) in cases {
            let decoded = router.decode(request)
            XCTAssertEqual(decoded.route, route, "\(request.method) \(request.path)")
            guard case let .failure(error) = decoded.command else { XCTFail("\(request.method) \(request.path) should fail"); continue }
            XCTAssertEqual(error.status, status, "\(request.method) \(request.path): \(error)")
        }
    }

    func testEveryCRMTypeInPaths() {
        for type in CRMType.allCases {
            guard case .status(_, type)? = decode(request("GET", "/crm/\(type.rawValue)/status")) else { return XCTFail("\(type)") }
            guard case .disconnect(_, type)? = decode(request("DELETE", "/crm/\(type.rawValue)/disconnect")) else { return XCTFail("\(type)") }
            guard case .fieldMapping(type)? = decode(request("GET", "/crm/field-mappings/\(type.rawValue)")) else { return XCTFail("\(type)") }
        }
    }

    func testUnknownPathsAre404() {
        for path in ["/", "/nope", "/crm", "/crm/", "/crm/list/", "/health/", "/crm/sync/logs/1/retry/x", "/CRM/list", "/healthz"] {
            decodeError(request("GET", path), status: 404, detail: "Not Found")
        }
    }

    func testUnknownCRMTypeInPathIs404WithTheSupportedList() {
        let detail = "Unsupported CRM type 'nope'. Supported: creatio, hubspot, klaviyo, salesforce"
        decodeError(request("GET", "/crm/nope/status"), status: 404, detail: detail)
        decodeError(request("DELETE", "/crm/nope/disconnect"), status: 404, detail: detail)
        decodeError(request("GET", "/crm/field-mappings/nope"), status: 404, detail: detail)
        decodeError(request("GET", "/crm/HubSpot/status"), status: 404,
                    detail: "Unsupported CRM type 'HubSpot'. Supported: creatio, hubspot, klaviyo, salesforce")
    }

    func testWrongMethodIs405WithAllow() {
        let cases: [(String, String, String)] = [
            ("GET", "/crm/validate", "POST"), ("PUT", "/crm/connect", "POST"), ("POST", "/crm/list", "GET"),
            ("DELETE", "/crm/hubspot/status", "GET"), ("GET", "/crm/hubspot/disconnect", "DELETE"),
            ("GET", "/crm/sync/contact", "POST"), ("GET", "/crm/sync/event", "POST"), ("POST", "/crm/sync/logs", "GET"),
            ("DELETE", "/crm/sync/logs/7", "GET"), ("GET", "/crm/sync/logs/7/retry", "POST"),
            ("POST", "/crm/field-mappings", "GET"), ("POST", "/crm/field-mappings/hubspot", "GET"),
            ("POST", "/health", "GET"), ("DELETE", "/openapi.json", "GET"), ("PATCH", "/metrics", "GET"),
        ]
        for (method, path, allow) in cases {
            let error = decodeError(request(method, path, body: "{}"), status: 405, detail: "Method Not Allowed")
            XCTAssertEqual(error?.header("Allow"), allow, "\(method) \(path)")
        }
    }
}

final class RouterHeaderTests: XCTestCase {
    func testMissingOrEmptyUserIdIs401() {
        for path in ["/crm/list", "/crm/hubspot/status", "/crm/sync/logs", "/crm/field-mappings"] {
            decodeError(request("GET", path, user: nil), status: 401, detail: "Missing X-User-Id header")
            decodeError(request("GET", path, user: ""), status: 401, detail: "Missing X-User-Id header")
        }
        decodeError(request("POST", "/crm/validate", user: nil, body: "{}"), status: 401)
    }

    func testMalformedUserIdIs400() {
        let detail = "Invalid X-User-Id header: expected 1-128 characters of A-Z, a-z, 0-9, _ and -"
        for bad in [String(repeating: "a", count: 129), "a b", "a.b", "a/b", "ü", "user\r\nX-Admin: 1", "user\n", "\t", "a;b", "../x", "a%20b"] {
            decodeError(request("GET", "/crm/list", user: bad), status: 400, detail: detail)
        }
    }

    func testValidUserIds() {
        for good in [testUser, "3f8b6a8e-1c2d-4e5f-9a0b-1c2d3e4f5a6b", "a", String(repeating: "Z", count: 128), "A_b-9"] {
            guard case let .list(user)? = decode(request("GET", "/crm/list", user: good)) else { return XCTFail(good) }
            XCTAssertEqual(user.value, good)
        }
    }

    func testAPIKeyGuardsCRMRoutesAndMetrics() {
        let key = "k3y-Secret"
        let guarded = [request("GET", "/crm/list"), request("GET", "/metrics", user: nil), request("GET", "/openapi.json", user: nil),
                       request("GET", "/crm/field-mappings"),
                       request("POST", "/crm/validate", body: "{}"), request("DELETE", "/crm/hubspot/disconnect")]
        for r in guarded {
            for wrong in [nil, "", "k3y", "k3y-Secret ", "K3Y-SECRET", "k3y-Secretx", "x3y-Secret"] as [String?] {
                var r = r
                r.headers["x-api-key"] = wrong
                decodeError(r, apiKey: key, status: 401, detail: "Invalid or missing API key")
            }
        }
        var ok = request("GET", "/crm/list")
        ok.headers["x-api-key"] = key
        XCTAssertNotNil(decode(ok, apiKey: key))
        var metrics = request("GET", "/metrics", user: nil)
        metrics.headers["x-api-key"] = key
        XCTAssertNotNil(decode(metrics, apiKey: key))
        // The key is checked before anything about the user is revealed.
        decodeError(request("GET", "/crm/list", user: nil), apiKey: key, status: 401, detail: "Invalid or missing API key")
    }

    func testHealthAndDocsStayOpenWithAnAPIKey() {
        for path in ["/health", "/health/ready", "/docs"] {
            XCTAssertNotNil(decode(request("GET", path, user: nil), apiKey: "k3y-Secret"), path)
        }
        // The API description is behind the key (the /docs page asks for it).
        decodeError(request("GET", "/openapi.json", user: nil), apiKey: "k3y-Secret", status: 401, detail: "Invalid or missing API key")
        var openAPI = request("GET", "/openapi.json", user: nil)
        openAPI.headers["x-api-key"] = "k3y-Secret"
        XCTAssertNotNil(decode(openAPI, apiKey: "k3y-Secret"))
    }

    func testPreferAndIdempotencyKeyBecomeSyncOptions() {
        let body = #"{"email":"ada@example.com"}"#
        func options(_ headers: HTTPHeaders, path: String = "/crm/sync/contact", body: String = body) -> SyncOptions? {
            switch decode(request("POST", path, headers: headers, body: body)) {
            case let .syncContact(_, _, _, o)?, let .syncEvent(_, _, _, o)?: return o
            default: return nil
            }
        }
        XCTAssertEqual(options([:]), SyncOptions(respondAsync: false, idempotencyKey: nil))
        XCTAssertEqual(options(["prefer": "respond-async"]), SyncOptions(respondAsync: true))
        XCTAssertEqual(options(["prefer": "return=minimal, Respond-Async"]), SyncOptions(respondAsync: true))
        XCTAssertEqual(options(["prefer": "return=minimal"]), SyncOptions(respondAsync: false))
        // RFC 7240: a preference may carry a value and parameters; the name is what counts.
        for prefer in ["respond-async; foo=bar", " RESPOND-ASYNC ,wait=10", "wait=10,respond-async", "respond-async=1",
                       "respond-async ;x", "handling=lenient, \trespond-async\t"] {
            XCTAssertEqual(options(["prefer": prefer]), SyncOptions(respondAsync: true), prefer)
        }
        for prefer in ["", ",", "respond-asyncx", "respond", "x-respond-async", "wait=respond-async", "handling=lenient;respond-async",
                       "respond_async"] {
            XCTAssertEqual(options(["prefer": prefer]), SyncOptions(respondAsync: false), prefer)
        }
        XCTAssertEqual(options(["idempotency-key": "order-123:v1"]), SyncOptions(idempotencyKey: "order-123:v1"))
        XCTAssertEqual(options(["prefer": "respond-async", "idempotency-key": "k"], path: "/crm/sync/event",
                               body: #"{"event":"e","email":"ada@example.com"}"#),
                       SyncOptions(respondAsync: true, idempotencyKey: "k"))
        for bad in ["", "has space", String(repeating: "k", count: 256), "tab\tkey", "ключ"] {
            decodeError(request("POST", "/crm/sync/contact", headers: ["idempotency-key": bad], body: body), status: 400,
                        detail: "Invalid Idempotency-Key header: expected 1-255 visible ASCII characters")
        }
        XCTAssertEqual(options(["idempotency-key": String(repeating: "k", count: 255)])?.idempotencyKey?.count, 255)
    }
}

final class RouterBodyTests: XCTestCase {
    func testMediaTypeIgnoresParametersBlanksAndCase() {
        XCTAssertEqual(Router.mediaType("application/json"), "application/json")
        XCTAssertEqual(Router.mediaType(" Application/JSON ; charset=utf-8"), "application/json")
        XCTAssertEqual(Router.mediaType("\tapplication/vnd.api+json;"), "application/vnd.api+json")
        XCTAssertEqual(Router.mediaType(";charset=utf-8"), "")
        XCTAssertEqual(Router.mediaType("  "), "")
        XCTAssertEqual(Router.mediaType(""), "")
        XCTAssertEqual(Router.mediaType("Text/Plain"), "text/plain")
    }

    func testPreferIsReadByPreferenceName() {
        XCTAssertTrue(Router.prefersRespondAsync("Respond-Async, wait=10 ,\tHANDLING=lenient"))
        XCTAssertFalse(Router.prefersRespondAsync("wait=10 ,\tHANDLING=lenient"))
        XCTAssertFalse(Router.prefersRespondAsync("respond-asynć"), "only ASCII letters fold")
        XCTAssertEqual(Router.mediaType("Zoë ; É"), "zoë", "only ASCII letters change")
    }

    func testBodyOver1MiBIs413() {
        let limit = 1 << 20
        decodeError(request("POST", "/crm/sync/contact", bytes: Array("{}".utf8), contentLength: limit + 1), status: 413,
                    detail: "Request body too large (limit 1 MiB)")
        decodeError(request("POST", "/crm/sync/contact", bytes: [UInt8](repeating: 0x20, count: limit + 1)), status: 413)
        // Exactly 1 MiB is still accepted.
        var exact = Array(#"{"email":"ada@example.com"}"#.utf8)
        exact += [UInt8](repeating: 0x20, count: limit - exact.count)
        XCTAssertNotNil(decode(request("POST", "/crm/sync/contact", bytes: exact)))
    }

    func testWrongContentTypeIs415() {
        let body = #"{"email":"ada@example.com"}"#
        decodeError(request("POST", "/crm/sync/contact", body: body, contentType: "text/plain"), status: 415,
                    detail: "Unsupported media type 'text/plain': send application/json")
        decodeError(request("POST", "/crm/sync/contact", body: body, contentType: "application/x-www-form-urlencoded"), status: 415)
        decodeError(request("POST", "/crm/sync/contact", body: body, contentType: nil), status: 415)
        for ok in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"] {
            XCTAssertNotNil(decode(request("POST", "/crm/sync/contact", body: body, contentType: ok)), ok)
        }
    }

    func testMissingBodyIs422() {
        assertIssues(request("POST", "/crm/sync/contact"), [(["body"], "missing")])
        assertIssues(request("POST", "/crm/sync/contact", body: ""), [(["body"], "missing")])
    }

    func testMalformedJSONIs422JSONInvalidWithTheOffset() {
        let issues = assertIssues(request("POST", "/crm/sync/contact", body: #"{"email": }"#), [(["body", 10], "json_invalid")])
        XCTAssertTrue(issues.first?.msg.hasPrefix("JSON decode error") ?? false)
        assertIssues(request("POST", "/crm/connect", body: #"{"crm_type":"klaviyo",}"#), [(["body", 22], "json_invalid")])
        assertIssues(request("POST", "/crm/validate", body: "{"), [(["body", 1], "json_invalid")])
    }

    /// Valid JSON, but PostgreSQL stores no U+0000: refused where it is, before anything is logged.
    func testANULCharacterInABodyIs422AtItsPlace() {
        let issues = assertIssues(request("POST", "/crm/sync/contact", body: #"{"email":"a@b.co","first_name":"A\u0000"}"#),
                                  [(["body", "first_name"], "string_nul")])
        XCTAssertTrue(issues.first?.msg.contains("U+0000") ?? false)
        assertIssues(request("POST", "/crm/sync/event", body: #"{"event":"e","email":"a@b.co","properties":{"a":[1,{"k\u0000":2}]}}"#),
                     [(["body", "properties", "a", 1, "k\u{0}"], "string_nul")])
        assertIssues(request("POST", "/crm/connect", body: #"{"crm_type":"klaviyo","credentials":{"api_key":"pk"},"settings":{"x":"\u0000"}}"#),
                     [(["body", "settings", "x"], "string_nul")])
        // An escaped backslash followed by "u0000" is no NUL.
        let escaped = Router(apiKey: nil).decode(request("POST", "/crm/sync/contact", body: #"{"email":"a@b.co","first_name":"A\\u0000"}"#))
        guard case let .success(.syncContact(_, contact, _, _)) = escaped.command else { return XCTFail("\(escaped.command)") }
        XCTAssertEqual(contact.firstName, #"A\u0000"#)
    }

    func testBodyThatIsNotAnObjectIs422() {
        for body in ["[]", "\"x\"", "1", "null", "true"] {
            assertIssues(request("POST", "/crm/sync/contact", body: body), [(["body"], "model_attributes_type")])
        }
    }

    func testDeeplyNestedJSONIs422NotACrash() {
        for body in [String(repeating: "[", count: 100_000), String(repeating: #"{"a":"#, count: 100_000),
                     #"{"email":"a@b.co","custom_properties":"# + String(repeating: "[", count: 100_000)] {
            let error = decodeError(request("POST", "/crm/sync/contact", body: body), status: 422)
            XCTAssertEqual(error?.issues.map(\.type), ["json_invalid"])
            XCTAssertEqual(error?.issues.first?.loc.first, "body")
        }
    }

    func testInvalidUTF8InAStringIs422() {
        var bytes = Array(#"{"email":"ada@example.com","first_name":"A"#.utf8)
        bytes += [0xFF, 0xFE]
        bytes += Array(#""}"#.utf8)
        let error = decodeError(request("POST", "/crm/sync/contact", bytes: bytes), status: 422)
        XCTAssertEqual(error?.issues.map(\.type), ["json_invalid"])
        XCTAssertEqual(error?.issues.first?.loc.first, "body")
    }
}

final class RouterValidationTests: XCTestCase {
    func testContactReportsEveryProblemAtOnce() {
        let issues = assertIssues(request("POST", "/crm/sync/contact", body: #"{"email":"not-an-email","nickname":"Ada","first_name":5}"#), [
            (["body", "email"], "value_error"), (["body", "nickname"], "extra_forbidden"), (["body", "first_name"], "string_type"),
        ])
        XCTAssertEqual(issues.first { $0.loc == ["body", "nickname"] }?.msg, "Extra inputs are not permitted")
        XCTAssertEqual(issues.first { $0.loc == ["body", "first_name"] }?.msg, "Input should be a valid string")
    }

    func testContactFieldChecks() {
        func body(_ s: String) -> HTTPRequest { request("POST", "/crm/sync/contact", body: s) }
        assertIssues(body("{}"), [(["body", "email"], "missing")])
        assertIssues(body(#"{"email":null}"#), [(["body", "email"], "missing")])
        assertIssues(body(#"{"email":""}"#), [(["body", "email"], "string_too_short")])
        for bad in ["a@b", "@b.co", "a@.co", "a b@c.de", "a@b..co", "a@@b.co", "a@b.co.", "<a@b.co>"] {
            assertIssues(body(#"{"email":"\#(bad)"}"#), [(["body", "email"], "value_error")])
        }
        assertIssues(body(#"{"email":"a@b.co","address":{"city":1,"zip":"x"}}"#),
                     [(["body", "address", "city"], "string_type"), (["body", "address", "zip"], "extra_forbidden")])
        assertIssues(body(#"{"email":"a@b.co","address":"London"}"#), [(["body", "address"], "dict_type")])
        assertIssues(body(#"{"email":"a@b.co","custom_properties":{"ok":1,"nested":{"x":1},"list":[1]}}"#),
                     [(["body", "custom_properties", "nested"], "value_error"), (["body", "custom_properties", "list"], "value_error")])
        assertIssues(body(#"{"email":"a@b.co","crm_types":["hubspot","nope"]}"#), [(["body", "crm_types", 1], "enum")])
        assertIssues(body(#"{"email":"a@b.co","crm_types":"hubspot"}"#), [(["body", "crm_types"], "list_type")])
        assertIssues(body(#"{"email":"a@b.co","phone":"\#(String(repeating: "1", count: 65))"}"#), [(["body", "phone"], "string_too_long")])
        guard case let .syncContact(_, _, targets, _)? = decode(body(#"{"email":"a@b.co","crm_types":[]}"#)) else { return XCTFail() }
        XCTAssertEqual(targets, [])
    }

    func testEventFieldChecks() {
        func body(_ s: String) -> HTTPRequest { request("POST", "/crm/sync/event", body: s) }
        assertIssues(body("{}"), [(["body", "event"], "missing"), (["body", "email"], "missing")])
        assertIssues(body(#"{"event":"e","email":"x","value":"12","timestamp":"yesterday","extra":1}"#), [
            (["body", "email"], "value_error"), (["body", "value"], "float_type"), (["body", "timestamp"], "datetime_parsing"),
            (["body", "extra"], "extra_forbidden"),
        ])
        assertIssues(body(#"{"event":"e","email":"a@b.co","properties":[1]}"#), [(["body", "properties"], "dict_type")])
        for ts in ["2025-01-02", "2025-01-02T03:04", "2025-01-02T03:04:05.123Z", "2025-01-02T03:04:05+02:00", "2025-01-02 03:04:05-0500"] {
            XCTAssertNotNil(decode(body(#"{"event":"e","email":"a@b.co","timestamp":"\#(ts)"}"#)), ts)
        }
        for ts in ["2024-02-29", "2000-02-29T23:59:59Z", "2025-12-31T00:00:00.5-23:59", "2025-04-30T12:00+1400"] {
            XCTAssertNotNil(decode(body(#"{"event":"e","email":"a@b.co","timestamp":"\#(ts)"}"#)), ts)
        }
        // Digits in the right places, but no such date or time.
        for ts in ["2025-13-01", "2025-00-10", "2025-01-00", "2025-02-29", "1900-02-29", "2025-04-31", "2025-01-32",
                   "2025-01-02T24:00", "2025-01-02T03:60", "2025-01-02T03:04:60Z", "2025-01-02T03:04+24:00", "2025-01-02T03:04-05:60",
                   "2025-01-02T03:04+0560"] {
            assertIssues(body(#"{"event":"e","email":"a@b.co","timestamp":"\#(ts)"}"#), [(["body", "timestamp"], "datetime_parsing")])
        }
    }

    func testUnknownCRMTypeInBodyIs422Enum() {
        let issues = assertIssues(request("POST", "/crm/validate", body: #"{"crm_type":"nope","credentials":{"api_key":"x"}}"#),
                                  [(["body", "crm_type"], "enum")])
        XCTAssertEqual(issues.first?.msg, "Input should be 'creatio', 'hubspot', 'klaviyo' or 'salesforce'")
        assertIssues(request("POST", "/crm/connect", body: #"{"crm_type":"nope","credentials":{}}"#), [(["body", "crm_type"], "enum")])
        assertIssues(request("POST", "/crm/connect", body: #"{"credentials":{}}"#), [(["body", "crm_type"], "missing")])
        assertIssues(request("POST", "/crm/validate", body: #"{"crm_type":7}"#),
                     [(["body", "crm_type"], "string_type"), (["body", "credentials"], "missing")])
    }

    // MARK: - Credentials

    private func credentials(_ type: String, _ json: String, line: UInt = #line) -> Credentials? {
        guard case let .validate(_, c)? = decode(request("POST", "/crm/validate", body: #"{"crm_type":"\#(type)","credentials":\#(json)}"#),
                                                  line: line) else { return nil }
        return c
    }

    private func credentialIssues(_ type: String, _ json: String, _ missing: [String], other: [([ValidationIssue.Loc], String)] = [],
                                  line: UInt = #line) {
        for path in ["/crm/validate", "/crm/connect"] {
            assertIssues(request("POST", path, body: #"{"crm_type":"\#(type)","credentials":\#(json)}"#),
                         missing.map { (["body", "credentials", .key($0)], "missing") } + other, line: line)
        }
    }

    func testCredentialsAreRequiredAndAnObject() {
        assertIssues(request("POST", "/crm/validate", body: #"{"crm_type":"klaviyo"}"#), [(["body", "credentials"], "missing")])
        assertIssues(request("POST", "/crm/validate", body: #"{"crm_type":"klaviyo","credentials":"pk_1"}"#), [(["body", "credentials"], "dict_type")])
        assertIssues(request("POST", "/crm/validate", body: #"{"crm_type":"klaviyo","credentials":{"api_key":"pk","apikey":"x"}}"#),
                     [(["body", "credentials", "apikey"], "extra_forbidden")])
        assertIssues(request("POST", "/crm/validate", body: #"{"crm_type":"klaviyo","credentials":{"api_key":"pk"},"settings":{}}"#),
                     [(["body", "settings"], "extra_forbidden")])
    }

    func testKlaviyoAndHubSpotCredentials() {
        credentialIssues("klaviyo", "{}", ["api_key"])
        credentialIssues("klaviyo", #"{"api_key":null}"#, ["api_key"])
        credentialIssues("klaviyo", #"{"api_key":""}"#, [], other: [(["body", "credentials", "api_key"], "string_too_short")])
        credentialIssues("hubspot", "{}", ["access_token"])
        credentialIssues("hubspot", #"{"api_key":"pk"}"#, ["access_token"], other: [(["body", "credentials", "api_key"], "extra_forbidden")])
        guard case let .hubspot(token)? = credentials("hubspot", #"{"access_token":"pat-na1-x"}"#) else { return XCTFail() }
        XCTAssertEqual(token.revealed, "pat-na1-x")
    }

    func testSalesforceCredentialShapes() {
        let url = "https://acme.my.salesforce.com"
        let pem = "-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----"
        guard case let .salesforce(.clientCredentials(id, secret, instance))? =
            credentials("salesforce", #"{"client_id":"cid","client_secret":"cs","instance_url":"\#(url)"}"#) else { return XCTFail("client credentials") }
        XCTAssertEqual([id, secret.revealed, instance], ["cid", "cs", url])
        guard case let .salesforce(.jwtBearer(_, user, key, login))? =
            credentials("salesforce", #"{"client_id":"cid","username":"u@x.com","private_key":"\#(pem)"}"#) else { return XCTFail("jwt") }
        XCTAssertEqual(user, "u@x.com")
        XCTAssertTrue(key.revealed.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        XCTAssertNil(login)
        guard case let .salesforce(.token(token, _, refresh, clientID, _))? =
            credentials("salesforce", #"{"access_token":"00D!x","instance_url":"\#(url)","refresh_token":"rt","client_id":"cid"}"#) else { return XCTFail("token") }
        XCTAssertEqual([token.revealed, refresh?.revealed, clientID], ["00D!x", "rt", "cid"])
        guard case let .salesforce(.password(_, _, _, password, securityToken, domain))? =
            credentials("salesforce", #"{"client_id":"cid","client_secret":"cs","username":"u","password":"pw","security_token":"st","domain":"test"}"#)
        else { return XCTFail("password") }
        XCTAssertEqual([password.revealed, securityToken?.revealed, domain], ["pw", "st", "test"])

        // Nothing recognisable: one issue on the credentials object naming the four shapes.
        let issues = assertIssues(request("POST", "/crm/validate", body: #"{"crm_type":"salesforce","credentials":{}}"#),
                                  [(["body", "credentials"], "missing")])
        XCTAssertTrue(issues.first?.msg.contains("client_id+client_secret+instance_url") ?? false)
        // Each shape, incomplete.
        credentialIssues("salesforce", #"{"instance_url":"\#(url)"}"#, ["client_id", "client_secret"])
        credentialIssues("salesforce", #"{"client_id":"cid"}"#, ["client_secret", "instance_url"])
        credentialIssues("salesforce", #"{"private_key":"\#(pem)"}"#, ["client_id", "username"])
        credentialIssues("salesforce", #"{"access_token":"t"}"#, ["instance_url"])
        credentialIssues("salesforce", #"{"access_token":"t","instance_url":"\#(url)","refresh_token":"rt"}"#, ["client_id"])
        credentialIssues("salesforce", #"{"username":"u"}"#, ["client_id", "client_secret", "password"])
        credentialIssues("salesforce", #"{"client_id":"c","client_secret":"s","username":"u"}"#, ["password"])
        // Values that are there but wrong.
        credentialIssues("salesforce", #"{"client_id":"cid","username":"u","private_key":"not a pem"}"#, [],
                         other: [(["body", "credentials", "private_key"], "value_error")])
        credentialIssues("salesforce", #"{"client_id":"c","client_secret":"s","username":"u","password":"p","domain":"prod"}"#, [],
                         other: [(["body", "credentials", "domain"], "enum")])
        credentialIssues("salesforce", #"{"client_id":"c","client_secret":"s","instance_url":"acme.my.salesforce.com"}"#, [],
                         other: [(["body", "credentials", "instance_url"], "url_parsing")])
    }

    func testCreatioCredentialShapes() {
        let base = "https://acme.creatio.com"
        guard case let .creatio(.forms(url, user, password))? =
            credentials("creatio", #"{"base_url":"\#(base)","username":"Supervisor","password":"pw"}"#) else { return XCTFail("forms") }
        XCTAssertEqual([url, user, password.revealed], [base, "Supervisor", "pw"])
        guard case let .creatio(.oauth(_, identity, clientID, secret))? =
            credentials("creatio", #"{"base_url":"\#(base)","identity_url":"https://id.creatio.com","client_id":"c","client_secret":"s"}"#)
        else { return XCTFail("oauth") }
        XCTAssertEqual([identity, clientID, secret.revealed], ["https://id.creatio.com", "c", "s"])

        credentialIssues("creatio", "{}", ["base_url", "username", "password"])
        credentialIssues("creatio", #"{"base_url":"\#(base)","username":"u"}"#, ["password"])
        credentialIssues("creatio", #"{"base_url":"\#(base)","client_id":"c"}"#, ["identity_url", "client_secret"])
        credentialIssues("creatio", #"{"client_id":"c","client_secret":"s","identity_url":"https://id.creatio.com"}"#, ["base_url"])
        credentialIssues("creatio", #"{"base_url":"ftp://x","username":"u","password":"p"}"#, [],
                         other: [(["body", "credentials", "base_url"], "url_parsing")])
    }

    // MARK: - Settings

    private func connect(_ type: String, _ credentials: String, settings: String, line: UInt = #line) -> HTTPRequest {
        request("POST", "/crm/connect", body: #"{"crm_type":"\#(type)","credentials":\#(credentials),"settings":\#(settings)}"#)
    }

    private func settings(_ request: HTTPRequest, line: UInt = #line) -> IntegrationSettings? {
        guard case let .connect(_, _, _, s)? = decode(request, line: line) else { return nil }
        return s
    }

    func testSettingsValidation() {
        let sf = #"{"client_id":"c","client_secret":"s","instance_url":"https://acme.my.salesforce.com"}"#
        let hs = #"{"access_token":"pat"}"#
        let kl = #"{"api_key":"pk"}"#

        XCTAssertEqual(settings(connect("salesforce", sf, settings: #"{"object":"Lead"}"#))?.string("object"), "Lead")
        XCTAssertEqual(settings(connect("salesforce", sf, settings: #"{"object":"Contact","api_version":"v61.0","events":"Order__e"}"#))?
            .string("events"), "Order__e")
        let objectIssue = assertIssues(connect("salesforce", sf, settings: #"{"object":"Account"}"#), [(["body", "settings", "object"], "enum")])
        XCTAssertEqual(objectIssue.first?.msg, "Input should be 'Contact' or 'Lead'")
        assertIssues(connect("salesforce", sf, settings: #"{"api_version":"62"}"#), [(["body", "settings", "api_version"], "string_pattern_mismatch")])
        assertIssues(connect("salesforce", sf, settings: #"{"events":"Order"}"#), [(["body", "settings", "events"], "value_error")])

        XCTAssertEqual(settings(connect("hubspot", hs, settings: #"{"events":"note"}"#))?.string("events"), "note")
        XCTAssertEqual(settings(connect("hubspot", hs, settings: #"{"events":"custom_event"}"#))?.string("events"), "custom_event")
        assertIssues(connect("hubspot", hs, settings: #"{"events":"webhook"}"#), [(["body", "settings", "events"], "enum")])

        let extra = assertIssues(connect("klaviyo", kl, settings: #"{"colour":"red"}"#), [(["body", "settings", "colour"], "extra_forbidden")])
        XCTAssertEqual(extra.first?.msg, "Extra inputs are not permitted")
        assertIssues(connect("klaviyo", kl, settings: #"{"object":"Lead"}"#), [(["body", "settings", "object"], "extra_forbidden")])
        assertIssues(connect("klaviyo", kl, settings: #"{"sync_contacts":"yes"}"#), [(["body", "settings", "sync_contacts"], "bool_type")])
        assertIssues(connect("klaviyo", kl, settings: #""list""#), [(["body", "settings"], "dict_type")])
        assertIssues(connect("klaviyo", kl, settings: #"{"field_mapping":{"email":"bad field!"}}"#),
                     [(["body", "settings", "field_mapping", "email"], "string_pattern_mismatch")])

        // Problems in credentials and settings come back together.
        assertIssues(connect("hubspot", "{}", settings: #"{"events":"x","nope":1}"#), [
            (["body", "credentials", "access_token"], "missing"), (["body", "settings", "events"], "enum"),
            (["body", "settings", "nope"], "extra_forbidden"),
        ])

        let defaults = settings(request("POST", "/crm/connect", body: #"{"crm_type":"klaviyo","credentials":\#(kl)}"#))
        XCTAssertEqual(defaults, IntegrationSettings.defaults)
        XCTAssertEqual(defaults?.json, ["sync_contacts": true, "sync_events": true])
        let mapped = settings(connect("klaviyo", kl, settings: #"{"list_id":"L1","sync_events":false,"field_mapping":{"company":"organization"}}"#))
        XCTAssertEqual(mapped?.fieldMapping?.map { "\($0.0)=\($0.1)" }, ["company=organization"])
        XCTAssertEqual(mapped?.json, ["sync_contacts": true, "sync_events": false, "list_id": "L1", "field_mapping": ["company": "organization"]])
    }

    // MARK: - Logs

    func testLogQueryParameters() {
        func query(_ q: String, line: UInt = #line) -> LogQuery? {
            guard case let .listLogs(_, query)? = decode(request("GET", "/crm/sync/logs" + (q.isEmpty ? "" : "?" + q)), line: line) else { return nil }
            return query
        }
        XCTAssertEqual(query(""), LogQuery())
        XCTAssertEqual(query("")?.limit, 50)
        XCTAssertEqual(query("limit=1")?.limit, 1)
        XCTAssertEqual(query("limit=200")?.limit, 200)
        XCTAssertEqual(query("before_id=10")?.beforeID, 10)
        XCTAssertEqual(query("status=failed")?.status, "failed")
        XCTAssertEqual(query("operation=contact")?.operation, "contact")
        XCTAssertEqual(query("crm_type=hubspot&unknown=1")?.crmType, .hubspot)
        for status in LogQuery.statuses { XCTAssertEqual(query("status=\(status)")?.status, status) }

        func bad(_ q: String, _ expected: [([ValidationIssue.Loc], String)], line: UInt = #line) {
            assertIssues(request("GET", "/crm/sync/logs?" + q), expected, line: line)
        }
        for limit in ["0", "201", "abc", "-1", "", "1.5", "99999999999999999999"] {
            bad("limit=\(limit)", [(["query", "limit"], "int_parsing")])
        }
        for id in ["0", "-5", "abc", ""] { bad("before_id=\(id)", [(["query", "before_id"], "int_parsing")]) }
        bad("status=done", [(["query", "status"], "enum")])
        bad("operation=sync", [(["query", "operation"], "enum")])
        bad("crm_type=nope", [(["query", "crm_type"], "enum")])
        bad("limit=0&status=x&operation=y", [(["query", "limit"], "int_parsing"), (["query", "status"], "enum"), (["query", "operation"], "enum")])
    }

    func testLogIDMustBeAPositiveInteger() {
        for id in ["abc", "0", "-1", "99999999999999999999", "0x1"] {
            let issues = assertIssues(request("GET", "/crm/sync/logs/\(id)"), [(["path", "id"], "int_parsing")])
            XCTAssertEqual(issues.first?.msg, "Input should be a valid positive integer")
            assertIssues(request("POST", "/crm/sync/logs/\(id)/retry"), [(["path", "id"], "int_parsing")])
        }
        guard case .getLog(_, id: 9_223_372_036_854_775_807)? = decode(request("GET", "/crm/sync/logs/9223372036854775807")) else { return XCTFail() }
    }
}
