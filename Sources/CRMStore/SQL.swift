import CRMCore

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
