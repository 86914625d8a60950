import CRMCore
import HTTPClient

/// Contact upsert (lookup by email then create/update, or upsert by an external id field)
/// and events (a Task on the contact, or a Platform Event), with the session reused and
/// renewed once on 401 `INVALID_SESSION_ID`.
extension SalesforceConnector {
    static let placeholder = "[not provided]"

    public func upsertContact(_ contact: Contact, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver {
            let object = target.settings.string("object") ?? "Contact"
            let mapping = fieldMapping(settings: target.settings).overridden(by: target.settings.fieldMapping)
            var fields: [(String, JSON)] = mapping.crmFields(for: contact).map { ($0.0, .string($0.1)) }
            var dropped: [String] = []
            for (name, value) in contact.customProperties {
                if Self.isCustomFieldName(name) { fields.append((name, value)) } else { dropped.append(name) }
            }
            var notes: [String] = []
            if !dropped.isEmpty { notes.append("not sent (Salesforce custom fields end in __c): \(dropped.joined(separator: ", "))") }

            if let externalField = target.settings.string("external_id_field") {
                // PATCH …/sobjects/Contact/{Field}/{value}: 201 created, 200 updated, 300 several matches.
                let body = withRequiredDefaults(fields.filter { $0.0 != externalField && $0.0 != "Id" }, object: object)
                let path = "/sobjects/\(object)/\(externalField)/\(FormEncoding.percent(contact.email))"
                let response = try await call(target, method: "PATCH", path: path, body: .object(body))
                let json = transport.json(response)
                if response.status == 404 {
                    // Salesforce takes some top-level domains at the end of a path for a file format
                    // (`jane@acme.inc` is 404): its documented way round is to look the value up.
                    return try await upsertByQuery(target, object: object, field: externalField, value: contact.email,
                                                   fields: fields, notes: notes)
                }
                guard response.status == 200 || response.status == 201 else { throw refusedWithCode(response, json) }
                let created = json?["created"]?.boolValue ?? (response.status == 201)
                return .success(action: created ? "created" : "updated", recordID: json?["id"]?.stringValue,
                                httpStatus: response.status, detail: notes.joinedDetail, response: json)
            }

            if let found = try await findRecord(target, object: object, value: contact.email) {
                if found.isOneOfSeveral { notes.insert("several \(object)s have this email: the oldest was updated", at: 0) }
                // The id is the CRM's: encoded, so that an odd one cannot name another path.
                let response = try await call(target, method: "PATCH", path: "/sobjects/\(object)/\(FormEncoding.percent(found.id))", body: .object(fields))
                guard response.status == 204 || response.status == 200 else { throw refusedWithCode(response, transport.json(response)) }
                return .success(action: "updated", recordID: found.id, httpStatus: response.status, detail: notes.joinedDetail, response: nil)
            }
            let response = try await call(target, method: "POST", path: "/sobjects/\(object)/", body: .object(withRequiredDefaults(fields, object: object)))
            let json = transport.json(response)
            guard response.status == 201, let id = json?["id"]?.stringValue else { throw refusedWithCode(response, json) }
            return .success(action: "created", recordID: id, httpStatus: response.status, detail: notes.joinedDetail, response: json)
        }
    }

    /// Upsert by an external id field without its value in the path: a query for the records
    /// holding it, then an update of the one, or a create; several are refused as a 300 would be.
    func upsertByQuery(_ target: SyncTarget, object: String, field: String, value: String,
                       fields: [(String, JSON)], notes: [String]) async throws -> DeliveryOutcome {
        let found = try await findRecord(target, object: object, field: field, value: value)
        if found?.isOneOfSeveral == true {
            throw Finished(outcome: .permanent(httpStatus: 300, error: "several Salesforce records match this external id", authFailure: false, response: nil))
        }
        let others = fields.filter { $0.0 != field && $0.0 != "Id" }
        if let id = found?.id {
            let response = try await call(target, method: "PATCH", path: "/sobjects/\(object)/\(FormEncoding.percent(id))", body: .object(others))
            guard response.status == 204 || response.status == 200 else { throw refusedWithCode(response, transport.json(response)) }
            return .success(action: "updated", recordID: id, httpStatus: response.status, detail: notes.joinedDetail, response: nil)
        }
        let body = withRequiredDefaults(others + [(field, .string(value))], object: object)
        let response = try await call(target, method: "POST", path: "/sobjects/\(object)/", body: .object(body))
        let json = transport.json(response)
        guard response.status == 201, let id = json?["id"]?.stringValue else { throw refusedWithCode(response, json) }
        return .success(action: "created", recordID: id, httpStatus: response.status, detail: notes.joinedDetail, response: json)
    }

