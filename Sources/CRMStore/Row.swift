import CRMCore

/// One result row, copied out of libpq, read by column name.
public struct Row: Sendable {
    /// The result's column names, shared by its rows: a handful, so a linear scan over short
    /// strings beats hashing the name on every read.
    let columns: [String]
    let values: [String?]

    public func string(_ name: String) -> String? {
        guard let i = columns.firstIndex(of: name) else { return nil }
        return values[i]
    }

    public func require(_ name: String) throws(DatabaseError) -> String {
        guard let value = string(name) else { throw DatabaseError(.decoding, message: "column \(name) is null or missing") }
        return value
    }

    public func int64(_ name: String) -> Int64? { string(name).flatMap { Int64($0) } }
    public func int(_ name: String) -> Int? { string(name).flatMap { Int($0) } }
    public func bool(_ name: String) -> Bool? { string(name).map { $0 == "t" || $0 == "true" } }

    public func json(_ name: String) -> JSON? {
        guard let text = string(name) else { return nil }
        return try? JSONParser.parse(text)
    }

    /// A timestamptz column as ISO-8601 UTC (`2026-11-28T21:53:07.123456Z`); sessions run with
    /// `TimeZone=UTC` and `DateStyle=ISO`, so the text is `2026-11-28 21:53:07.123456+00`.
    public func timestamp(_ name: String) -> String? {
        guard let text = string(name) else { return nil }
        var bytes = Array(text.utf8)
        if bytes.count > 3, bytes[bytes.count - 3] == UInt8(ascii: "+"), bytes[bytes.count - 2] == UInt8(ascii: "0"),
           bytes[bytes.count - 1] == UInt8(ascii: "0") {
            bytes.removeLast(3)
            bytes.append(UInt8(ascii: "Z"))
        }
        if let space = bytes.firstIndex(of: UInt8(ascii: " ")) { bytes[space] = UInt8(ascii: "T") }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The rows and affected-row count of one statement.
public struct QueryResult: Sendable {
    public let rows: [Row]
    public let affectedRows: Int
    public var first: Row? { rows.first }
}
