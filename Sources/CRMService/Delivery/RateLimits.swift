import CRMCore
import Synchronization

/// The integrations whose CRM is rate-limiting them, as this worker has seen, and the pace at
/// which it calls each of them meanwhile. A call refused for the rate limit (`limited`) stops
/// calls to that integration until the CRM's `Retry-After`; then they go out at a pace
/// (`admit`), and each delivery that may not go yet is put off to a turn of its own, one pace
/// apart, rather than all at once when the wait ends (which met the limit again). A pace that
/// is still refused slows by half; one that is not speeds up by ~5 % per call, and the turns
/// still ahead come sooner with it (`Admission.go(pullForward:)`). An integration no one has
/// heard a refusal from for a while is forgotten (a later refusal starts afresh).
///
/// Each worker process keeps its own pace, learnt from its own refusals. The wait is shared: a
/// refusal is written with its outcome (`rate_limited_until`) and read with the credentials of
/// every later delivery, so that other workers hold back too (`heard`). Costs nothing while no
/// CRM is rate-limiting: `admit` reads one atomic.
final class RateLimits: Sendable {
    /// An integration as connected: connecting it again (new credentials, perhaps another
    /// account) starts afresh, as it clears the shared wait (`IntegrationStore.save`).
    struct Key: Hashable, Sendable {
        let user: UserID
        let type: CRMType
        /// When its credentials were stored (`DeliveryTarget.credentialsStoredAt`).
        var credentials: String? = nil
    }

    private struct Pace {
        /// No call before this.
        var until: ContinuousClock.Instant
        /// Between two calls, at the pace.
        var interval: Duration
        /// Calls that may go now (a token bucket holding a second's worth, at least one: the
        /// sweep may find a second's turns due at once).
        var tokens: Double
        var refilled: ContinuousClock.Instant
        /// The last turn given to a delivery put off.
        var booked: ContinuousClock.Instant
        /// The slowest interval the turns still ahead were given at.
        var bookedInterval: Duration
        var lastRefusal: ContinuousClock.Instant
    }

    /// What `admit` allows a delivery.
    enum Admission: Equatable {
        /// Call now. The pace has become faster than the one the turns still ahead were given
        /// at: they should come sooner, each `(turn - now) × factor` from now (`pullForward`),
        /// and this worker gives its next turns from there.
        case go(pullForward: Double?)
        /// No call now: its turn comes in this many seconds.
        case wait(Double)
    }

    /// The first pace after a refusal: ten calls a second.
    static let firstInterval: Duration = .milliseconds(100)
    static let slowestInterval: Duration = .seconds(60)
    static let fastestInterval: Duration = .milliseconds(10)
    /// The wait after a refusal without `Retry-After` (HubSpot's window is ten seconds).
    static let defaultWait: Duration = .seconds(10)
    /// A pace no one needs any more (no refusal, no turn booked, for this long) is forgotten.
    static let forgetAfter: Duration = .seconds(30)
    /// Turns ahead are pulled forward once the interval is at most this fraction of the one they
    /// were given at, if they reach further than `pullForwardAhead`: a backlog put off while the
    /// pace was slow would otherwise keep that pace to its end.
    static let pullForwardBelow = 0.75
    static let pullForwardAhead: Duration = .seconds(2)

    private let paces = Mutex<[Key: Pace]>([:])
    private let count = Atomic<Int>(0)

    /// The CRM refused a call for its rate limit, asking for `retryAfter` seconds (nil: it did
    /// not say). Returns the seconds until the refused delivery's own turn.
    func limited(_ key: Key, retryAfter: Double?, now: ContinuousClock.Instant = .now) -> Double {
        let wait = Self.duration(Self.waitSeconds(retryAfter: retryAfter))
        return paces.withLock { paces in
            // Forget the paces no one needs any more (here: refusals are rare).
            for (other, pace) in paces where other != key && Self.isForgotten(pace, now: now) { paces[other] = nil }
            var pace: Pace
            if var known = paces[key], !Self.isForgotten(known, now: now) {
                // Refused again once calls had resumed: the pace was too fast. Refusals of calls
                // made before the wait (several in flight at once) change nothing but the wait.
                if now >= known.until { known.interval = min(known.interval * 2, Self.slowestInterval) }
                known.until = max(known.until, now + wait)
                pace = known
            } else {
                pace = Pace(until: now + wait, interval: Self.firstInterval, tokens: 0, refilled: now + wait, booked: now,
                            bookedInterval: Self.firstInterval, lastRefusal: now)
            }
            pace.tokens = 0
            pace.refilled = pace.until
            pace.lastRefusal = now
            let turn = Self.book(&pace, now: now)
            paces[key] = pace
            count.store(paces.count, ordering: .relaxed)
            return turn
        }
    }

