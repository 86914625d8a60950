/// A database failure, classified so callers can answer 503 (unavailable) or 500/409.
public struct DatabaseError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Could not connect, the connection broke, or no connection was free in time.
        case unavailable
        /// The server rejected the statement (SQLSTATE says why).
        case query
        /// A row came back in a shape the code did not expect.
        case decoding
    }

    public let kind: Kind
    public let sqlState: String?
    public let message: String

    public init(_ kind: Kind, sqlState: String? = nil, message: String) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
    }

    public var description: String { "\(kind) \(sqlState ?? "-"): \(message)" }

    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// pgcrypto failed to decrypt: the key is wrong (or the data corrupt).
    public var isDecryptionFailure: Bool { sqlState == "39000" }

    /// SQLSTATE classes that mean the connection or server is gone rather than the statement being wrong.
    static func isConnectionState(_ state: String?) -> Bool {
        guard let state else { return false }
        return state.hasPrefix("08") || state == "57P01" || state == "57P02" || state == "57P03"
    }
}
