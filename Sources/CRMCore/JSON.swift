/// A JSON value whose objects keep their key order, so responses come out in the
/// order the contract lists their fields.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (lhs: JSON, rhs: JSON) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.int(a), .int(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.int(a), .double(b)), let (.double(b), .int(a)): return Double(a) == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            guard a.count == b.count else { return false }
            for (key, value) in a where b.first(where: { $0.0 == key })?.1 != value { return false }
            return true
        default: return false
        }
    }

    /// The value of `key` in an object (the last one when a key repeats), else nil.
    public subscript(key: String) -> JSON? {
        guard case let .object(pairs) = self else { return nil }
        return pairs.last(where: { $0.0 == key })?.1
    }

    public var stringValue: String? { if case let .string(s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    public var objectValue: [(String, JSON)]? { if case let .object(o) = self { return o } else { return nil } }
    public var arrayValue: [JSON]? { if case let .array(a) = self { return a } else { return nil } }
    public var isNull: Bool { if case .null = self { return true } else { return false } }
    public var intValue: Int64? {
        switch self {
        case let .int(i): return i
        case let .double(d) where d.rounded() == d && abs(d) < 9.0e15: return Int64(d)
        default: return nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case let .int(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }

    /// The same value with every U+0000 in its strings and keys replaced by U+FFFD: PostgreSQL
    /// stores no text or jsonb that holds U+0000 (see `JSONParser.parse(_:containsNUL:)`).
    public func replacingNUL() -> JSON {
        func clean(_ s: String) -> String {
            s.utf8.contains(0) ? String(String.UnicodeScalarView(s.unicodeScalars.map { $0 == "\u{0}" ? "\u{FFFD}" : $0 })) : s
        }
        switch self {
        case let .string(s): return .string(clean(s))
        case let .array(items): return .array(items.map { $0.replacingNUL() })
        case let .object(pairs): return .object(pairs.map { (clean($0.0), $0.1.replacingNUL()) })
        default: return self
        }
    }

    /// The JSON type name FastAPI-style messages use.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int, .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByNilLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) { self = .object(elements) }
}

extension JSON {
    public init(_ string: String?) { self = string.map(JSON.string) ?? .null }
    public init(_ int: Int?) { self = int.map { JSON.int(Int64($0)) } ?? .null }
    public init(_ bool: Bool?) { self = bool.map(JSON.bool) ?? .null }
}
