/// Serialises `JSON` to compact UTF-8 bytes.
extension JSON {
    public func serialized() -> [UInt8] {
        var out = JSONBytes(capacity: 256)
        write(to: &out)
        return out.finish()
    }

    public var jsonString: String { String(decoding: serialized(), as: UTF8.self) }

    public func write(to out: inout JSONBytes) {
        switch self {
        case .null: out.literal("null")
        case let .bool(b): out.bool(b)
        case let .int(i): out.int(i)
        case let .double(d):
            if d.isFinite {
                if d.rounded() == d, abs(d) < 1e15 { out.int(Int64(d)); out.literal(".0") }
                else { out.text(String(d)) }
            } else {
                out.literal("null")
            }
        case let .string(s): out.string(s)
        case let .array(items):
            out.byte(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.byte(UInt8(ascii: ",")) }
                item.write(to: &out)
            }
            out.byte(UInt8(ascii: "]"))
        case let .object(pairs):
            out.byte(UInt8(ascii: "{"))
            for (i, (key, value)) in pairs.enumerated() {
                if i > 0 { out.byte(UInt8(ascii: ",")) }
                out.string(key)
                out.byte(UInt8(ascii: ":"))
                value.write(to: &out)
            }
            out.byte(UInt8(ascii: "}"))
        }
    }
}

/// JSON written straight into bytes: `JSON.serialized()` writes through it, and responses
/// built on every request use it directly (no tree of values to build and free), writing
/// punctuation and keys as literal fragments (`{"crm_type":`), so their output is exactly what
/// `serialized()` gives for the same value. A plain growable buffer: appending a fragment is a
/// capacity check and a copy, where an Array's append costs several times that.
public struct JSONBytes: ~Copyable {
    // Inlinable, so that callers in other modules (the handlers) append without a call.
    @usableFromInline var base: UnsafeMutablePointer<UInt8>
    @usableFromInline var count = 0
    @usableFromInline var capacity: Int

    public init(capacity: Int) {
        self.capacity = max(capacity, 64)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// What was written so far.
    public var bytes: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

    /// The bytes written, as an array (the buffer is freed).
    public consuming func finish() -> [UInt8] { bytes }

    /// Punctuation and keys, written as they are.
    @inlinable public mutating func literal(_ text: StaticString) { append(text.utf8Start, count: text.utf8CodeUnitCount) }

    public mutating func string(_ value: String) {
        // Native and small strings are read in place (no copy of the String to make it
        // mutable, with the reference that takes); others are made contiguous first.
        if value.utf8.withContiguousStorageIfAvailable({ writeEscaped($0) }) == nil {
            var value = value
            value.withUTF8 { writeEscaped($0) }
        }
    }

    /// The string, or `null`.
    public mutating func string(_ value: String?) {
        if let value { string(value) } else { literal("null") }
    }

    public mutating func bool(_ value: Bool) { value ? literal("true") : literal("false") }

    public mutating func int(_ value: Int) { int(Int64(value)) }

    public mutating func int(_ value: Int64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: Int64.min has 20 characters
        withUnsafeMutableBytes(of: &digits) { buffer in
            var n = value.magnitude, at = buffer.count
            repeat {
                at -= 1
                buffer[at] = UInt8(ascii: "0") + UInt8(n % 10)
                n /= 10
            } while n > 0
            if value < 0 {
                at -= 1
                buffer[at] = UInt8(ascii: "-")
            }
            append(buffer.baseAddress! + at, count: buffer.count - at)
        }
    }

    public mutating func value(_ value: JSON) { value.write(to: &self) }

    /// Text that needs no escaping (a number's digits).
    mutating func text(_ value: String) {
        var value = value
        value.withUTF8 { if let start = $0.baseAddress { append(start, count: $0.count) } }
    }

    @inlinable mutating func byte(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        count += 1
    }

    @inlinable mutating func append(_ source: UnsafeRawPointer, count n: Int) {
        reserve(n)
        UnsafeMutableRawPointer(base + count).copyMemory(from: source, byteCount: n)
        count += n
    }

    @inlinable mutating func reserve(_ n: Int) {
        if count + n > capacity { grow(to: count + n) }
    }

    @usableFromInline mutating func grow(to needed: Int) {
        let grown = max(needed, capacity * 2)
        let larger = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        larger.update(from: base, count: count)
        base.deallocate()
        base = larger
        capacity = grown
    }

    private static let hex: StaticString = "0123456789abcdef"

    /// Whether any of the eight bytes in `word` is below 0x20, `"` or `\` (the classic
    /// "has a byte less than n / equal to c" bit tricks; exact as a yes/no for the word).
    @inline(__always) static func anyNeedsEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        let control = (word &- 0x20 &* ones) & ~word & highs != 0
        return control || anyByte(word, equalTo: UInt8(ascii: "\"")) || anyByte(word, equalTo: UInt8(ascii: "\\"))
    }

    /// Whether any of the eight bytes in `word` is `byte` (XOR makes it a zero byte).
    @inline(__always) static func anyByte(_ word: UInt64, equalTo byte: UInt8) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        let x = word ^ (UInt64(byte) &* ones)
        return (x &- ones) & ~x & highs != 0
    }

    /// A JSON string: quotes, and escapes for `"`, `\` and control characters; the runs
    /// between them are copied in one go (UTF-8 above 0x7F passes through).
    mutating func writeEscaped(_ bytes: UnsafeBufferPointer<UInt8>) {
        byte(UInt8(ascii: "\""))
        var runStart = 0
        var i = 0
        while i < bytes.count {
            // Eight bytes at a time while none of them needs an escape (most strings have none).
            if i + 8 <= bytes.count, !Self.anyNeedsEscape(UnsafeRawPointer(bytes.baseAddress! + i).loadUnaligned(as: UInt64.self)) {
                i += 8
                continue
            }
            let b = bytes[i]
            i += 1
            guard b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") else { continue }
            if runStart < i - 1 { append(bytes.baseAddress! + runStart, count: i - 1 - runStart) }
            runStart = i
            byte(0x5C)
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): byte(b)
            case 0x0A: byte(UInt8(ascii: "n"))
            case 0x0D: byte(UInt8(ascii: "r"))
            case 0x09: byte(UInt8(ascii: "t"))
            default:
                literal("u00")
                byte(Self.hex.utf8Start[Int(b >> 4)])
                byte(Self.hex.utf8Start[Int(b & 0xF)])
            }
        }
        if runStart < bytes.count { append(bytes.baseAddress! + runStart, count: bytes.count - runStart) }
        byte(UInt8(ascii: "\""))
    }
}
