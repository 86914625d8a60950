import CRMCore
import FoundationEssentials
import HTTPClient

/// What a portal accepts, fetched once and reused.
struct PortalInfo: Sendable {
    var portalID: String
    var contactProperties: Set<String>
    /// Why the contact properties could not be read (a token without the scope), if so: the
    /// contacts still sync, without their custom properties.
    var propertiesUnreadable: String?
    /// The account's offset from UTC (`utcOffsetMilliseconds`): its daily API limit resets at its midnight.
    var utcOffsetSeconds: Int?
    var fetchedAt: Date
}

/// Contact batch upsert by email, and events as custom events or notes.
extension HubSpotConnector {
    var dated: Bool { endpoints.hubspotAPIVersion.first?.isNumber == true }
    /// `/crm/v3/objects/contacts` or `/crm/objects/2026-03/contacts`.
    func objectsPath(_ object: String) -> String {
        dated ? "/crm/objects/\(endpoints.hubspotAPIVersion)/\(object)" : "/crm/\(endpoints.hubspotAPIVersion)/objects/\(object)"
    }
    func propertiesPath(_ object: String) -> String {
        dated ? "/crm/properties/\(endpoints.hubspotAPIVersion)/\(object)" : "/crm/\(endpoints.hubspotAPIVersion)/properties/\(object)"
    }

    public func upsertContact(_ contact: Contact, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver { try await untilDailyReset(target) {
            let token = try await token(target)
            let portal = try await portalInfo(target, token: token)
            var properties: [(String, JSON)] = []
            for (field, value) in fieldMapping(settings: target.settings).overridden(by: target.settings.fieldMapping).crmFields(for: contact) {
                properties.append((field, .string(value)))
            }
            // Custom properties must already exist in the portal: unknown ones are dropped and reported.
            var dropped: [String] = []
            for (name, value) in contact.customProperties {
                let property = Self.propertyName(name)
                guard portal.contactProperties.contains(property) else { dropped.append(name); continue }
                properties.append((property, .string(Self.stringValue(value))))
            }
            let reason = portal.propertiesUnreadable.map { "this token cannot read the portal's contact properties: \($0)" }
                ?? "no such contact property in the HubSpot portal"
            let detail = dropped.isEmpty ? nil : "not sent (\(reason)): \(dropped.joined(separator: ", "))"
            let body: JSON = ["inputs": [.object([
                ("idProperty", "email"), ("id", .string(contact.email)), ("properties", .object(properties)),
            ])]]
            let response = try await send(token, method: "POST", path: objectsPath("contacts") + "/batch/upsert", body: body)
            let json = transport.json(response)
            guard response.status == 200 || response.status == 201, let result = json?["results"]?.arrayValue?.first else {
                throw refused(response, json)
            }
            let created = result["new"]?.boolValue ?? false
            return .success(action: created ? "created" : "updated", recordID: Self.idString(result["id"]), httpStatus: response.status, detail: detail, response: json)
        } }
    }

