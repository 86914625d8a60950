/// A credential value. It prints as `<redacted>` everywhere (logs, errors, string
/// interpolation, dumps), so it can only leave the process through `revealed`.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let value: String

    public init(_ value: String) { self.value = value }

    /// The plaintext, for the one place that must send it (a CRM call, the encrypting INSERT).
    public var revealed: String { value }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
