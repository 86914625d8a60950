import CRMCore
import CRMStore
import Dispatch
import FoundationEssentials
import Logging
import Synchronization
import Threads

/// The whole HTTP surface behind one call: request id, CORS, routing, handling, error
/// mapping, one log line. The transport (FastCGI) only converts to and from these values.
public final class Application: Sendable {
    public let context: ServiceContext
    public let delivery: Delivery
    let router: Router
    let handlers: Handlers

    /// `worker` names this process in delivery claims (see `Delivery.worker`).
    public init(context: ServiceContext, worker: String = "in-process") {
        self.context = context
        delivery = Delivery(context: context, worker: worker)
        router = Router(apiKey: context.config.apiKey)
        handlers = Handlers(context: context, delivery: delivery, idempotency: IdempotencyStore(pool: context.pool))
    }

    /// Answers `request`: `respond` is called exactly once, on this thread for routes that only
    /// need the database, or later from a task for those that wait on a CRM.
    /// The calling thread (an accept thread) waits first while as many requests as
    /// `context.active` allows are doing work.
    public func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void) {
        let started = ContinuousClock.now
        context.active.enter()
        let requestID = Self.requestID(request.header("x-request-id"))
        context.metrics.requestsInProgress.add(1, ordering: .relaxed)
        // What answering needs, kept on the stack (a closure over it was a heap allocation
        // on every request, also on the routes answered at once).
        let pending = Pending(request: request, requestID: requestID, started: started, respond: respond)
        if let preflight = corsPreflight(request) { return finish(preflight, route: .preflight, pending) }
        let decoded = router.decode(request)
        let route = decoded.route.map(RouteLabel.of) ?? .unmatched
        let command: Command
        switch decoded.command {
        case let .failure(error): return finish(.error(error), route: route, pending)
        case let .success(decodedCommand): command = decodedCommand
        }
        do {
            switch try handlers.answer(command) {
            case let .now(response):
                finish(response, route: route, pending)
            case let .later(work):
                // Started on this thread and continued on whichever thread completes what it
                // waits for (the curl loop, a group-commit writer): no wakeup of a pool thread
                // at the start, after the CRM call or after the outcome is written.
                Task.immediate(executorPreference: InlineExecutor.shared) {
                    let response: HTTPResponse
                    do { response = try await work() } catch { response = self.errorResponse(error, requestID: requestID) }
                    self.finish(response, route: route, pending)
                }
            }
        } catch {
            finish(errorResponse(error, requestID: requestID), route: route, pending)
        }
    }

    /// A request being answered.
    private struct Pending: Sendable {
        let request: HTTPRequest
        let requestID: String
        let started: ContinuousClock.Instant
        let respond: @Sendable (HTTPResponse) -> Void
    }

    /// `consuming`: the response's header list is then this call's alone, and the headers
    /// added to it are appended in place rather than to a copy.
    private func finish(_ response: consuming HTTPResponse, route: RouteLabel, _ pending: Pending) {
        let answer = finished(response, request: pending.request, requestID: pending.requestID, route: route, started: pending.started)
        context.active.leave()
        pending.respond(answer)
    }

    /// The response, waited for (tests and tools; the server uses `handle(_:respond:)`).
    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        let answer = Mutex<HTTPResponse?>(nil)
        let done = DispatchSemaphore(value: 0)
        handle(request) { response in
            answer.withLock { $0 = response }
            done.signal()
        }
        done.wait()
        return answer.withLock { $0! }
    }

    /// Adds the request id and CORS headers, counts and logs the request.
    private func finished(_ response: consuming HTTPResponse, request: HTTPRequest, requestID: String, route: RouteLabel,
                          started: ContinuousClock.Instant) -> HTTPResponse {
        var response = response
        response.headers.append(("X-Request-Id", requestID))
        response.headers += corsHeaders(request)
        let elapsed = ContinuousClock.now - started
        context.metrics.request(route: route, status: response.status, duration: elapsed)
        context.metrics.requestsInProgress.subtract(1, ordering: .relaxed)
        // The metadata is built only when the line will be written.
        if context.logger.logLevel <= .info {
            let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            var metadata: Logger.Metadata = [
                "request_id": "\(requestID)", "method": "\(request.method)", "route": "\(route.name)",
                "status": "\(response.status)", "duration_ms": "\((ms * 10).rounded() / 10)",
            ]
            if let user = request.header("x-user-id"), UserID.isValid(user) { metadata["user_id"] = "\(user)" }
            context.logger.info("request", metadata: metadata)
        }
        return response
    }

    private func errorResponse(_ error: any Error, requestID: String) -> HTTPResponse {
        switch error {
        case let error as APIError:
            return .error(error)
        case let error as DatabaseError where error.kind == .unavailable:
            context.logger.error("database unavailable", metadata: ["request_id": "\(requestID)", "error": "\(error.message)"])
            return .error(.serviceUnavailable("Database unavailable, try again shortly", retryAfter: max(1, context.config.dbConnectTimeoutSeconds)))
        default:
            context.logger.error("unhandled error", metadata: ["request_id": "\(requestID)", "error": "\(error)"])
            return .json(500, .object([("detail", "Internal server error"), ("request_id", .string(requestID))]))
        }
    }

    private static let requestCounter = Atomic<UInt64>(0)
    private static let requestKeys: (UInt64, UInt64) = {
        var generator = SystemRandomNumberGenerator()
        return (generator.next(), generator.next())
    }()

    static func splitMix(_ value: UInt64) -> UInt64 {
        var z = value &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The caller's id when sane (1–128 of `[A-Za-z0-9._:-]`), else a new random one.
    static func requestID(_ given: String?) -> String {
        if let given, (1...128).contains(given.utf8.count), given.utf8.allSatisfy({ b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x3A || b == 0x2D
        }) {
            return given
        }
        // A new id needs no system call: a process-wide counter through two keyed SplitMix64
        // finalisers (bijective, so ids never repeat within a process; the keys are random
        // per process, so they don't repeat across processes either, and look random).
        let n = requestCounter.add(1, ordering: .relaxed).newValue
        let halves = (splitMix(n &+ requestKeys.0), splitMix(n &+ requestKeys.1))
        return String(unsafeUninitializedCapacity: 32) { out in
            writeHex(halves.0, to: UnsafeMutableBufferPointer(rebasing: out[0..<16]))
            writeHex(halves.1, to: UnsafeMutableBufferPointer(rebasing: out[16..<32]))
            return 32
        }
    }

    /// 16 hex digits, lowest nibble first.
    private static func writeHex(_ value: UInt64, to out: UnsafeMutableBufferPointer<UInt8>) {
        let hex: StaticString = "0123456789abcdef"
        var bits = value
        for i in 0..<16 {
            out[i] = hex.utf8Start[Int(bits & 0xF)]
            bits >>= 4
        }
    }

    // MARK: - CORS

    func allowedOrigin(_ origin: String?) -> String? {
        guard let origin, !origin.isEmpty else { return nil }
        let allowed = context.config.corsAllowedOrigins
        if allowed.contains("*") { return "*" }
        return allowed.contains(origin) ? origin : nil
    }

    func corsHeaders(_ request: HTTPRequest) -> [(String, String)] {
        guard let origin = allowedOrigin(request.header("origin")) else { return [] }
        var headers = [("Access-Control-Allow-Origin", origin), ("Access-Control-Expose-Headers", "X-Request-Id, Retry-After, Deprecation")]
        if origin != "*" { headers.append(("Vary", "Origin")) }
        return headers
    }

    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: answered here, before auth.
    func corsPreflight(_ request: HTTPRequest) -> HTTPResponse? {
        guard request.method == "OPTIONS", request.header("origin") != nil,
              let requestedMethod = request.header("access-control-request-method") else { return nil }
        guard allowedOrigin(request.header("origin")) != nil else {
            return .error(.badRequest("Disallowed CORS origin"))
        }
        let methods = ["GET", "POST", "DELETE", "OPTIONS"]
        guard methods.contains(requestedMethod.uppercased()) else {
            return .error(.badRequest("Disallowed CORS method"))
        }
        return HTTPResponse(status: 204, headers: [
            ("Access-Control-Allow-Methods", methods.joined(separator: ", ")),
            ("Access-Control-Allow-Headers", "Content-Type, X-User-Id, X-API-Key, X-Request-Id, Idempotency-Key, Prefer"),
            ("Access-Control-Max-Age", "600"),
        ])
    }
}
