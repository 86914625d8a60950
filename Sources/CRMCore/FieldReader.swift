/// Reads the fields of one JSON object, collecting every problem as a FastAPI-style issue
/// so a client learns about all of them at once.
public struct FieldReader {
    public let pairs: [(String, JSON)]
    public let loc: [ValidationIssue.Loc]
    public private(set) var issues: [ValidationIssue] = []

    /// nil (with an issue recorded by the caller) when `value` is not an object.
    public init?(_ value: JSON, at loc: [ValidationIssue.Loc]) {
        guard case let .object(pairs) = value else { return nil }
        self.pairs = pairs
        self.loc = loc
    }

    public static func notAnObject(at loc: [ValidationIssue.Loc]) -> ValidationIssue {
        ValidationIssue(loc, "Input should be a valid dictionary or object to extract fields from", type: "model_attributes_type")
    }

    public func value(_ key: String) -> JSON? { pairs.last(where: { $0.0 == key })?.1 }
    public func has(_ key: String) -> Bool { value(key).map { !$0.isNull } ?? false }

    public mutating func add(_ key: String?, _ msg: String, type: String) {
        issues.append(ValidationIssue(key.map { loc + [.key($0)] } ?? loc, msg, type: type))
    }

    public mutating func merge(_ more: [ValidationIssue]) { issues.append(contentsOf: more) }

    /// Keys outside `allowed` are reported as `extra_forbidden`.
    public mutating func rejectUnknown(_ allowed: Set<String>) {
        rejectUnknown { allowed.contains($0) }
    }

    public mutating func rejectUnknown(where isAllowed: (String) -> Bool) {
        for (key, _) in pairs where !isAllowed(key) {
            add(key, "Extra inputs are not permitted", type: "extra_forbidden")
        }
    }

    /// A string, trimmed of nothing; `nil` when absent or null (recorded as missing if required).
    public mutating func string(_ key: String, required: Bool = false, nonEmpty: Bool = true, maxLength: Int = 10_000) -> String? {
        guard let value = value(key), !value.isNull else {
            if required { add(key, "Field required", type: "missing") }
            return nil
        }
        guard case let .string(s) = value else {
            add(key, "Input should be a valid string", type: "string_type")
            return nil
        }
        if nonEmpty && s.isEmpty {
            add(key, "String should have at least 1 character", type: "string_too_short")
            return nil
        }
        // Characters are never more than UTF-8 bytes: counting them (slow) only when it can matter.
        if s.utf8.count > maxLength && s.count > maxLength {
            add(key, "String should have at most \(maxLength) characters", type: "string_too_long")
            return nil
        }
        return s
    }

    public mutating func secret(_ key: String, required: Bool = false) -> Secret? {
        string(key, required: required).map(Secret.init)
    }

    public mutating func bool(_ key: String) -> Bool? {
        guard let value = value(key), !value.isNull else { return nil }
        guard case let .bool(b) = value else {
            add(key, "Input should be a valid boolean", type: "bool_type")
            return nil
        }
        return b
    }

    public mutating func number(_ key: String) -> Double? {
        guard let value = value(key), !value.isNull else { return nil }
        guard let d = value.doubleValue else {
            add(key, "Input should be a valid number", type: "float_type")
            return nil
        }
        return d
    }

    public mutating func object(_ key: String, required: Bool = false) -> JSON? {
        guard let value = value(key), !value.isNull else {
            if required { add(key, "Field required", type: "missing") }
            return nil
        }
        guard case .object = value else {
            add(key, "Input should be a valid dictionary", type: "dict_type")
            return nil
        }
        return value
    }

    public mutating func crmType(_ key: String, required: Bool = true) -> CRMType? {
        guard let raw = string(key, required: required) else { return nil }
        guard let type = CRMType(rawValue: raw) else {
            let names = CRMType.allCases.map { "'\($0.rawValue)'" }
            let expected = names.dropLast().joined(separator: ", ") + " or " + (names.last ?? "")
            add(key, "Input should be \(expected)", type: "enum")
            return nil
        }
        return type
    }

    /// An optional list of CRM types (for `crm_types` in sync bodies).
    public mutating func crmTypes(_ key: String) -> [CRMType]? {
        guard let value = value(key), !value.isNull else { return nil }
        guard case let .array(items) = value else {
            add(key, "Input should be a valid list", type: "list_type")
            return nil
        }
        var result: [CRMType] = []
        for (i, item) in items.enumerated() {
            guard case let .string(raw) = item, let type = CRMType(rawValue: raw) else {
                issues.append(ValidationIssue(loc + [.key(key), .index(i)], "Input should be \(CRMType.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", "))", type: "enum"))
                continue
            }
            if !result.contains(type) { result.append(type) }
        }
        return result
    }
}
