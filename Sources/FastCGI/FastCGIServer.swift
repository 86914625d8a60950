import CFastCGI
import Dispatch
import Threads
import Glibc
import Synchronization

/// A request as libfcgi hands it over, reduced to what HTTP handling needs: the method, the
/// URI, the headers and the body. The other CGI parameters (SERVER_*, REMOTE_*, ...) are skipped.
public struct FastCGIRequest: Sendable {
    public var method: String
    /// `REQUEST_URI`, else `SCRIPT_NAME` + `?QUERY_STRING`.
    public var uri: String
    /// From `HTTP_*` (and `CONTENT_TYPE`): lower-case names with dashes (`x-user-id`); a header
    /// sent twice has its values joined with ", ", as HTTP does.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// CONTENT_LENGTH as declared; the body is not read when it exceeds the limit.
    public var contentLength: Int

    public init(method: String, uri: String, headers: [(name: String, value: String)], body: [UInt8], contentLength: Int) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.contentLength = contentLength
    }

    /// Reads the CGI parameters (`NAME=value` C strings) byte by byte: this runs for every
    /// request, so no Character-level String work, and values become Strings only for the
    /// parameters used (nginx sends ~20 others).
    /// Headers come as pairs, each name once (a handful: a list, not a dictionary to hash).
    public static func parse(parameters: [UnsafePointer<CChar>]) -> (method: String, uri: String, headers: [(name: String, value: String)], contentLength: Int) {
        var method = "GET", requestURI: String?, contentLength = 0, contentType = ""
        // Only used when nginx sends no REQUEST_URI: kept as C strings until then.
        var scriptName: UnsafePointer<CChar>?, query: UnsafePointer<CChar>?
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(8)
        for entry in parameters {
            // The name by strchr, the value's length only when the value is used: nginx sends
            // ~25 parameters, most of them read by nobody here.
            guard let eq = strchr(entry, Int32(UInt8(ascii: "="))) else { continue }
            let nameLength = UnsafePointer(eq) - entry
            let valueStart = UnsafePointer(eq + 1)
            entry.withMemoryRebound(to: UInt8.self, capacity: nameLength + 1) { raw in
                let name = UnsafeBufferPointer(start: raw, count: nameLength)
                var value: String { String(cString: valueStart) }
                if name.count > 5 && named(UnsafeBufferPointer(rebasing: name[..<5]), "HTTP_") {
                    let key = headerName(UnsafeBufferPointer(rebasing: name[5...]))
                    if let existing = headers.firstIndex(where: { $0.name == key }) {
                        headers[existing].value += ", " + value
                    } else {
                        headers.append((key, value))
                    }
                } else if named(name, "REQUEST_METHOD") { method = value
                } else if named(name, "REQUEST_URI") { requestURI = value
                } else if named(name, "SCRIPT_NAME") { scriptName = valueStart
                } else if named(name, "QUERY_STRING") { query = valueStart
                } else if named(name, "CONTENT_TYPE") { if valueStart.pointee != 0 { contentType = value }  // nginx sends it empty
                } else if named(name, "CONTENT_LENGTH") { contentLength = decimal(valueStart) ?? 0
                }
            }
        }
        // CONTENT_TYPE is the header as the server read it (nginx also sends HTTP_CONTENT_TYPE).
        if !contentType.isEmpty {
            headers.removeAll { $0.name == "content-type" }
            headers.append(("content-type", contentType))
        }
        let uri = requestURI ?? {
            let path = scriptName.map { String(cString: $0) } ?? "/"
            guard let query, query.pointee != 0 else { return path }
            return path + "?" + String(cString: query)
        }()
        return (method, uri, headers, contentLength)
    }

    /// A C string of ASCII digits as a number; nil when empty, not all digits or too long.
    static func decimal(_ text: UnsafePointer<CChar>) -> Int? {
        var value = 0, i = 0
        while text[i] != 0 {
            let digit = Int(text[i]) - Int(UInt8(ascii: "0"))
            guard digit >= 0 && digit <= 9, i < 18 else { return nil }
            value = value * 10 + digit
            i += 1
        }
        return i == 0 ? nil : value
    }

    private static func named(_ name: UnsafeBufferPointer<UInt8>, _ expected: StaticString) -> Bool {
        name.count == expected.utf8CodeUnitCount && memcmp(name.baseAddress!, expected.utf8Start, name.count) == 0
    }

    /// `X_USER_ID` → `x-user-id`.
    private static func headerName(_ cgi: UnsafeBufferPointer<UInt8>) -> String {
        String(unsafeUninitializedCapacity: cgi.count) { out in
            for (i, b) in cgi.enumerated() {
                out[i] = b == UInt8(ascii: "_") ? UInt8(ascii: "-") : (b >= 0x41 && b <= 0x5A ? b | 0x20 : b)
            }
            return cgi.count
        }
    }
}

