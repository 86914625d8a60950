/// A user's settings for one integration, checked per CRM type. Stored as JSON; `json`
/// is what responses show (defaults filled in).
public struct IntegrationSettings: Sendable, Equatable {
    public var syncContacts: Bool
    public var syncEvents: Bool
    /// Deprecated `{"standard_field": "crm_field"}` overrides, applied on top of the standard mapping.
    public var fieldMapping: [(String, String)]?
    /// The type-specific keys as given (already validated).
    public var specific: [(String, JSON)]

    public static func == (a: Self, b: Self) -> Bool { a.json == b.json }

    public static let defaults = IntegrationSettings(syncContacts: true, syncEvents: true, fieldMapping: nil, specific: [])

    public func value(_ key: String) -> JSON? { specific.last(where: { $0.0 == key })?.1 }
    public func string(_ key: String) -> String? { value(key)?.stringValue }

    public var json: JSON {
        var pairs: [(String, JSON)] = [("sync_contacts", .bool(syncContacts)), ("sync_events", .bool(syncEvents))]
        pairs += specific
        if let fieldMapping { pairs.append(("field_mapping", .object(fieldMapping.map { ($0.0, .string($0.1)) }))) }
        return .object(pairs)
    }

    /// `json`, written in place (GET /crm/list writes one per integration on every call).
    public func write(to out: inout JSONBytes) {
        out.literal(#"{"sync_contacts":"#)
        out.bool(syncContacts)
        out.literal(#","sync_events":"#)
        out.bool(syncEvents)
        for (key, value) in specific {
            out.literal(",")
            out.string(key)
            out.literal(":")
            out.value(value)
        }
        if let fieldMapping {
            out.literal(#","field_mapping":{"#)
            for (i, (field, target)) in fieldMapping.enumerated() {
                if i > 0 { out.literal(",") }
                out.string(field)
                out.literal(":")
                out.string(target)
            }
            out.literal("}")
        }
        out.literal("}")
    }

    /// Whether `key` is one only `type`'s settings have. A switch over literals, not a Set:
    /// settings are decoded for every integration on every list, and a shared Set's reference
    /// count, taken and given back by every request thread, bounces between the cores.
    static func isSpecific(_ key: String, for type: CRMType) -> Bool {
        switch (type, key) {
        case (.klaviyo, "list_id"), (.creatio, "contact_entity"), (.hubspot, "events"),
             (.salesforce, "object"), (.salesforce, "api_version"), (.salesforce, "external_id_field"), (.salesforce, "events"):
            true
        default:
            false
        }
    }

    /// Whether `type`'s settings may have `key`.
    static func isKnown(_ key: String, for type: CRMType) -> Bool {
        switch key {
        case "sync_contacts", "sync_events", "field_mapping": true
        default: isSpecific(key, for: type)
        }
    }

    /// Decodes settings for `type` (absent → defaults), reporting problems at `loc`.
    public static func decode(_ value: JSON?, for type: CRMType, at loc: [ValidationIssue.Loc]) -> Result<IntegrationSettings, APIError> {
        guard let value, !value.isNull else { return .success(.defaults) }
        guard var r = FieldReader(value, at: loc) else {
            return .failure(.invalid(loc, "Input should be a valid dictionary", type: "dict_type"))
        }
        r.rejectUnknown { isKnown($0, for: type) }
        var settings = IntegrationSettings.defaults
        settings.syncContacts = r.bool("sync_contacts") ?? true
        settings.syncEvents = r.bool("sync_events") ?? true
        if let mapping = r.object("field_mapping")?.objectValue {
            var pairs: [(String, String)] = []
            for (key, v) in mapping {
                guard let target = v.stringValue, isFieldName(target) else {
                    r.issues_append(loc + ["field_mapping", .key(key)], "Input should be a CRM field name (letters, digits, _ . -)", type: "string_pattern_mismatch")
                    continue
                }
                pairs.append((key, target))
            }
            settings.fieldMapping = pairs
        }
        for (key, v) in r.pairs where isSpecific(key, for: type) && !v.isNull {
            guard let s = r.string(key) else { continue }
            if let problem = problem(type: type, key: key, value: s) {
                r.add(key, problem.0, type: problem.1)
            } else {
                settings.specific.append((key, .string(s)))
            }
        }
        guard r.issues.isEmpty else { return .failure(.validation(r.issues)) }
        return .success(settings)
    }

    static func problem(type: CRMType, key: String, value: String) -> (String, String)? {
        switch (type, key) {
        case (.salesforce, "object"):
            return ["Contact", "Lead"].contains(value) ? nil : ("Input should be 'Contact' or 'Lead'", "enum")
        case (.salesforce, "api_version"):
            return matchesAPIVersion(value) ? nil : ("String should match pattern '^v[0-9]+\\.0$'", "string_pattern_mismatch")
        case (.salesforce, "external_id_field"):
            return isFieldName(value) ? nil : ("Input should be a Salesforce field API name", "string_pattern_mismatch")
        case (.salesforce, "events"):
            return value == "task" || (value.hasSuffix("__e") && isFieldName(value)) ? nil : ("Input should be 'task' or a Platform Event API name ending in '__e'", "value_error")
        case (.hubspot, "events"):
            return ["custom_event", "note"].contains(value) ? nil : ("Input should be 'custom_event' or 'note'", "enum")
        case (.creatio, "contact_entity"), (.klaviyo, "list_id"):
            return isFieldName(value) ? nil : ("Input should be a name of letters, digits and _", "string_pattern_mismatch")
        default:
            return nil
        }
    }

    static func isFieldName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 128 && s.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2E || b == 0x2D
        }
    }

    static func matchesAPIVersion(_ s: String) -> Bool {
        guard s.hasPrefix("v"), s.hasSuffix(".0") else { return false }
        let digits = s.dropFirst().dropLast(2)
        return !digits.isEmpty && digits.allSatisfy(\.isASCII) && digits.allSatisfy(\.isNumber)
    }

    /// Settings read back from the database (already validated when stored).
    public static func fromStored(_ json: JSON, for type: CRMType) -> IntegrationSettings {
        (try? decode(json, for: type, at: storedLoc).get()) ?? .defaults
    }
    private static let storedLoc: [ValidationIssue.Loc] = ["settings"]
}

extension FieldReader {
    mutating func issues_append(_ loc: [ValidationIssue.Loc], _ msg: String, type: String) {
        merge([ValidationIssue(loc, msg, type: type)])
    }
}