    public func sendEvent(_ event: Event, uniqueID: String, mayBeRecorded: Bool, for target: SyncTarget) async -> DeliveryOutcome {
        await deliver { try await untilDailyReset(target) {
            let token = try await token(target)
            var properties: [(String, JSON)] = event.properties.map { (Self.propertyName($0.0), .string(Self.stringValue($0.1))) }
            if let value = event.value { properties.append(("value", .string(Self.stringValue(.double(value))))) }
            let time = Clock.eventTime(event.timestamp)
            if target.settings.string("events") == "note" {
                // Notes: upsert the contact by email for its id, then a note associated with it.
                let upsert = try await send(token, method: "POST", path: objectsPath("contacts") + "/batch/upsert", body: ["inputs": [.object([
                    ("idProperty", "email"), ("id", .string(event.email)), ("properties", ["email": .string(event.email)]),
                ])]])
                let upserted = transport.json(upsert)
                guard upsert.status == 200 || upsert.status == 201, let contactID = Self.idString(upserted?["results"]?.arrayValue?.first?["id"]) else {
                    throw refused(upsert, upserted)
                }
                // The event id is written into the note: a retry after a lost answer finds the note
                // instead of adding a second one.
                let marker = "event-id: \(Self.html(uniqueID))"
                if mayBeRecorded, let done = try await noteCarrying(marker, onContact: contactID, token: token) {
                    return .success(action: "sent", recordID: done, httpStatus: 200, detail: RecordedEvent.detail(nil), response: nil)
                }
                var lines = ["<p><strong>\(Self.html(event.name))</strong></p>"]
                for (k, v) in properties { lines.append("<p>\(Self.html(k)): \(Self.html(v.stringValue ?? ""))</p>") }
                lines.append("<p>\(marker)</p>")
                let response = try await send(token, method: "POST", path: objectsPath("notes"), body: .object([
                    ("properties", .object([("hs_note_body", .string(lines.joined())), ("hs_timestamp", .string(time))])),
                    ("associations", [["to": ["id": .string(contactID)], "types": [["associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202]]]]),
                ]))
                let json = transport.json(response)
                guard response.status == 201 || response.status == 200 else { throw refused(response, json) }
                return .success(action: "sent", recordID: Self.idString(json?["id"]), httpStatus: response.status, detail: nil, response: json)
            }
            let portalID = try await portalInfo(target, token: token).portalID
            let eventsPath = "/events/\(endpoints.hubspotAPIVersion)/send"
            let body: JSON = .object([
                ("eventName", .string("pe\(portalID)_\(Self.propertyName(event.name))")), ("email", .string(event.email)),
                ("occurredAt", .string(time)), ("uuid", .string(Self.uuid(from: uniqueID))), ("properties", .object(properties)),
            ])
            let response = try await send(token, method: "POST", path: eventsPath, body: body)
            guard response.status == 204 || response.status == 200 else { throw refused(response, transport.json(response)) }
            return .success(action: "sent", recordID: Self.uuid(from: uniqueID), httpStatus: response.status, detail: nil, response: nil)
        } }
    }

    // MARK: - Helpers

    /// A 429 whose `policyName` is `DAILY`: the account's daily API limit is used up until its
    /// midnight. Retried then (the account's offset comes with its details; an hour while it is
    /// unknown), rather than backing off from 30 s and spending every attempt before the reset.
    func untilDailyReset(_ target: SyncTarget, _ flow: () async throws -> DeliveryOutcome) async throws -> DeliveryOutcome {
        do {
            return try await flow()
        } catch let error as ConnectorError where error.httpStatus == 429 && error.response?["policyName"]?.stringValue == "DAILY" {
            let wait = portals.get(target.cacheKey)?.utcOffsetSeconds.map { Clock.secondsUntilMidnight(utcOffsetSeconds: $0) + 60 } ?? 3600
            throw ConnectorError(.crmFailure, httpStatus: 429, detail: "HubSpot's daily API limit is used up; retried after it resets (the account's midnight)",
                                 retryAfterSeconds: max(Double(wait), error.retryAfterSeconds ?? 0), response: error.response)
        }
    }

    /// The id of a note on the contact whose body holds `marker` as a whole line (followed by a
    /// tag or the end, whatever HubSpot made of the paragraph around it), among the newest 100 of
    /// the contact's notes. Search is not used: it lags behind writes, and a retry can come within
    /// a second.
    func noteCarrying(_ marker: String, onContact contactID: String, token: Secret) async throws -> String? {
        let ids = try await noteIDs(onContact: contactID, token: token)
        guard !ids.isEmpty else { return nil }
        // Note ids grow with time: the newest first.
        let newest = ids.sorted { ($0.count, $0) > ($1.count, $1) }.prefix(100)
        let read = try await send(token, method: "POST", path: objectsPath("notes") + "/batch/read", body: .object([
            ("properties", ["hs_note_body"]), ("propertiesWithHistory", []), ("inputs", .array(newest.map { .object([("id", .string($0))]) })),
        ]))
        let notes = transport.json(read)
        // 207: some listed notes are gone (deleted meanwhile); the others are in `results`.
        guard read.status == 200 || read.status == 207 else { throw refused(read, notes) }
        let found = (notes?["results"]?.arrayValue ?? []).first { Self.body($0["properties"]?["hs_note_body"]?.stringValue, holds: marker) }
        return found.flatMap { Self.idString($0["id"]) }
    }

    /// The ids of the notes associated with the contact, from HubSpot's association list: pages of
    /// up to 500 in no promised order (a record read lists only the first 100, which on a busy
    /// contact need not hold the note an attempt created moments ago). At most
    /// `noteListPages` pages, so that a contact with tens of thousands of notes costs a bounded
    /// number of calls; beyond that the note may not be found, and the event is sent again.
    func noteIDs(onContact contactID: String, token: Secret) async throws -> [String] {
        var ids: [String] = []
        var after: String?
        for _ in 0..<Self.noteListPages {
            let page = try await send(token, method: "GET", path: objectsPath("contacts") + "/\(FormEncoding.percent(contactID))/associations/notes?limit=500"
                                      + (after.map { "&after=" + FormEncoding.percent($0) } ?? ""), body: nil)
            let json = transport.json(page)
            guard page.status == 200 else { throw refused(page, json) }
            ids += (json?["results"]?.arrayValue ?? []).compactMap { Self.idString($0["id"]) }
            guard let next = json?["paging"]?["next"]?["after"]?.stringValue, !next.isEmpty else { break }
            after = next
        }
        return ids
    }

    /// Pages of the association list a note lookup reads at most (500 notes each).
    static let noteListPages = 20

    /// `marker` followed by `<`, a line break or the end: `event-id: order-1` is not found in
    /// `event-id: order-10`.
    static func body(_ body: String?, holds marker: String) -> Bool {
        guard let body else { return false }
        var rest = body[...]
        while let range = rest.firstRange(of: marker) {
            let next = rest[range.upperBound...].first
            if next == nil || next == "<" || next == "\n" || next == "\r\n" { return true }
            rest = rest[range.upperBound...]
        }
        return false
    }

    func token(_ target: SyncTarget) async throws -> Secret {
        guard case let .hubspot(token) = target.credentials else {
            throw Finished(outcome: .permanent(httpStatus: nil, error: "not HubSpot credentials", authFailure: true, response: nil))
        }
        return token
    }

    func send(_ token: Secret, method: String, path: String, body: JSON?) async throws(ConnectorError) -> HTTPClientResponse {
        var headers = [("Authorization", "Bearer \(token.revealed)"), ("Accept", "application/json")]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        // An upsert by email may safely be re-sent; a note or an event may not.
        let idempotent = method != "POST" || path.hasSuffix("/batch/upsert")
        return try await transport.send(HTTPClientRequest(method: method, url: base + path, headers: headers, body: body?.serialized(), idempotent: idempotent))
    }

    func portalInfo(_ target: SyncTarget, token: Secret) async throws -> PortalInfo {
        let key = target.cacheKey
        if let cached = portals.get(key), Date().timeIntervalSince(cached.fetchedAt) < 300 { return cached }
        let account = try await send(token, method: "GET", path: "/account-info/\(endpoints.hubspotAPIVersion)/details", body: nil)
        guard account.status == 200 else { throw refused(account, transport.json(account)) }
        let response = try await send(token, method: "GET", path: propertiesPath("contacts"), body: nil)
        let json = transport.json(response)
        var unreadable: String?
        if response.status == 403 {
            // Reading properties takes its own scope (crm.schemas.contacts.read), which a token
            // that only syncs contacts and events may lack: not an authentication failure.
            unreadable = Self.missingScopes(json) ?? "HTTP 403"
        } else if response.status != 200 {
            throw refused(response, json)
        }
        let names = (json?["results"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
        // HubSpot always tells it: without it no event can be named, but that is HubSpot's
        // failure, retried, and nothing is kept for five minutes of failed events.
        guard let portalID = Self.idString(transport.json(account)?["portalId"]) else {
            throw ConnectorError(.crmFailure, httpStatus: account.status, detail: "HubSpot's account details gave no portalId")
        }
        let offset = transport.json(account)?["utcOffsetMilliseconds"]?.doubleValue.map { Int($0 / 1000) }
        let info = PortalInfo(portalID: portalID, contactProperties: Set(names), propertiesUnreadable: unreadable,
                              utcOffsetSeconds: offset, fetchedAt: Date())
        portals.set(key, info)
        return info
    }

    func refused(_ response: HTTPClientResponse, _ json: JSON?) -> Finished {
        // A 207 (a batch's partial failure) has no message of its own: its first error's.
        let error = json?["message"] == nil ? json?["errors"]?.arrayValue?.first : json
        let message = [error?["category"]?.stringValue, error?["message"]?.stringValue].compactMap { $0 }.joined(separator: ": ")
        return transport.refused(response, message.isEmpty ? "unexpected answer" : message)
    }

    /// HubSpot property and event names: lower-case, spaces and dots become `_`.
    static func propertyName(_ name: String) -> String {
        String(name.lowercased().map { $0 == " " || $0 == "." || $0 == "-" ? "_" : $0 }.filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
    }

    /// Property values are strings: booleans `true`/`false`, null clears (`""`).
    static func stringValue(_ value: JSON) -> String {
        switch value {
        case let .string(s): return s
        case let .bool(b): return b ? "true" : "false"
        case .null: return ""
        case let .int(i): return String(i)
        case let .double(d): return d.rounded() == d && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        default: return value.jsonString
        }
    }

    /// "missing scope a, b" from a 403's `errors[0].context.requiredGranularScopes`, if it names any.
    static func missingScopes(_ error: JSON?) -> String? {
        let scopes = error?["errors"]?.arrayValue?.first?["context"]?["requiredGranularScopes"]?.arrayValue?.compactMap(\.stringValue) ?? []
        return scopes.isEmpty ? nil : "missing scope \(scopes.joined(separator: ", "))"
    }

    static func idString(_ value: JSON?) -> String? {
        switch value {
        case let .string(s)?: return s
        case let .int(i)?: return String(i)
        default: return nil
        }
    }

    static func html(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    /// A stable UUID for a unique id (HubSpot's `uuid` must be one): the id itself when it is a UUID.
    static func uuid(from id: String) -> String {
        if UUID(uuidString: id) != nil { return id.lowercased() }
        var a: UInt64 = 0xcbf29ce484222325, b: UInt64 = 0x84222325cbf29ce4
        for byte in id.utf8 {
            a = (a ^ UInt64(byte)) &* 0x100000001b3
            b = (b ^ UInt64(byte)) &* 0x100000001b3 &+ 0x9e3779b97f4a7c15
        }
        let hex = String(a, radix: 16).leftPad(16) + String(b, radix: 16).leftPad(16)
        let c = Array(hex)
        return "\(String(c[0..<8]))-\(String(c[8..<12]))-5\(String(c[13..<16]))-a\(String(c[17..<20]))-\(String(c[20..<32]))"
    }
}
