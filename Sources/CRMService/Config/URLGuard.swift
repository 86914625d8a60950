import CRMCore
import HTTPClient

/// The private-address guard of API.md: unless CRM_ALLOW_PRIVATE_URLS is true, a CRM URL
/// must be https and resolve only to public addresses. (The HTTP client re-checks at connect
/// time, so a DNS answer that changes later cannot get around it.)
public enum URLGuard {
    /// Problems with URLs that arrive in credentials, as 422 issues at `loc`.
    public static func check(_ credentials: Credentials, allowPrivate: Bool, at loc: [ValidationIssue.Loc]) -> [ValidationIssue] {
        guard !allowPrivate else { return [] }
        return credentials.urls.compactMap { key, raw in
            guard let url = CRMURL(raw) else { return ValidationIssue(loc + [.key(key)], "Input should be a valid absolute https URL", type: "url_parsing") }
            if url.scheme != "https" { return ValidationIssue(loc + [.key(key)], "URL must use https", type: "url_scheme") }
            if let problem = literalPrivateProblem(host: url.host) ?? HTTPClient.privateAddressProblem(host: url.host) {
                return ValidationIssue(loc + [.key(key)], "URL host \(problem); private and internal hosts are not allowed", type: "url_host")
            }
            return nil
        }
    }

    /// Hosts refused without a DNS look-up: localhost names and literal private addresses.
    static func literalPrivateProblem(host: String) -> String? {
        let h = host.lowercased()
        if h == "localhost" || h.hasSuffix(".localhost") || h.hasSuffix(".local") || h.hasSuffix(".internal") {
            return "is a local name"
        }
        if h.first?.isNumber == true || h.contains(":") {
            return HTTPClient.privateAddressProblem(host: h)
        }
        return nil
    }
}
