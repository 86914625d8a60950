/// A point in time as the API shows it: ISO-8601 text (`2026-11-28T21:53:07.123456Z`), kept
/// inline in the value. Every integration carries three of these and GET /crm/list returns
/// them all; as Strings (27 bytes, past the 15 a String keeps inline) each one was a heap
/// allocation and a free. Its text is printable ASCII without `"` or `\` (checked when made),
/// so JSON writes it as it is.
public struct Timestamp: Sendable, Equatable, CustomStringConvertible {
    /// Enough for any timestamptz PostgreSQL prints (`294276-12-31 23:59:59.999999+00 BC` is 34).
    public static let capacity = 40

    /// 40 bytes as five words: a copy of the value is five moves, and the check below reads
    /// whole words.
    private var storage: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
    private var count = 0

    /// The empty text.
    public init() {}

    /// nil when `text` is longer than `capacity` or not plain (see below).
    public init?(_ text: String) {
        var text = text
        guard let made = text.withUTF8({ source in Timestamp(count: source.count) { $0.update(fromContentsOf: source) } }) else { return nil }
        self = made
    }

    /// Text of `count` bytes, written by `initialize` into the value's storage; nil when
    /// `count` is more than `capacity`, or the text is not printable ASCII or has `"` or `\`.
    public init?(count: Int, initializingWith initialize: (UnsafeMutableBufferPointer<UInt8>) -> Int) {
        guard count >= 0 && count <= Self.capacity else { return nil }
        let written = withUnsafeMutableBytes(of: &storage) { raw in
            initialize(UnsafeMutableBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[..<count]))
        }
        let count = min(max(written, 0), count)
        self.count = count
        // Whole words only: the bytes after the text, up to the next word, become "0" first
        // (nothing reads past `count`), so there is no byte-by-byte tail.
        let plain = withUnsafeMutableBytes(of: &storage) { raw in
            let words = (count + 7) / 8
            for i in count..<words * 8 { raw[i] = UInt8(ascii: "0") }
            for w in 0..<words where !Self.isPlain(raw.load(fromByteOffset: w * 8, as: UInt64.self)) { return false }
            return true
        }
        if !plain { return nil }
    }

    /// Whether all eight bytes are 0x20–0x7E and none is `"` or `\`.
    private static func isPlain(_ word: UInt64) -> Bool {
        !JSONBytes.anyNeedsEscape(word) && word & 0x8080_8080_8080_8080 == 0 && !JSONBytes.anyByte(word, equalTo: 0x7F)
    }

    public func withUTF8<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: storage) { raw in try body(UnsafeBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[..<count])) }
    }

    public var text: String { withUTF8 { String(decoding: $0, as: UTF8.self) } }
    public var description: String { text }

    /// `YYYY-MM-DDTHH:MM[:SS[.fff]][Z|±HH:MM]` or a bare date, naming a real date and time (no
    /// 13th month, 30 February or 24:00): CRMs refuse those, so a sync carrying one is refused
    /// up front rather than failing at every CRM.
    public static func isISO8601(_ s: String) -> Bool {
        let b = Array(s.utf8)
        func digits(_ range: Range<Int>) -> Bool { range.upperBound <= b.count && range.allSatisfy { b[$0] >= 0x30 && b[$0] <= 0x39 } }
        /// The number the digits at `start` spell, when they are digits and it lies in `range`.
        func number(_ start: Int, _ count: Int, in range: ClosedRange<Int>) -> Bool {
            guard digits(start..<start + count) else { return false }
            return range.contains(b[start..<start + count].reduce(0) { $0 * 10 + Int($1 - 0x30) })
        }
        guard digits(0..<4), b.count >= 10, b[4] == 0x2D, b[7] == 0x2D, number(5, 2, in: 1...12) else { return false }
        let year = b[0..<4].reduce(0) { $0 * 10 + Int($1 - 0x30) }, month = Int(b[5] - 0x30) * 10 + Int(b[6] - 0x30)
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = month == 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].contains(month) ? 30 : 31
        guard number(8, 2, in: 1...days) else { return false }
        if b.count == 10 { return true }
        guard b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: " "), number(11, 2, in: 0...23), b.count >= 16, b[13] == 0x3A,
              number(14, 2, in: 0...59) else { return false }
        var i = 16
        if i < b.count, b[i] == 0x3A { guard number(i + 1, 2, in: 0...59) else { return false }; i += 3 }
        if i < b.count, b[i] == 0x2E { i += 1; let start = i; while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }; guard i > start else { return false } }
        if i == b.count { return true }
        if b[i] == UInt8(ascii: "Z") { return i + 1 == b.count }
        guard b[i] == 0x2B || b[i] == 0x2D, number(i + 1, 2, in: 0...23), i + 3 < b.count else { return false }
        if b[i + 3] == 0x3A { return number(i + 4, 2, in: 0...59) && i + 6 == b.count }
        return number(i + 3, 2, in: 0...59) && i + 5 == b.count
    }

    public static func == (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.withUTF8 { l in rhs.withUTF8 { r in l.elementsEqual(r) } }
    }
}

extension JSON {
    public init(_ timestamp: Timestamp?) { self = timestamp.map { .string($0.text) } ?? .null }
}

extension JSONBytes {
    /// Quoted, with no escapes to look for (see `Timestamp`).
    public mutating func string(_ timestamp: Timestamp) {
        timestamp.withUTF8 { text in
            reserve(text.count + 2)
            byte(UInt8(ascii: "\""))
            if let start = text.baseAddress { append(start, count: text.count) }
            byte(UInt8(ascii: "\""))
        }
    }

    /// The timestamp as a string, or `null`.
    public mutating func string(_ timestamp: Timestamp?) {
        if let timestamp { string(timestamp) } else { literal("null") }
    }
}
