import CRMCore

/// Where the CRMs are and which API versions to speak (from the `CRM_*` variables).
public struct CRMEndpoints: Sendable {
    public var klaviyoBaseURL: String
    public var klaviyoRevision: String
    public var hubspotBaseURL: String
    public var hubspotAPIVersion: String
    public var salesforceLoginURL: String
    public var salesforceAPIVersion: String

    public init(
        klaviyoBaseURL: String = "https://a.klaviyo.com", klaviyoRevision: String = "2026-10-15",
        hubspotBaseURL: String = "https://api.hubapi.com", hubspotAPIVersion: String = "2026-03",
        salesforceLoginURL: String = "https://login.salesforce.com", salesforceAPIVersion: String = "v62.0"
    ) {
        self.klaviyoBaseURL = klaviyoBaseURL
        self.klaviyoRevision = klaviyoRevision
        self.hubspotBaseURL = hubspotBaseURL
        self.hubspotAPIVersion = hubspotAPIVersion
        self.salesforceLoginURL = salesforceLoginURL
        self.salesforceAPIVersion = salesforceAPIVersion
    }

    public static let defaults = CRMEndpoints()
}
