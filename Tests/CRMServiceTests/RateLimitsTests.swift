import CRMCore
import XCTest

@testable import CRMService

/// A CRM's rate limit: after a refusal no call until its wait ends, then calls at a pace, each
/// delivery that may not go given a turn of its own; a pace still refused slows down.
final class RateLimitsTests: XCTestCase {
    let key = RateLimits.Key(user: UserID("user-1")!, type: .klaviyo)
    let other = RateLimits.Key(user: UserID("user-2")!, type: .klaviyo)
    let t0 = ContinuousClock.now

    func testNoRefusalNoHold() {
        let limits = RateLimits()
        XCTAssertNil(limits.turn(key, now: t0))
    }

    func testARefusalHoldsThatIntegrationUntilItsWaitAndGivesTurnsOnePaceApart() throws {
        let limits = RateLimits()
        let first = limits.limited(key, retryAfter: 2, now: t0)
        XCTAssertEqual(first, 2.1, accuracy: 0.001, "the refused delivery's turn: the wait, then one pace")
        let turns = (0..<3).map { _ in limits.turn(key, now: t0 + .milliseconds(500)) }
        XCTAssertEqual(try turns.map { try XCTUnwrap($0) }, [1.7, 1.8, 1.9].map { $0 }, accuracy: 0.001)
        XCTAssertNil(limits.turn(other, now: t0 + .milliseconds(500)), "another integration is not held")
    }

    /// Another worker's refusal (read from the integration): held back until its wait ends,
    /// then calls at the first pace; a wait this worker already knows changes nothing.
    func testAWaitHeardFromAnotherWorkerHoldsBackWithoutChangingThePace() throws {
        let limits = RateLimits()
        limits.heard(key, waitSeconds: 3, now: t0)
        XCTAssertEqual(try XCTUnwrap(limits.turn(key, now: t0)), 3.1, accuracy: 0.001, "its turn: the wait, then one pace")
        XCTAssertNil(limits.turn(other, now: t0), "another integration is not held")
        let later = t0 + .seconds(5)
        XCTAssertEqual((0..<25).filter { _ in limits.turn(key, now: later) == nil }.count, 10, "a second's worth at ten a second")

        // This worker's own refusal, then the same wait read back: one turn, as before.
        let mine = RateLimits()
        let turn = mine.limited(key, retryAfter: 2, now: t0)
        mine.heard(key, waitSeconds: 1.99, now: t0 + .milliseconds(5))
        XCTAssertEqual(try XCTUnwrap(mine.turn(key, now: t0 + .milliseconds(10))), turn + 0.1 - 0.01, accuracy: 0.001)
        // A longer wait heard later (another worker refused after calls resumed) extends it.
        mine.heard(key, waitSeconds: 10, now: t0 + .seconds(3))
        let turns = try (0..<2).map { _ in try XCTUnwrap(mine.turn(key, now: t0 + .seconds(12))) }
        XCTAssertEqual(turns, [1.1, 1.2], accuracy: 0.001)  // after the new wait, one pace apart
    }

    /// A backlog put off while the pace was slow does not keep that pace to its end: once the
    /// pace is 25 % faster than the one its turns were given at, they are pulled forward.
    func testTurnsGivenAtASlowPaceArePulledForwardOnceThePaceIsFaster() throws {
        let limits = RateLimits()
        _ = limits.limited(key, retryAfter: 1, now: t0)  // ten a second after t0 + 1
        _ = limits.limited(key, retryAfter: 1, now: t0 + .seconds(2))  // refused again: 200 ms
        _ = limits.limited(key, retryAfter: 1, now: t0 + .seconds(4))  // and again: 400 ms, from t0 + 5
        let booked = t0 + .seconds(4)
        let turns = (0..<100).compactMap { _ in limits.turn(key, now: booked) }
        XCTAssertEqual(turns.count, 100)
        XCTAssertEqual(turns[1] - turns[0], 0.4, accuracy: 0.001)
        let tail = booked + .milliseconds(Int64(turns[99] * 1000))

        // No refusal for 20 intervals: each call admitted speeds up by 5 %. The sixth (0.95^6 =
        // 0.735 of the interval) pulls the turns ahead forward; four more do not, yet.
        var now = t0 + .seconds(13), factors: [Double] = []
        for _ in 0..<10 {
            guard case let .go(pullForward: factor) = limits.admit(key, now: now) else { return XCTFail("not admitted at \(now)") }
            if let factor { factors.append(factor) }
            now += .milliseconds(400)
        }
        XCTAssertEqual(factors, [pow(0.95, 6)], accuracy: 0.0001)
        var pulled = (t0 + .seconds(15)) + (tail - (t0 + .seconds(15))) * factors[0]
        // The calls the bucket still allows go first (they may pull again), then the next turn
        // given follows the pulled tail, not the old one.
        var turn: Double?
        for _ in 0..<5 where turn == nil {
            switch limits.admit(key, now: now) {
            case let .wait(seconds): turn = seconds
            case let .go(pullForward: factor): if let factor { pulled = now + (pulled - now) * factor }
            }
        }
        XCTAssertEqual(try XCTUnwrap(turn), (pulled - now) / .seconds(1), accuracy: 0.5)
        XCTAssertLessThan(try XCTUnwrap(turn), (tail - now) / .seconds(1) * 0.8)
    }