public struct FastCGIResponse: Sendable {
    public var status: Int
    public var reason: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, reason: String, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
    }
}

/// Where the worker listens.
public enum ListenTarget: Sendable {
    /// A unix socket path (created, made writable for nginx) or `:port` / `host:port` for TCP.
    case path(String)
    /// An already-listening descriptor: 0 from spawn-fcgi, 3 from systemd socket activation.
    case inherited(Int32)

    /// systemd's LISTEN_FDS, then a listening socket on fd 0, else `path`.
    public static func detect(path: String) -> ListenTarget {
        let listenFDs = getenv("LISTEN_FDS").map { String(cString: $0) }
        let listenPID = getenv("LISTEN_PID").flatMap { Int32(String(cString: $0)) }
        if listenFDs == "1", listenPID == getpid() { return .inherited(3) }
        if isListeningSocket(0) { return .inherited(0) }
        return .path(path)
    }

    static func isListeningSocket(_ fd: Int32) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 && value != 0
    }
}

/// `threads` accept threads on one listening socket. A thread reads a request and calls the
/// handler; the handler answers through the `FastCGIResponder` at once or later, from any
/// thread. A request answered later (one waiting on a CRM) keeps its connection but not the
/// thread, which goes back to accepting. SIGTERM/SIGINT stop accepting; requests in flight
/// (answered later or not) finish within `drainSeconds`; then `run` returns.
public final class FastCGIServer: Sendable {
    public let target: ListenTarget
    public let threads: Int
    public let maxBodyBytes: Int
    public let drainSeconds: Double
    /// Requests in progress at most: at the limit the accept threads wait for one to be
    /// answered (new connections wait in the listen backlog), so memory and descriptors stay
    /// bounded when CRMs are slow and requests keep coming.
    public let maxRequests: Int
    /// Accept threads waiting for `admitted` to drop below `maxRequests`.
    private let capacity = Condition()
    /// Requests in progress plus threads about to accept one: a thread takes its place before
    /// accepting, in one step, so that two threads cannot both take the last one.
    private let admitted = Atomic<Int>(0)
    private let listenFD: Mutex<Int32> = Mutex(-1)
    private let stopping = Atomic<Bool>(false)
    private let active = Atomic<Int>(0)
    /// Accept threads that are waiting in accept(), to be woken with SIGUSR1 on shutdown when the
    /// listening socket is inherited (and so must not be shut down: it belongs to systemd).
    private let idleThreads = Mutex<[UInt: pthread_t]>([:])

