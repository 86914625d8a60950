import CRMCore
import Glibc
import Logging
import Synchronization

/// One JSON object per line on stderr: what log collectors (journald, Cloud Logging) parse.
/// Metadata values are written as given, so callers must never put a secret in metadata
/// (`Secret` prints `<redacted>` if one slips through).
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String

    /// One writer at a time, so that lines from concurrent requests never interleave.
    private static let output = Mutex(Int32(STDERR_FILENO))

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var pairs: [(String, JSON)] = [
            ("ts", .string(Self.timestamp())), ("level", .string(event.level.rawValue)), ("msg", .string(event.message.description)),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        for key in merged.keys.sorted() {
            if let value = merged[key] { pairs.append((key, Self.json(value))) }
        }
        var line = JSON.object(pairs).serialized()
        line.append(0x0A)
        Self.writeToStderr(line)
    }

    /// Writes all of `bytes` to stderr, one writer at a time (shared with the CLI's messages).
    public static func writeToStderr(_ bytes: [UInt8]) {
        output.withLock { fd in
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if written > 0 { offset += written } else if written < 0 && errno == EINTR { continue } else { break }
                }
            }
        }
    }

    static func json(_ value: Logger.MetadataValue) -> JSON {
        switch value {
        case let .string(s): return .string(s)
        case let .stringConvertible(c):
            if let i = c as? Int { return .int(Int64(i)) }
            if let d = c as? Double { return .double(d) }
            return .string(c.description)
        case let .array(items): return .array(items.map(json))
        case let .dictionary(d): return .object(d.keys.sorted().map { ($0, json(d[$0]!)) })
        }
    }

    static func timestamp() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        var t = time_t(tv.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        var out = [UInt8]()
        out.reserveCapacity(24)
        func digits(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var v = value
            while divisor > 0 { out.append(UInt8(48 + (v / divisor) % 10)); v %= divisor; divisor /= 10 }
        }
        digits(Int(parts.tm_year) + 1900, 4); out.append(0x2D); digits(Int(parts.tm_mon) + 1, 2); out.append(0x2D)
        digits(Int(parts.tm_mday), 2); out.append(0x54); digits(Int(parts.tm_hour), 2); out.append(0x3A)
        digits(Int(parts.tm_min), 2); out.append(0x3A); digits(Int(parts.tm_sec), 2); out.append(0x2E)
        digits(Int(tv.tv_usec / 1000), 3); out.append(0x5A)
        return String(decoding: out, as: UTF8.self)
    }
}
