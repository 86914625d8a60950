/// What one attempt to deliver a contact or event to a CRM came to.
public enum DeliveryOutcome: Sendable {
    /// Done. `action` is `created`, `updated` or `sent`.
    case success(action: String, recordID: String?, httpStatus: Int?, detail: String?, response: JSON?)
    /// The CRM refused the data or the credentials; retrying cannot help.
    /// `authFailure` marks the integration `auth_error`.
    case permanent(httpStatus: Int?, error: String, authFailure: Bool, response: JSON?)
    /// Worth another attempt later (network, timeout, 408, 429, 5xx, Salesforce throttling).
    /// `rateLimited`: the CRM refused the call for the account's rate limit (a 429, Salesforce's
    /// REQUEST_LIMIT_EXCEEDED): "not now" rather than a failure, so it spends no attempt.
    case transient(httpStatus: Int?, error: String, retryAfterSeconds: Double?, response: JSON?, rateLimited: Bool = false)

    public var httpStatus: Int? {
        switch self {
        case let .success(_, _, status, _, _), let .permanent(status, _, _, _), let .transient(status, _, _, _, _): return status
        }
    }
}

/// Which failures are retried and when: exponential backoff with jitter, `Retry-After`
/// honoured, bounded by attempts and by a 24 h window from the first attempt.
public struct RetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int
    public var baseDelaySeconds: Double
    public var maxDelaySeconds: Double
    public var windowSeconds: Double

    public init(maxAttempts: Int = 8, baseDelaySeconds: Double = 30, maxDelaySeconds: Double = 6 * 3600, windowSeconds: Double = 24 * 3600) {
        self.maxAttempts = maxAttempts
        self.baseDelaySeconds = baseDelaySeconds
        self.maxDelaySeconds = maxDelaySeconds
        self.windowSeconds = windowSeconds
    }

    /// Seconds until attempt `attempts + 1`, or nil when no attempt is left.
    /// `attempts` is the number made so far that count (≥ 1; those the CRM refused for its rate
    /// limit do not); `age` the seconds since the first.
    public func delay(afterAttempts attempts: Int, age: Double, retryAfter: Double?, jitter: Double = Double.random(in: 0.8...1.2)) -> Double? {
        guard attempts < maxAttempts else { return nil }
        let exponent = Double(max(0, attempts - 1))
        var delay = min(maxDelaySeconds, baseDelaySeconds * pow2(exponent)) * jitter
        if let retryAfter { delay = max(delay, retryAfter) }
        guard age + delay <= windowSeconds else { return nil }
        return delay
    }

    /// Seconds until the next attempt after one the CRM refused for its rate limit: `turn`,
    /// the row's turn at the integration's pace (it spends no attempt), or nil past the window.
    public func delay(afterRateLimitWithTurn turn: Double, age: Double) -> Double? {
        age + turn <= windowSeconds ? turn : nil
    }

    private func pow2(_ e: Double) -> Double { e >= 62 ? Double(Int64.max) : Double(Int64(1) << Int64(e)) }

    /// The generic classification of an HTTP status (connectors refine it per vendor).
    public static func isTransient(status: Int) -> Bool {
        status == 408 || status == 429 || status >= 500
    }

    /// `Retry-After` as seconds (delta-seconds form; HTTP dates are ignored).
    public static func retryAfterSeconds(_ header: String?) -> Double? {
        guard let header, let seconds = Double(header.trimming()), seconds >= 0 else { return nil }
        return min(seconds, 24 * 3600)
    }
}