    func testAfterTheWaitCallsGoAtThePace() {
        let limits = RateLimits()
        _ = limits.limited(key, retryAfter: 1, now: t0)
        let resumed = t0 + .seconds(1)
        XCTAssertNotNil(limits.turn(key, now: resumed), "no call has earned its turn at the very end of the wait")
        // A second at the pace (10 a second): ten calls, then the eleventh waits for its turn.
        let later = resumed + .seconds(1)
        let admitted = (0..<11).map { _ in limits.turn(key, now: later) == nil }
        XCTAssertEqual(admitted.filter { $0 }.count, 10, "\(admitted)")
        XCTAssertFalse(admitted.last!)
    }

    func testRefusedAgainAfterResumingHalvesThePaceButRefusalsOfCallsInFlightDoNot() throws {
        let limits = RateLimits()
        _ = limits.limited(key, retryAfter: 1, now: t0)
        // Three calls in flight at the refusal are refused too: the same wait, the same pace.
        for _ in 0..<3 { _ = limits.limited(key, retryAfter: 1, now: t0 + .milliseconds(10)) }
        let pace = { (now: ContinuousClock.Instant) throws -> Double in
            let a = try XCTUnwrap(limits.turn(self.key, now: now)), b = try XCTUnwrap(limits.turn(self.key, now: now))
            return b - a
        }
        XCTAssertEqual(try pace(t0 + .milliseconds(20)), 0.1, accuracy: 0.001)
        // Refused again once calls resumed: half the pace.
        let again = t0 + .seconds(5)
        _ = limits.limited(key, retryAfter: 1, now: again)
        XCTAssertEqual(try pace(again + .milliseconds(10)), 0.2, accuracy: 0.001)
    }

    func testWithoutRetryAfterTheWaitIsTenSeconds() {
        let limits = RateLimits()
        XCTAssertEqual(limits.limited(key, retryAfter: nil, now: t0), 10.1, accuracy: 0.001)
        XCTAssertNotNil(limits.turn(key, now: t0 + .seconds(9)))
    }

    func testAnIntegrationNoLongerRefusedIsForgotten() {
        let limits = RateLimits()
        _ = limits.limited(key, retryAfter: 1, now: t0)
        let quiet = t0 + .seconds(40)
        XCTAssertNil(limits.turn(key, now: quiet))
        // Forgotten: full speed, not a token bucket's worth.
        XCTAssertTrue((0..<100).allSatisfy { _ in limits.turn(key, now: quiet) == nil })
    }

    func testARefusalLongAfterTheLastStartsAfreshNotHalvingAnOldPace() throws {
        let limits = RateLimits()
        _ = limits.limited(key, retryAfter: 1, now: t0)
        _ = limits.limited(key, retryAfter: 1, now: t0 + .seconds(2))  // refused again after resuming: 0.2 s
        let much = t0 + .seconds(60)  // not asked meanwhile, so not yet dropped
        _ = limits.limited(key, retryAfter: 1, now: much)
        let a = try XCTUnwrap(limits.turn(key, now: much)), b = try XCTUnwrap(limits.turn(key, now: much))
        XCTAssertEqual(b - a, 0.1, accuracy: 0.001, "the first pace again, not 0.4 s")
    }

    func testARateLimitedAttemptIsDueAtItsTurnWithinTheWindowOnly() {
        let policy = RetryPolicy(maxAttempts: 2, baseDelaySeconds: 30)
        XCTAssertEqual(policy.delay(afterRateLimitWithTurn: 5, age: 100), 5)
        XCTAssertNil(policy.delay(afterRateLimitWithTurn: 5, age: policy.windowSeconds - 1), "past the 24 h window")
    }
}

private func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
}

extension RateLimits {
    /// `admit` as the seconds until the delivery's turn; nil: it may call now.
    func turn(_ key: Key, now: ContinuousClock.Instant) -> Double? {
        if case let .wait(turn) = admit(key, now: now) { return turn }
        return nil
    }
}