    public init(target: ListenTarget, threads: Int, maxRequests: Int = 1024, maxBodyBytes: Int = 1 << 20, drainSeconds: Double = 25) {
        self.target = target
        self.threads = max(1, threads)
        self.maxRequests = max(1, maxRequests)
        self.maxBodyBytes = maxBodyBytes
        self.drainSeconds = drainSeconds
    }

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Serves until a stop signal. Returns true when every in-flight request finished in time.
    public func run(_ handler: @escaping @Sendable (FastCGIRequest, FastCGIResponder) -> Void) throws -> Bool {
        guard FCGX_Init() == 0 else { throw StartError(description: "FCGX_Init failed") }
        let fd = try openListener()
        listenFD.withLock { $0 = fd }

        // libfcgi's own SIGTERM handler does not stop a multi-threaded worker: take the signals over.
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        // SIGUSR1 only interrupts accept() (no SA_RESTART), so idle threads see the shutdown.
        var wake = sigaction()
        wake.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&wake.sa_mask)
        wake.sa_flags = 0
        sigaction(SIGUSR1, &wake, nil)
        let signalQueue = DispatchQueue(label: "crm-service.signals")
        let sources = [SIGTERM, SIGINT].map { DispatchSource.makeSignalSource(signal: $0, queue: signalQueue) }
        for source in sources {
            source.setEventHandler { [self] in self.beginShutdown() }
            source.resume()
        }

        let finished = DispatchSemaphore(value: 0)
        for _ in 0..<threads {
            Threads.detach { [self] in
                self.acceptLoop(fd: fd, handler: handler)
                finished.signal()
            }
        }