    public func sendEvent(_ event: Event, uniqueID: String, mayBeRecorded: Bool, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver {
            let kind = target.settings.string("events") ?? "task"
            let time = Clock.eventTime(event.timestamp)
            var payload = event.properties
            if let value = event.value { payload.append(("value", .double(value))) }
            if kind != "task" {
                // A Platform Event: published asynchronously, not deduplicated by Salesforce.
                let body: JSON = .object([
                    ("Event_Name__c", .string(event.name)), ("Contact_Email__c", .string(event.email)),
                    ("Payload__c", .string(JSON.object(payload).jsonString)), ("Occurred_At__c", .string(time)),
                    ("Event_Id__c", .string(uniqueID)),
                ])
                let response = try await call(target, method: "POST", path: "/sobjects/\(kind)/", body: body)
                let json = transport.json(response)
                guard response.status == 201 || response.status == 200 else { throw refusedWithCode(response, json) }
                return .success(action: "sent", recordID: json?["id"]?.stringValue, httpStatus: response.status, detail: nil, response: json)
            }
            let object = target.settings.string("object") ?? "Contact"
            let whoID: String
            var detail: String?
            if let found = try await findRecord(target, object: object, value: event.email) {
                whoID = found.id
                if found.isOneOfSeveral { detail = "several \(object)s have this email: the Task is on the oldest" }
            } else {
                // The event's contact does not exist yet: create a minimal one so the Task has a WhoId.
                let body = withRequiredDefaults([("Email", .string(event.email))], object: object)
                let response = try await call(target, method: "POST", path: "/sobjects/\(object)/", body: .object(body))
                let json = transport.json(response)
                guard response.status == 201, let id = json?["id"]?.stringValue else { throw refusedWithCode(response, json) }
                whoID = id
            }
            // The event id is stored on the Task: a retry after an ambiguous failure finds it instead
            // of adding a second one. Description cannot be filtered in SOQL (a long text area), so
            // the query narrows to the contact's newest Tasks with this subject (without an order,
            // an answer's first page of 2,000 need not hold the newest), and the marker is looked
            // for in those.
            let marker = "[event-id: \(uniqueID)]"
            let subject = String(event.name.prefix(255))
            let existing = mayBeRecorded
                ? try await query(target, "SELECT Id, Description FROM Task WHERE WhoId = '\(Self.soqlEscape(whoID))' AND Subject = '\(Self.soqlEscape(subject))'"
                                  + " ORDER BY CreatedDate DESC, Id DESC LIMIT \(RecordedEvent.newestLookedAt)")
                : []
            if let done = existing.first(where: { $0["Description"]?.stringValue?.contains(marker) == true }) {
                return .success(action: "sent", recordID: done["Id"]?.stringValue, httpStatus: 200,
                                detail: RecordedEvent.detail(detail), response: nil)
            }
            let description = JSON.object(payload).jsonString + "\n" + marker
            let body: JSON = .object([
                ("WhoId", .string(whoID)), ("Subject", .string(subject)), ("Status", "Completed"),
                ("Priority", "Normal"), ("ActivityDate", .string(String(time.prefix(10)))),
                ("Description", .string(String(description.suffix(32_000)))), ("TaskSubtype", "Task"),
            ])
            let response = try await call(target, method: "POST", path: "/sobjects/Task/", body: body)
            let json = transport.json(response)
            guard response.status == 201 else { throw refusedWithCode(response, json) }
            return .success(action: "sent", recordID: json?["id"]?.stringValue, httpStatus: response.status, detail: detail, response: json)
        }
    }

    // MARK: - Helpers

