/// The CRMs a user can connect. Adding one is a case here and a connector in the registry.
public enum CRMType: String, CaseIterable, Sendable, Hashable, Comparable {
    case creatio, hubspot, klaviyo, salesforce

    public static func < (lhs: CRMType, rhs: CRMType) -> Bool { lhs.rawValue < rhs.rawValue }

    public static var supportedList: String { allCases.map(\.rawValue).sorted().joined(separator: ", ") }

    public static func unsupportedMessage(_ value: String) -> String {
        "Unsupported CRM type '\(value)'. Supported: \(supportedList)"
    }
}
