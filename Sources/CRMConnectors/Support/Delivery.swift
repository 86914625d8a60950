import Glibc
import CRMCore
import HTTPClient
import Synchronization

/// A per-connector cache of sessions or tokens, keyed by `SyncTarget.cacheKey`.
final class SessionCache<Value: Sendable>: Sendable {
    private let entries = Mutex<[String: Value]>([:])

    func get(_ key: String) -> Value? { entries.withLock { $0[key] } }
    func set(_ key: String, _ value: Value) { entries.withLock { $0[key] = value } }
    func remove(_ key: String) { _ = entries.withLock { $0.removeValue(forKey: key) } }
}

/// Ends a delivery early with this outcome (inside a connector's flow).
struct Finished: Error { let outcome: DeliveryOutcome }

/// Runs a connector's delivery flow: a thrown `ConnectorError` (no answer, 5xx, 429) becomes
/// a transient outcome, `Finished` its own outcome.
func deliver(_ flow: () async throws -> DeliveryOutcome) async -> DeliveryOutcome {
    do {
        return try await flow()
    } catch let error as ConnectorError {
        return error.outcome
    } catch let finished as Finished {
        return finished.outcome
    } catch {
        return .permanent(httpStatus: nil, error: "\(error)", authFailure: false, response: nil)
    }
}

extension Transport {
    /// A non-2xx answer the flow did not expect: 401/403 are credential failures, the rest refused data.
    func refused(_ response: HTTPClientResponse, _ message: String) -> Finished {
        let auth = response.status == 401 || response.status == 403
        return Finished(outcome: .permanent(httpStatus: response.status, error: "\(vendor) answered HTTP \(response.status): \(message)",
                                            authFailure: auth, response: json(response)))
    }
}

/// ISO-8601 helpers for CRM payloads.
enum Clock {
    /// `2026-11-28T19:59:00Z` for now.
    static func nowISO() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ n: Int = 2) -> String { String(v).leftPad(n) }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec))Z"
    }

    /// Seconds from now to the next midnight at `utcOffsetSeconds` from UTC (1 to 86,400).
    static func secondsUntilMidnight(utcOffsetSeconds: Int) -> Int {
        let local = Int(time(nil)) + utcOffsetSeconds
        let intoDay = ((local % 86_400) + 86_400) % 86_400
        return 86_400 - intoDay
    }

    /// The event's timestamp as given (a bare date gets midnight UTC), or now.
    static func eventTime(_ timestamp: String?) -> String {
        guard let timestamp else { return nowISO() }
        return timestamp.count == 10 ? timestamp + "T00:00:00Z" : timestamp
    }
}

/// The record a lookup by email (or another field) found, where several records may match.
struct RecordMatch {
    let id: String
    /// More than one record matched; `id` is the one the connector chose.
    let isOneOfSeveral: Bool
}

extension Array where Element == String {
    /// Notes for a result's `detail`, joined; nil when there are none.
    var joinedDetail: String? { isEmpty ? nil : joined(separator: "; ") }
}

/// A retry's search for an event that an earlier attempt may have recorded (a Salesforce Task, a
/// Creatio Activity, a HubSpot note).
enum RecordedEvent {
    /// How many of the contact's newest Tasks or Activities with the event's name are read: the
    /// one looked for was created by an attempt moments ago, and the answer stays small however
    /// many the contact has (a Task's Description holds up to 32,000 characters).
    static let newestLookedAt = 200

    /// A found event's `detail`: "already recorded", then any other note.
    static func detail(_ other: String?) -> String? { ["already recorded", other].compactMap { $0 }.joinedDetail }
}
