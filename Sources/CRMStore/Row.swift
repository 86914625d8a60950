import CLibPQ
import Glibc
import CRMCore

/// One result row, read by column name. Its values stay bytes until read: a row read for a
/// few columns never builds Strings for the others.
public struct Row: Sendable {
    let data: ResultData
    let index: Int

    /// The value's bytes, or nil when it is NULL or there is no such column.
    func withValue<R>(_ name: String, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R? {
        // The result's columns are a handful: a linear scan beats hashing, and comparing lengths
        // first (O(1) for native strings) skips most string comparisons.
        let length = name.utf8.count
        guard let column = data.columns.firstIndex(where: { $0.utf8.count == length && $0 == name }) else { return nil }
        return try withValue(at: column, body)
    }

    /// The value at `column` (0-based); nil when it is NULL or there is no such column.
    func withValue<R>(at column: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R? {
        guard column >= 0 && column < data.columns.count else { return nil }
        let result = data.result, r = Int32(truncatingIfNeeded: index), c = Int32(truncatingIfNeeded: column)
        guard PQgetisnull(result, r, c) == 0, let value = PQgetvalue(result, r, c) else { return nil }
        let count = Int(PQgetlength(result, r, c))
        return try body(UnsafeBufferPointer(start: UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), count: count))
    }

    public func string(_ name: String) -> String? { withValue(name) { String(decoding: $0, as: UTF8.self) } }

    /// The value of the column at `column` (0-based), as text.
    public func string(at column: Int) -> String? { withValue(at: column) { String(decoding: $0, as: UTF8.self) } }

    public func require(_ name: String) throws(DatabaseError) -> String {
        guard let value = string(name) else { throw DatabaseError(.decoding, message: "column \(name) is null or missing") }
        return value
    }

    public func int64(_ name: String) -> Int64? { string(name).flatMap { Int64($0) } }
    public func int(_ name: String) -> Int? { string(name).flatMap { Int($0) } }

    /// `t` (PostgreSQL's text for true) or `true`.
    public func bool(_ name: String) -> Bool? { withValue(name, Row.bool) }
    func bool(at column: Int) -> Bool? { withValue(at: column, Row.bool) }

    private static func bool(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        (text.count == 1 && text[0] == UInt8(ascii: "t"))
            || (text.count == 4 && text[0] == UInt8(ascii: "t") && text[1] == UInt8(ascii: "r") && text[2] == UInt8(ascii: "u") && text[3] == UInt8(ascii: "e"))
    }

    public func json(_ name: String) -> JSON? { withValue(name) { try? JSONParser.parse($0) } ?? nil }
    func json(at column: Int) -> JSON? { withValue(at: column) { try? JSONParser.parse($0) } ?? nil }

    /// A timestamptz column as ISO-8601 UTC (`2026-11-28T21:53:07.123456Z`); sessions run with
    /// `TimeZone=UTC` and `DateStyle=ISO`, so the text is `2026-11-28 21:53:07.123456+00`.
    public func timestamp(_ name: String) -> Timestamp? { withValue(name) { Row.iso8601($0) } ?? nil }

    func timestamp(at column: Int) -> Timestamp? { withValue(at: column) { Row.iso8601($0) } ?? nil }

    /// The bytes rewritten in one pass into the value (no allocation): the first space becomes
    /// `T` and a zero offset `Z`. nil only for text longer than any timestamp.
    static func iso8601(_ bytes: UnsafeBufferPointer<UInt8>) -> Timestamp? {
        let utc = bytes.count > 3 && bytes[bytes.count - 3] == UInt8(ascii: "+") && bytes[bytes.count - 2] == UInt8(ascii: "0")
            && bytes[bytes.count - 1] == UInt8(ascii: "0")
        let kept = utc ? bytes.count - 3 : bytes.count
        return Timestamp(count: utc ? kept + 1 : kept) { out in
            _ = out.update(fromContentsOf: UnsafeBufferPointer(rebasing: bytes[..<kept]))
            if let space = out[..<kept].firstIndex(of: UInt8(ascii: " ")) { out[space] = UInt8(ascii: "T") }
            if utc { out[kept] = UInt8(ascii: "Z") }
            return out.count
        }
    }
}

/// A result's values: libpq's own result, read in place and freed with the last row that
/// reads it (no copy of the values). A finished PGresult is never written again, so any
/// thread may read it (libpq's docs).
final class ResultData: @unchecked Sendable {
    let columns: [String]
    let result: OpaquePointer

    init(columns: [String], result: OpaquePointer) {
        self.columns = columns
        self.result = result
    }

    deinit { PQclear(result) }

    /// Rows from values, in a PGresult made by libpq (`PQsetvalue`) as a query's would be:
    /// tests read them through the same code as rows from the database.
    static func rows(columns: [String], values: [[String?]]) -> [Row] {
        let result = PQmakeEmptyPGresult(nil, PGRES_TUPLES_OK)!
        let names = columns.map { strdup($0) }
        defer { names.forEach { free($0) } }
        var attributes = names.map { PGresAttDesc(name: $0, tableid: 0, columnid: 0, format: 0, typid: 25, typlen: -1, atttypmod: -1) }
        precondition(PQsetResultAttrs(result, Int32(columns.count), &attributes) == 1, "PQsetResultAttrs")
        for (r, row) in values.enumerated() {
            precondition(row.count == columns.count, "one value per column")
            for (c, value) in row.enumerated() {
                let stored: Int32
                if var value {
                    stored = value.withUTF8 { bytes in
                        // PQsetvalue copies `len` bytes (NULs included); a non-nil pointer even for "".
                        withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { copy in
                            for (i, b) in bytes.enumerated() { copy[i] = CChar(bitPattern: b) }
                            return PQsetvalue(result, Int32(r), Int32(c), copy.baseAddress, Int32(bytes.count))
                        }
                    }
                } else {
                    stored = PQsetvalue(result, Int32(r), Int32(c), nil, -1)
                }
                precondition(stored == 1, "PQsetvalue")
            }
        }
        let data = ResultData(columns: columns, result: result)
        return values.indices.map { Row(data: data, index: $0) }
    }
}

/// The rows and affected-row count of one statement.
public struct QueryResult: Sendable {
    public let rows: Rows
    public let affectedRows: Int
    public var first: Row? { rows.first }
}

/// A result's rows, made as they are read (no array of them: a list request's statement
/// allocated one, and took a reference on the result for each row in it).
public struct Rows: RandomAccessCollection, Sendable {
    let data: ResultData?
    public let count: Int

    /// No rows.
    static let none = Rows(data: nil, count: 0)

    init(data: ResultData?, count: Int) {
        self.data = data
        self.count = data == nil ? 0 : count
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }
    public subscript(position: Int) -> Row {
        precondition(position >= 0 && position < count, "row index out of range")
        return Row(data: data!, index: position)
    }
}
