import CRMCore
import HTTPClient

/// Contact upsert (OData lookup by Email, then create or update) and events (an Activity on
/// the contact), with the session reused and renewed once when it has expired.
extension CreatioConnector {
    public func upsertContact(_ contact: Contact, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver {
            let entity = target.settings.string("contact_entity") ?? "Contact"
            let mapping = fieldMapping(settings: target.settings).overridden(by: target.settings.fieldMapping)
            var fields: [(String, JSON)] = mapping.crmFields(for: contact).map { ($0.0, .string($0.1)) }
            var dropped: [String] = []
            for (name, value) in contact.customProperties {
                if name.hasPrefix("Usr"), name.count > 3, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) {
                    fields.append((name, value))
                } else {
                    dropped.append(name)
                }
            }
            var notes: [String] = []
            if !dropped.isEmpty { notes.append("not sent (Creatio custom columns start with Usr): \(dropped.joined(separator: ", "))") }
            if let found = try await findContact(target, entity: entity, email: contact.email) {
                if found.isOneOfSeveral { notes.insert("several \(entity) records have this email: the oldest was updated", at: 0) }
                let response = try await call(target, method: "PATCH", path: "/\(entity)(\(found.id))", body: .object(fields))
                guard response.status == 204 || response.status == 200 else { throw refused(response) }
                return .success(action: "updated", recordID: found.id, httpStatus: response.status, detail: notes.joinedDetail, response: nil)
            }
            let name = [contact.firstName, contact.lastName].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: " ")
            fields.insert(("Name", .string(name.isEmpty ? contact.email : name)), at: 0)
            let response = try await call(target, method: "POST", path: "/\(entity)", body: .object(fields))
            let json = transport.json(response)
            guard response.status == 201, let id = json?["Id"]?.stringValue else { throw refused(response) }
            return .success(action: "created", recordID: id, httpStatus: 201, detail: notes.joinedDetail, response: json)
        }
    }

    public func sendEvent(_ event: Event, uniqueID: String, mayBeRecorded: Bool, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver {
            let entity = target.settings.string("contact_entity") ?? "Contact"
            let contactID: String
            var detail: String?
            if let found = try await findContact(target, entity: entity, email: event.email) {
                contactID = found.id
                if found.isOneOfSeveral { detail = "several \(entity) records have this email: the Activity is on the oldest" }
            } else {
                let response = try await call(target, method: "POST", path: "/\(entity)", body: ["Name": .string(event.email), "Email": .string(event.email)])
                guard response.status == 201, let id = transport.json(response)?["Id"]?.stringValue else { throw refused(response) }
                guard Self.isGUID(id) else { throw refused(response, "a contact Id that is not a GUID") }
                contactID = id
            }
            // The event id travels in DetailedResult: a retry finds the Activity instead of adding a
            // second one. The lookup narrows to the contact's Activities with this title. The id is
            // a GUID (checked), which OData writes unquoted.
            let title = String(event.name.prefix(250))
            let marker = "\"event_id\":" + JSON.string(uniqueID).jsonString
            if mayBeRecorded, let done = try await activityCarrying(marker, contactID: contactID, title: title, target: target) {
                return .success(action: "sent", recordID: done["Id"]?.stringValue, httpStatus: 200,
                                detail: RecordedEvent.detail(detail), response: nil)
            }
            var details: [(String, JSON)] = [("event_id", .string(uniqueID)), ("properties", .object(event.properties))]
            if let value = event.value { details.append(("value", .double(value))) }
            let time = Clock.eventTime(event.timestamp)
            let response = try await call(target, method: "POST", path: "/Activity", body: .object([
                ("Title", .string(title)), ("ContactId", .string(contactID)),
                ("StartDate", .string(time)), ("DueDate", .string(time)), ("DetailedResult", .string(JSON.object(details).jsonString)),
            ]))
            let json = transport.json(response)
            guard response.status == 201 else { throw refused(response) }
            return .success(action: "sent", recordID: json?["Id"]?.stringValue, httpStatus: 201, detail: detail, response: json)
        }
    }

    // MARK: - Helpers

    /// The contact's Activity with this title whose DetailedResult holds `marker`, if any, among
    /// its newest (`RecordedEvent.newestLookedAt`).
    func activityCarrying(_ marker: String, contactID: String, title: String, target: SyncTarget) async throws -> JSON? {
        let filter = "ContactId eq \(contactID) and Title eq '\(title.replacingQuotes())'"
        let existing = try await call(target, method: "GET", path: "/Activity?" + query([
            ("$filter", filter), ("$select", "Id,DetailedResult"), ("$orderby", "CreatedOn desc,Id desc"), ("$top", String(RecordedEvent.newestLookedAt)),
        ]), body: nil)
        guard existing.status == 200 else { throw refused(existing) }
        return transport.json(existing)?["value"]?.arrayValue?.first { $0["DetailedResult"]?.stringValue?.contains(marker) == true }
    }

    /// The contact an email names. Several may share one, and OData promises no order without
    /// `$orderby`: the oldest is chosen (then the lowest Id), so that every update and every
    /// Activity lands on the same one. Its Id must be a GUID, as Creatio's are: it goes unquoted
    /// into a key (`Contact(<id>)`) and a filter.
    func findContact(_ target: SyncTarget, entity: String, email: String) async throws -> RecordMatch? {
        let filter = "Email eq '\(email.replacingQuotes())'"
        let response = try await call(target, method: "GET", path: "/\(entity)?" + query([("$filter", filter), ("$select", "Id"), ("$orderby", "CreatedOn asc,Id asc"), ("$top", "2")]), body: nil)
        guard response.status == 200 else { throw refused(response) }
        let values = transport.json(response)?["value"]?.arrayValue ?? []
        guard let id = values.first?["Id"]?.stringValue else { return nil }
        guard Self.isGUID(id) else { throw refused(response, "a contact Id that is not a GUID") }
        return RecordMatch(id: id, isOneOfSeveral: values.count > 1)
    }

    /// 8-4-4-4-12 hexadecimal digits.
    static func isGUID(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard bytes.count == 36 else { return false }
        for (i, b) in bytes.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard b == UInt8(ascii: "-") else { return false }
            } else {
                guard (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x66) else { return false }
            }
        }
        return true
    }

    func query(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(FormEncoding.percent($0.0))=\(FormEncoding.percent($0.1))" }.joined(separator: "&")
    }

    func refused(_ response: HTTPClientResponse, _ message: String? = nil) -> Finished {
        transport.refused(response, message ?? transport.json(response)?["error"]?["message"]?.stringValue ?? "unexpected answer")
    }

    /// An OData call with the cached session; an expired session (401, or a redirect to the
    /// login page) is renewed once, then the call is retried.
    func call(_ target: SyncTarget, method: String, path: String, body: JSON?) async throws -> HTTPClientResponse {
        guard case let .creatio(credentials) = target.credentials else {
            throw Finished(outcome: .permanent(httpStatus: nil, error: "not Creatio credentials", authFailure: true, response: nil))
        }
        let key = target.cacheKey
        var session: Session
        if let cached = sessions.get(key) { session = cached } else { session = try await newSession(credentials, key: key) }
        var response = try await send(session, credentials, method: method, path: path, body: body)
        if Self.sessionExpired(response) {
            sessions.remove(key)
            session = try await newSession(credentials, key: key)
            response = try await send(session, credentials, method: method, path: path, body: body)
            if Self.sessionExpired(response) {
                sessions.remove(key)
                throw Finished(outcome: .permanent(httpStatus: response.status, error: "Creatio rejected a fresh session: reconnect the integration",
                                                   authFailure: true, response: nil))
            }
        }
        return response
    }

    static func sessionExpired(_ response: HTTPClientResponse) -> Bool {
        response.status == 401 || ((response.status == 302 || response.status == 301) && (response.header("Location") ?? "").lowercased().contains("login"))
    }

    private func send(_ session: Session, _ credentials: CreatioCredentials, method: String, path: String, body: JSON?) async throws(ConnectorError) -> HTTPClientResponse {
        var headers = [("Accept", "application/json")] + session.headers
        if body != nil { headers.append(("Content-Type", "application/json; charset=utf-8; IEEE754Compatible=true")) }
        let url = Self.baseURL(credentials) + "/0/odata" + path
        return try await transport.send(HTTPClientRequest(method: method, url: url, headers: headers, body: body?.serialized()))
    }

    private func newSession(_ credentials: CreatioCredentials, key: String) async throws -> Session {
        switch try await login(credentials) {
        case let .session(session):
            sessions.set(key, session)
            return session
        case let .rejected(reason):
            throw Finished(outcome: .permanent(httpStatus: 401, error: "Creatio refused the login: \(reason)", authFailure: true, response: nil))
        }
    }
}

extension String {
    /// OData string literal escaping: `'` doubled.
    func replacingQuotes() -> String { split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") }
}