    /// Another worker process was refused a call for this integration's rate limit, and the
    /// CRM's wait has `seconds` left: no call before it ends. A pace this worker knows keeps
    /// its interval (it halves only on this worker's own refusals); else it starts at the first.
    func heard(_ key: Key, waitSeconds seconds: Double, now: ContinuousClock.Instant = .now) {
        let until = now + Self.duration(seconds)
        paces.withLock { paces in
            if var known = paces[key], !Self.isForgotten(known, now: now) {
                guard until > known.until else { return }  // known already (say, this worker's own refusal)
                known.until = until
                known.tokens = 0
                known.refilled = until
                paces[key] = known
            } else {
                paces[key] = Pace(until: until, interval: Self.firstInterval, tokens: 0, refilled: until, booked: now,
                                  bookedInterval: Self.firstInterval, lastRefusal: now)
            }
            count.store(paces.count, ordering: .relaxed)
        }
    }

    /// The wait after a refusal: the CRM's `Retry-After` (at most a day), else `defaultWait`.
    static func waitSeconds(retryAfter: Double?) -> Double {
        retryAfter.map { min(max($0, 0), 86_400) } ?? defaultWait / .seconds(1)
    }

    private static func duration(_ seconds: Double) -> Duration { .milliseconds(Int64(seconds * 1000)) }

    /// Whether a delivery to `key` may call its CRM now, or else when its turn comes (booked:
    /// the next delivery put off gets the turn after).
    func admit(_ key: Key, now: ContinuousClock.Instant = .now) -> Admission {
        guard count.load(ordering: .relaxed) > 0 else { return .go(pullForward: nil) }
        return paces.withLock { paces in
            guard var pace = paces[key] else { return .go(pullForward: nil) }
            if Self.isForgotten(pace, now: now) {
                paces[key] = nil
                count.store(paces.count, ordering: .relaxed)
                return .go(pullForward: nil)
            }
            defer { paces[key] = pace }
            guard now >= pace.until else { return .wait(Self.book(&pace, now: now)) }
            let perSecond = Double(Duration.seconds(1) / pace.interval)
            pace.tokens = min(max(1, perSecond), pace.tokens + (now - pace.refilled) / pace.interval)
            pace.refilled = now
            guard pace.tokens >= 1 else { return .wait(Self.book(&pace, now: now)) }
            pace.tokens -= 1
            // No refusal for a while at this pace: a little faster (a refusal halves it again).
            if now - pace.lastRefusal > pace.interval * 20 { pace.interval = max(pace.interval * 0.95, Self.fastestInterval) }
            return .go(pullForward: Self.pullForward(&pace, now: now))
        }
    }

    /// The factor by which the turns ahead should come sooner, if the pace has become fast
    /// enough against the one they were given at (see `pullForwardBelow`); the turns this
    /// worker gives next follow the pulled ones.
    private static func pullForward(_ pace: inout Pace, now: ContinuousClock.Instant) -> Double? {
        let factor = pace.interval / pace.bookedInterval
        guard factor <= pullForwardBelow, pace.booked - now > pullForwardAhead else { return nil }
        pace.booked = now + (pace.booked - now) * factor
        pace.bookedInterval = pace.interval
        return factor
    }

    private static func isForgotten(_ pace: Pace, now: ContinuousClock.Instant) -> Bool {
        now >= pace.until && now - pace.lastRefusal > forgetAfter && now - pace.booked > forgetAfter
    }

    /// The next free turn, one interval after the last booked (and not before the wait ends).
    private static func book(_ pace: inout Pace, now: ContinuousClock.Instant) -> Double {
        // The slowest pace among the turns still ahead: pulling them forward is measured by it.
        pace.bookedInterval = pace.booked > now ? max(pace.bookedInterval, pace.interval) : pace.interval
        pace.booked = max(pace.booked, pace.until, now) + pace.interval
        return (pace.booked - now) / .seconds(1)
    }
}
