/// The CRMs a user can connect. Adding one is a case here and a connector in the registry.
public enum CRMType: String, CaseIterable, Sendable, Hashable, Comparable {
    case creatio, hubspot, klaviyo, salesforce

    public static func < (lhs: CRMType, rhs: CRMType) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The type whose name is `bytes` (a stored value), without making a String first: the
    /// first letters differ, so one comparison decides.
    public init?(utf8 bytes: UnsafeBufferPointer<UInt8>) {
        let candidate: CRMType
        switch bytes.first {
        case UInt8(ascii: "c"): candidate = .creatio
        case UInt8(ascii: "h"): candidate = .hubspot
        case UInt8(ascii: "k"): candidate = .klaviyo
        case UInt8(ascii: "s"): candidate = .salesforce
        default: return nil
        }
        let same = candidate.rawValue.utf8.withContiguousStorageIfAvailable { name in
            guard name.count == bytes.count else { return false }
            for i in 0..<name.count where name[i] != bytes[i] { return false }
            return true
        } ?? candidate.rawValue.utf8.elementsEqual(bytes)
        guard same else { return nil }
        self = candidate
    }

    public static var supportedList: String { allCases.map(\.rawValue).sorted().joined(separator: ", ") }

    public static func unsupportedMessage(_ value: String) -> String {
        "Unsupported CRM type '\(value)'. Supported: \(supportedList)"
    }
}

extension JSONBytes {
    /// A CRM type's name as a JSON string: a literal, nothing to escape.
    public mutating func string(_ type: CRMType) {
        switch type {
        case .creatio: literal(#""creatio""#)
        case .hubspot: literal(#""hubspot""#)
        case .klaviyo: literal(#""klaviyo""#)
        case .salesforce: literal(#""salesforce""#)
        }
    }
}
