import CRMCore
import Synchronization

/// A statement whose every interpolated value becomes a bound parameter (`$1`, `$2`, ...),
/// so SQL injection is impossible by construction: there is no way to splice text in.
public struct SQL: Sendable, ExpressibleByStringInterpolation {
    public private(set) var text: String
    public private(set) var parameters: [String?]
    /// Planned for its values on every call, not prepared: a prepared statement switches to
    /// one generic plan after five calls when that looks as cheap, which is wrong for a
    /// statement whose best plan depends on the values (a page of a log of ten rows or of a
    /// million).
    public var plannedPerCall = false
    /// The `Fixed` statement this came from (`Fixed.id`): a connection finds its prepared
    /// statement by this number instead of hashing the text.
    var fixedID: Int?

    public init(stringLiteral value: String) {
        text = value
        parameters = []
    }

    public init(stringInterpolation: Interpolation) {
        text = stringInterpolation.text
        parameters = stringInterpolation.parameters
    }

    public struct Interpolation: StringInterpolationProtocol {
        var text = ""
        var parameters: [String?] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            text.reserveCapacity(literalCapacity + interpolationCount * 3)
            parameters.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) { text += literal }

        mutating func bind(_ value: String?) {
            parameters.append(value)
            text += parameters.count < Self.placeholders.count ? Self.placeholders[parameters.count] : "$\(parameters.count)"
        }

        /// `$1` … `$31`, made once: the SQL of every query is built on every call.
        private static let placeholders = (0..<32).map { "$\($0)" }

        public mutating func appendInterpolation(_ value: String?) { bind(value) }
        public mutating func appendInterpolation(_ value: Int) { bind(String(value)) }
        public mutating func appendInterpolation(_ value: Int64) { bind(String(value)) }
        public mutating func appendInterpolation(_ value: Int64?) { bind(value.map(String.init)) }
        public mutating func appendInterpolation(_ value: Int?) { bind(value.map(String.init)) }
        public mutating func appendInterpolation(_ value: Bool) { bind(value ? "true" : "false") }
        public mutating func appendInterpolation(_ value: JSON) { bind(value.jsonString) }
        public mutating func appendInterpolation(_ value: JSON?) { bind(value?.jsonString) }
        public mutating func appendInterpolation(_ value: Secret) { bind(value.revealed) }
        public mutating func appendInterpolation(_ value: UserID) { bind(value.value) }
        public mutating func appendInterpolation(_ value: CRMType) { bind(value.rawValue) }
        public mutating func appendInterpolation(_ value: CRMType?) { bind(value?.rawValue) }
    }
}

extension SQL {
    /// A statement whose text is written once, its placeholders (`$1`, `$2`, …) spelled out,
    /// for the hottest statements: an interpolated `SQL` builds its text on every call (the
    /// list statement's text was ~1,700 of a list request's ~62,500 instructions), a fixed one
    /// only binds its values. The values are bound parameters all the same, never text.
    /// By convention the stores name one `…Statement`, and a function that builds an `SQL`
    /// `…SQL`. Make each once (a `static let`): each connection keeps a table slot per
    /// statement made, so one made per call would grow it without end.
    public struct Fixed: Sendable {
        public let text: String
        /// The highest placeholder in `text`: the number of values each call binds.
        public let parameterCount: Int
        /// 0, 1, 2, … in the order statements are made (a handful of `static let`s).
        let id: Int
        private static let made = Atomic<Int>(0)

        public init(_ text: String) {
            self.text = text
            id = Self.made.add(1, ordering: .relaxed).oldValue
            var highest = 0, current: Int?
            for byte in text.utf8 {
                if let digits = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                    current = digits * 10 + Int(byte - UInt8(ascii: "0"))
                    continue
                }
                highest = Swift.max(highest, current ?? 0)
                current = byte == UInt8(ascii: "$") ? 0 : nil
            }
            parameterCount = Swift.max(highest, current ?? 0)
        }

        /// The statement with these values for `$1`, `$2`, … in order.
        public func callAsFunction(_ values: String?...) -> SQL {
            precondition(values.count == parameterCount, "\(parameterCount) values expected, \(values.count) given")
            var sql = SQL(stringLiteral: text)
            sql.parameters = values
            sql.fixedID = id
            return sql
        }
    }
}