        // Idle threads return as soon as the listener is shut down; busy ones when their request
        // is done; requests answered later are waited for too.
        var allDone = true
        var waited = 0
        while waited < threads {
            if stopping.load(ordering: .acquiring) {
                let deadline = DispatchTime.now() + drainSeconds
                while waited < threads {
                    guard finished.wait(timeout: deadline) == .success else { allDone = false; break }
                    waited += 1
                }
                while allDone && active.load(ordering: .acquiring) > 0 {
                    guard DispatchTime.now() < deadline else { allDone = false; break }
                    usleep(10_000)
                }
                break
            }
            if finished.wait(timeout: .now() + 0.2) == .success { waited += 1 }
        }
        sources.forEach { $0.cancel() }
        if case let .path(path) = target, path.hasPrefix("/") { unlink(path) }
        return allDone
    }

    /// Requests in progress right now.
    public var inFlight: Int { active.load(ordering: .relaxed) }

    public func beginShutdown() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        FCGX_ShutdownPending()
        if case .inherited = target {
            // Not ours to shut down (systemd keeps it for the next start): interrupt the idle
            // accept() calls instead, until every idle thread has left.
            Threads.detach { [self] in
                while true {
                    let idle = self.idleThreads.withLock { Array($0.values) }
                    if idle.isEmpty && self.active.load(ordering: .relaxed) == 0 { break }
                    for thread in idle { pthread_kill(thread, SIGUSR1) }
                    usleep(50_000)
                    if idle.isEmpty { usleep(200_000) }
                }
            }
        } else {
            let fd = listenFD.withLock { $0 }
            if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    private func openListener() throws -> Int32 {
        switch target {
        case let .inherited(fd):
            return fd
        case let .path(path):
            if path.hasPrefix("/") {
                var info = stat()
                if stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
            }
            let fd = FCGX_OpenSocket(path, 1024)
            guard fd >= 0 else { throw StartError(description: "cannot listen on \(path): \(String(cString: strerror(errno)))") }
            // nginx's workers run as another user: they must be able to connect.
            if path.hasPrefix("/") { chmod(path, 0o666) }
            return fd
        }
    }

    private func acceptLoop(fd: Int32, handler: @Sendable (FastCGIRequest, FastCGIResponder) -> Void) {
        // The process starts with most signals blocked (Dispatch's doing); this thread must see SIGUSR1.
        var usr1 = sigset_t()
        sigemptyset(&usr1)
        sigaddset(&usr1, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &usr1, nil)
        let me = UInt(pthread_self())
        // Only an inherited socket needs its idle threads woken by signal (see beginShutdown).
        var tracked = false
        if case .inherited = target { tracked = true }
        // This thread's request record. A request answered later gives it back once its
        // connection is taken over; only one with unread input keeps it (the responder frees
        // it), and the thread then takes a new one.
        var request: UnsafeMutablePointer<FCGX_Request>?
        defer { if let request { Self.release(request) } }
        while !stopping.load(ordering: .acquiring) {
            if request == nil {
                let record = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
                // FCGI_FAIL_ACCEPT_ON_INTR: a signal makes accept() give up, so shutdown can wake this thread.
                guard FCGX_InitRequest(record, fd, FCGI_FAIL_ACCEPT_ON_INTR) == 0 else { record.deallocate(); return }
                request = record
            }
            guard admit() else { break }
            if tracked { idleThreads.withLock { $0[me] = pthread_self() } }
            let accepted = FCGX_Accept_r(request!)
            if tracked { idleThreads.withLock { _ = $0.removeValue(forKey: me) } }
            guard accepted >= 0 else {
                leave()
                if stopping.load(ordering: .acquiring) { break }
                usleep(10_000)  // interrupted or out of descriptors: try again shortly
                continue
            }
            active.add(1, ordering: .relaxed)
            let (incoming, inputRead) = read(request!)
            let responder = FastCGIResponder(request: request!, server: self, inputRead: inputRead)
            handler(incoming, responder)
            if !responder.handlerReturned() { request = nil }
        }
    }

    /// Writes the response, ends the request (closing its connection) and counts it done.
    fileprivate func answer(_ response: FastCGIResponse, on request: UnsafeMutablePointer<FCGX_Request>, inputRead: Bool) {
        write(response, to: request)
        guard inputRead else {
            // Input left unread: libfcgi's close reads it away first (shutdown, then read until
            // nginx closes, up to 2 s), so that a TCP reset cannot cost nginx the response.
            FCGX_Finish_r(request)
            requestDone()
            return
        }
        // Everything nginx sent was read: flush and end the request (libfcgi keeps the
        // connection when told to), then close it at once instead of waiting for nginx to
        // close its end first. Nothing unread, so no reset; and the thread that answers (for a
        // request answered later, one of the concurrency pool's few) never waits on nginx.
        request.pointee.keepConnection = 1
        FCGX_Finish_r(request)
        let fd = request.pointee.ipcFd
        request.pointee.ipcFd = -1
        request.pointee.keepConnection = 0
        if fd >= 0 { close(fd) }
        requestDone()
    }

    private func requestDone() {
        active.subtract(1, ordering: .releasing)
        leave()
    }

    /// Takes one of the `maxRequests` places, waiting while none is free; false once the
    /// server stops.
    private func admit() -> Bool {
        while !stopping.load(ordering: .acquiring) {
            let taken = admitted.load(ordering: .acquiring)
            if taken < maxRequests {
                if admitted.compareExchange(expected: taken, desired: taken + 1, ordering: .acquiringAndReleasing).exchanged { return true }
                continue
            }
            capacity.lock()
            // Timed: a wakeup that races with this check costs at most 100 ms, never a hang.
            if admitted.load(ordering: .acquiring) >= maxRequests && !stopping.load(ordering: .acquiring) {
                capacity.wait(until: .after(seconds: 0.1))
            }
            capacity.unlock()
        }
        return false
    }

    /// Gives a place back (a request answered, or an accept that failed).
    private func leave() {
        if admitted.subtract(1, ordering: .releasing).newValue == maxRequests - 1 {
            capacity.lock()
            capacity.signal()
            capacity.unlock()
        }
    }

    /// Frees a request record that is done with.
    fileprivate static func release(_ request: UnsafeMutablePointer<FCGX_Request>) {
        FCGX_Free(request, 1)
        request.deallocate()
    }

    /// The request, and whether all of its input was read (the body and the end of the stream).
    private func read(_ request: UnsafeMutablePointer<FCGX_Request>) -> (FastCGIRequest, inputRead: Bool) {
        var entries: [UnsafePointer<CChar>] = []
        entries.reserveCapacity(32)
        if var cursor = request.pointee.envp {
            while let entry = cursor.pointee {
                entries.append(UnsafePointer(entry))
                cursor += 1
            }
        }
        // A header sent twice arrives twice: its values are joined, so a doubled X-User-Id is
        // seen (and refused) instead of the last one winning.
        let (method, uri, headers, declared) = FastCGIRequest.parse(parameters: entries)
        var body: [UInt8] = []
        if declared > 0 && declared <= maxBodyBytes {
            body = [UInt8](repeating: 0, count: declared)
            var received = 0
            while received < declared {
                let n = body.withUnsafeMutableBufferPointer { buffer in
                    buffer.baseAddress!.advanced(by: received).withMemoryRebound(to: CChar.self, capacity: declared - received) {
                        FCGX_GetStr($0, Int32(declared - received), request.pointee.in)
                    }
                }
                guard n > 0 else { break }
                received += Int(n)
            }
            body.removeSubrange(received...)
        }
        // The empty record that ends the body comes right after it: reading it leaves nothing unread.
        let inputRead = body.count == declared && FCGX_GetChar(request.pointee.in) == -1
        return (FastCGIRequest(method: method, uri: uri, headers: headers, body: body, contentLength: declared), inputRead)
    }

    private func write(_ response: FastCGIResponse, to request: UnsafeMutablePointer<FCGX_Request>) {
        // The head and the body go to libfcgi's buffer one after the other: the body is not
        // copied into a response of its own first.
        func put(_ part: [UInt8]) {
            part.withUnsafeBufferPointer { buffer in
                guard let base = buffer.baseAddress, buffer.count > 0 else { return }
                base.withMemoryRebound(to: CChar.self, capacity: buffer.count) { _ = FCGX_PutStr($0, Int32(buffer.count), request.pointee.out) }
            }
        }
        put(Self.cgiHead(response))
        put(response.body)
    }

    /// The response as a CGI response (status line, headers, body).
    static func cgiResponse(_ response: FastCGIResponse) -> [UInt8] { cgiHead(response) + response.body }

    /// The status line and headers, with `Content-Length`, and the blank line that ends them.
    static func cgiHead(_ response: FastCGIResponse) -> [UInt8] {
        // Written in place into one array of at most this many bytes (the numbers' 20 digits at most).
        var capacity = "Status: ".utf8.count + 20 + 1 + response.reason.utf8.count + 2 + "Content-Length: ".utf8.count + 20 + 4
        for (name, value) in response.headers { capacity += name.utf8.count + 2 + value.utf8.count + 2 }
        return [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            var head = CGIHead(buffer.baseAddress!)
            head.put("Status: ")
            head.put(response.status)
            head.put(" ")
            head.putValue(response.reason)
            head.put("\r\n")
            for (name, value) in response.headers {
                head.putValue(name)
                head.put(": ")
                head.putValue(value)
                head.put("\r\n")
            }
            head.put("Content-Length: ")
            head.put(response.body.count)
            head.put("\r\n\r\n")
            count = head.written
        }
    }

    /// Answers a request whose connection was taken over from libfcgi (`FastCGIResponder`):
    /// the records straight to the descriptor, then close it (all input was read).
    fileprivate func answer(_ response: FastCGIResponse, onDetached fd: Int32, requestID: Int) {
        let records = FastCGIRecords.response(requestID: requestID, stdout: Self.cgiResponse(response))
        var sent = 0
        while sent < records.count {
            let n = records[sent...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n > 0 { sent += n } else if n < 0 && errno == EINTR { continue } else { break }  // nginx gone: nothing to do
        }
        close(fd)
        requestDone()
    }
}

/// Answers one request, exactly once, from any thread. A request still unanswered when the
/// handler returns (it waits on a CRM) gives its libfcgi record back to the accept thread: its
/// connection is taken over (all input was read) and answered with records written directly,
/// so it holds none of libfcgi's buffers (two 8 KiB streams and the parameters) while it waits.
public final class FastCGIResponder: @unchecked Sendable {
    private enum State {
        case handling, answered
        /// Taken over from libfcgi: the connection and the request's id.
        case detached(fd: Int32, requestID: Int)
        /// Input left unread: the record stays with this request (freed after the answer).
        case ownsRecord
    }

    private let request: UnsafeMutablePointer<FCGX_Request>
    private let server: FastCGIServer
    private let inputRead: Bool
    private let state = Mutex(State.handling)

    fileprivate init(request: UnsafeMutablePointer<FCGX_Request>, server: FastCGIServer, inputRead: Bool) {
        self.request = request
        self.server = server
        self.inputRead = inputRead
    }

    public func respond(_ response: FastCGIResponse) {
        state.withLock { state in
            switch state {
            case .handling:
                // The accept thread does not touch the record until the handler returns and
                // takes this lock.
                server.answer(response, on: request, inputRead: inputRead)
            case let .detached(fd, requestID):
                server.answer(response, onDetached: fd, requestID: requestID)
            case .ownsRecord:
                server.answer(response, on: request, inputRead: inputRead)
                FastCGIServer.release(request)
            case .answered:
                assertionFailure("a request answered twice")
                return
            }
            state = .answered
        }
    }

    /// Called by the accept thread when the handler returns: true when it keeps its record
    /// (answered already, or the connection taken over), false when the record stays here.
    fileprivate func handlerReturned() -> Bool {
        state.withLock { state in
            guard case .handling = state else { return true }
            guard inputRead else {
                state = .ownsRecord
                return false
            }
            let fd = request.pointee.ipcFd
            let requestID = Int(request.pointee.requestId)
            // The record goes back to libfcgi's state after a finished request: no streams, no
            // parameters, no connection (FCGX_Accept_r then accepts a new one).
            request.pointee.ipcFd = -1
            request.pointee.keepConnection = 0
            FCGX_Free(request, 0)
            state = .detached(fd: fd, requestID: requestID)
            return true
        }
    }
}

/// A CGI response head, written piece by piece into memory sized for it (`cgiHead`).
private struct CGIHead {
    let base: UnsafeMutablePointer<UInt8>
    var written = 0

    init(_ base: UnsafeMutablePointer<UInt8>) { self.base = base }

    mutating func put(_ text: StaticString) {
        (base + written).update(from: text.utf8Start, count: text.utf8CodeUnitCount)
        written += text.utf8CodeUnitCount
    }

    /// Decimal digits.
    mutating func put(_ number: Int) {
        if number < 0 { put("-") }
        var n = number.magnitude, digits = 1
        while n >= 10 { n /= 10; digits += 1 }
        n = number.magnitude
        for at in stride(from: written + digits - 1, through: written, by: -1) {
            base[at] = UInt8(ascii: "0") + UInt8(n % 10)
            n /= 10
        }
        written += digits
    }

    /// A header value can never split the response: CR and LF are dropped.
    mutating func putValue(_ text: String) {
        let copied: Void? = text.utf8.withContiguousStorageIfAvailable { putValue($0) }
        if copied == nil { Array(text.utf8).withUnsafeBufferPointer { putValue($0) } }  // a bridged or lazy String
    }

    private mutating func putValue(_ value: UnsafeBufferPointer<UInt8>) {
        guard let source = value.baseAddress else { return }
        if !Self.containsLineBreak(value) {
            (base + written).update(from: source, count: value.count)
            written += value.count
            return
        }
        for byte in value where byte != 0x0D && byte != 0x0A {
            base[written] = byte
            written += 1
        }
    }

    /// Whether any byte is CR or LF: eight at a time (the "has a zero byte" bit trick on the
    /// word XORed with each), as almost no value has one.
    private static func containsLineBreak(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        func hasZero(_ x: UInt64) -> Bool { (x &- ones) & ~x & highs != 0 }
        var i = 0
        while i + 8 <= bytes.count {
            let word = UnsafeRawPointer(bytes.baseAddress! + i).loadUnaligned(as: UInt64.self)
            if hasZero(word ^ (0x0D &* ones)) || hasZero(word ^ (0x0A &* ones)) { return true }
            i += 8
        }
        while i < bytes.count {
            if bytes[i] == 0x0D || bytes[i] == 0x0A { return true }
            i += 1
        }
        return false
    }
}
