/// The caller's user (a Firebase UID or UUID): 1–128 of `[A-Za-z0-9_-]`.
public struct UserID: Sendable, Hashable, CustomStringConvertible {
    public let value: String

    public init?(_ raw: String) {
        guard Self.isValid(raw) else { return nil }
        value = raw
    }

    public var description: String { value }

    public static func isValid(_ raw: String) -> Bool {
        guard (1...128).contains(raw.utf8.count) else { return false }
        // Over the contiguous bytes (every request checks one): the view's iterator costs more.
        return raw.utf8.withContiguousStorageIfAvailable { bytes in bytes.allSatisfy(isAllowed) } ?? raw.utf8.allSatisfy(isAllowed)
    }

    private static func isAllowed(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
    }
}