    static func isCustomFieldName(_ name: String) -> Bool {
        name.hasSuffix("__c") && name.utf8.allSatisfy { b in
            b == 0x5F || (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
        }
    }

    /// Contact needs LastName; Lead needs LastName and Company: placeholders when creating.
    func withRequiredDefaults(_ fields: [(String, JSON)], object: String) -> [(String, JSON)] {
        var out = fields
        if !out.contains(where: { $0.0 == "LastName" }) { out.append(("LastName", .string(Self.placeholder))) }
        if object == "Lead", !out.contains(where: { $0.0 == "Company" }) { out.append(("Company", .string(Self.placeholder))) }
        return out
    }

    /// The record whose `field` (the email, unless an external id field is named) holds `value`.
    /// Salesforce lets several records share an email, and promises no order without ORDER BY:
    /// the oldest is chosen (then the lowest Id), so that every update and every Task lands on
    /// the same one.
    func findRecord(_ target: SyncTarget, object: String, field: String = "Email", value: String) async throws -> RecordMatch? {
        let records = try await query(target, "SELECT Id FROM \(object) WHERE \(field) = '\(Self.soqlEscape(value))' ORDER BY CreatedDate ASC, Id ASC LIMIT 2")
        guard let id = records.first?["Id"]?.stringValue else { return nil }
        return RecordMatch(id: id, isOneOfSeveral: records.count > 1)
    }

    func query(_ target: SyncTarget, _ soql: String) async throws -> [JSON] {
        let response = try await call(target, method: "GET", path: "/query/?q=" + FormEncoding.escape(soql), body: nil)
        let json = transport.json(response)
        guard response.status == 200 else { throw refusedWithCode(response, json) }
        return json?["records"]?.arrayValue ?? []
    }

    /// A string literal for SOQL: `\` and `'` escaped, and line breaks and tabs written as SOQL's
    /// escape sequences.
    static func soqlEscape(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\", "'": out += "\\" + String(c)
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// One API call with the cached session; on 401 the session is renewed once and the call
    /// retried; a second 401 is an authentication failure.
    func call(_ target: SyncTarget, method: String, path: String, body: JSON?) async throws -> HTTPClientResponse {
        guard case let .salesforce(credentials) = target.credentials else {
            throw Finished(outcome: .permanent(httpStatus: nil, error: "not Salesforce credentials", authFailure: true, response: nil))
        }
        let key = target.cacheKey
        let version = target.settings.string("api_version")
        var session: SalesforceSession
        if let cached = sessions.get(key) { session = cached } else { session = try await newSession(credentials, key: key) }
        var response = try await send(session, method: method, path: path, body: body, version: version)
        if response.status == 401 {
            sessions.remove(key)
            session = try await renewedSession(credentials, key: key)
            response = try await send(session, method: method, path: path, body: body, version: version)
            if response.status == 401 {
                sessions.remove(key)
                throw Finished(outcome: .permanent(httpStatus: 401, error: "Salesforce rejected the session twice (INVALID_SESSION_ID): reconnect the integration",
                                                   authFailure: true, response: transport.json(response)))
            }
        }
        // Salesforce throttles with 403 REQUEST_LIMIT_EXCEEDED; a locked row is worth another try await too.
        if let code = Self.errorCode(transport.json(response)), code == "REQUEST_LIMIT_EXCEEDED" || code == "UNABLE_TO_LOCK_ROW" {
            throw ConnectorError(.crmFailure, httpStatus: response.status, detail: "Salesforce answered HTTP \(response.status) \(code)",
                                 retryAfterSeconds: RetryPolicy.retryAfterSeconds(response.header("Retry-After")) ?? (code == "REQUEST_LIMIT_EXCEEDED" ? 300 : nil),
                                 response: transport.json(response), rateLimited: code == "REQUEST_LIMIT_EXCEEDED")
        }
        return response
    }

    private func send(_ session: SalesforceSession, method: String, path: String, body: JSON?, version: String?) async throws(ConnectorError) -> HTTPClientResponse {
        var headers = [("Authorization", "Bearer \(session.accessToken.revealed)"), ("Accept", "application/json")]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        let url = session.instanceURL + "/services/data/\(version ?? endpoints.salesforceAPIVersion)" + path
        return try await transport.send(HTTPClientRequest(method: method, url: url, headers: headers, body: body?.serialized()))
    }

    private func newSession(_ credentials: SalesforceCredentials, key: String) async throws -> SalesforceSession {
        switch try await auth.session(for: credentials) {
        case let .session(session):
            sessions.set(key, session)
            return session
        case let .rejected(reason):
            throw Finished(outcome: .permanent(httpStatus: 400, error: "Salesforce refused the credentials: \(reason)", authFailure: true, response: nil))
        }
    }

    /// After a 401: the refresh token when there is one, else a new session from the credentials.
    private func renewedSession(_ credentials: SalesforceCredentials, key: String) async throws -> SalesforceSession {
        guard let refreshed = try await auth.refresh(credentials) else { return try await newSession(credentials, key: key) }
        switch refreshed {
        case let .session(session):
            sessions.set(key, session)
            return session
        case let .rejected(reason):
            throw Finished(outcome: .permanent(httpStatus: 400, error: "Salesforce refused to refresh the token: \(reason)", authFailure: true, response: nil))
        }
    }

    static func errorCode(_ json: JSON?) -> String? { json?.arrayValue?.first?["errorCode"]?.stringValue }

    func refusedWithCode(_ response: HTTPClientResponse, _ json: JSON?) -> Finished {
        if response.status == 300 {
            return Finished(outcome: .permanent(httpStatus: 300, error: "several Salesforce records match this external id", authFailure: false, response: json))
        }
        let first = json?.arrayValue?.first
        let message = [first?["errorCode"]?.stringValue, first?["message"]?.stringValue].compactMap { $0 }.joined(separator: ": ")
        return transport.refused(response, message.isEmpty ? "unexpected answer" : message)
    }
}
