import CRMCore

/// One result row, copied out of libpq, read by column name.
public struct Row: Sendable {
    let columns: [String: Int]
    let values: [String?]

    public func string(_ name: String) -> String? {
        guard let i = columns[name] else { return nil }
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
        guard var text = string(name) else { return nil }
        if text.hasSuffix("+00") { text.removeLast(3); text += "Z" }
        if let space = text.firstIndex(of: " ") { text.replaceSubrange(space...space, with: "T") }
        return text
    }
}

/// The rows and affected-row count of one statement.
public struct QueryResult: Sendable {
    public let rows: [Row]
    public let affectedRows: Int
    public var first: Row? { rows.first }
}
