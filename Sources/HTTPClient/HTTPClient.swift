import CCurl
import Glibc
import Synchronization

/// An outbound HTTP request.
public struct HTTPClientRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    /// False for a call that creates something: it goes out on a new connection, because libcurl
    /// silently re-sends a request whose reused connection closed without an answer.
    public var idempotent: Bool

    public init(method: String, url: String, headers: [(String, String)] = [], body: [UInt8]? = nil, idempotent: Bool? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.idempotent = idempotent ?? (method != "POST")
    }
}

public struct HTTPClientResponse: Sendable {
    public var status: Int
    /// In arrival order, names as sent.
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        headers.last(where: { $0.0.lowercased() == name.lowercased() })?.1
    }

    public func headers(named name: String) -> [String] {
        headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

public struct HTTPClientError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case timeout, connect, blockedAddress, tooLarge, other }
    public let kind: Kind
    public let message: String
    public var description: String { message }
}

/// An HTTP client over libcurl's multi interface: every call in the process is a transfer on
/// one event-loop thread (`TransferLoop`), so a call waiting on a slow CRM costs a socket and a
/// few KiB, not a thread. Connections and TLS sessions are reused across all calls, timeouts are
/// exact, and redirects are not followed (a CRM answering with one is an error to report, not
/// to chase).
public final class HTTPClient: Sendable {
    public let timeoutMS: Int
    public let connectTimeoutMS: Int
    /// Refuse connections to loopback/private/link-local addresses (checked at connect time).
    public let blockPrivateAddresses: Bool
    public let maxResponseBytes = 8 << 20

    private let loop: TransferLoop
    private static let globalInit: Bool = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK }()

    public init(timeoutSeconds: Double, connectTimeoutSeconds: Double? = nil, blockPrivateAddresses: Bool) {
        _ = Self.globalInit
        timeoutMS = max(1, Int(timeoutSeconds * 1000))
        connectTimeoutMS = max(1, Int((connectTimeoutSeconds ?? min(timeoutSeconds, 5)) * 1000))
        self.blockPrivateAddresses = blockPrivateAddresses
        loop = TransferLoop()
    }

    deinit { loop.stop() }

    /// Transfers in progress right now.
    /// curl handles kept for the next calls (at most `TransferLoop.maxIdleHandles`).
    public var idleHandles: Int { loop.idleHandleCount }
    public var inFlight: Int { loop.inFlight }

    /// Sends `request`; the caller's task is suspended (no thread waits) until the answer.
    public func send(_ request: HTTPClientRequest) async throws(HTTPClientError) -> HTTPClientResponse {
        let transfer = try prepare(request)
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<HTTPClientResponse, HTTPClientError>, Never>) in
            transfer.completion = { continuation.resume(returning: $0) }
            loop.start(transfer)
        }
        return try result.get()
    }

    /// An easy handle set up for `request` (on the caller's thread; the loop only runs it).
    private func prepare(_ request: HTTPClientRequest) throws(HTTPClientError) -> Transfer {
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        for (name, value) in request.headers {
            // A value with CR, LF or NUL could add headers or a second request: never send it.
            guard !(name.utf8.contains(where: Self.isForbidden) || value.utf8.contains(where: Self.isForbidden)) else {
                curl_slist_free_all(headerList)
                throw HTTPClientError(kind: .other, message: "refused to send a header containing CR, LF or NUL")
            }
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        headerList = curl_slist_append(headerList, "Expect:")
        // A call that goes out on a new connection (below) uses it once: the server closes it
        // after answering, so such connections neither pile up idle nor leave TIME_WAIT here.
        if !request.idempotent { headerList = curl_slist_append(headerList, "Connection: close") }
        guard let h = loop.takeHandle() else {
            curl_slist_free_all(headerList)
            throw HTTPClientError(kind: .other, message: "could not create an HTTP handle")
        }
        let transfer = Transfer(handle: h, headerList: headerList, sink: ResponseSink(limit: maxResponseBytes),
                                timeoutMS: timeoutMS, blockPrivateAddresses: blockPrivateAddresses)
        let sinkPointer = Unmanaged.passUnretained(transfer.sink).toOpaque()

        crm_curl_setopt_str(h, CURLOPT_URL, request.url)
        // curl's own account of a failure ("SSL certificate problem: unable to get local issuer
        // certificate") says more than its error code's text ("SSL peer certificate ... was not OK").
        crm_curl_setopt_ptr(h, CURLOPT_ERRORBUFFER, transfer.errorText)
        crm_curl_setopt_str(h, CURLOPT_PROTOCOLS_STR, "http,https")
        crm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        // Small buffers (default 16 KiB in, 64 KiB out, per handle, kept while pooled): CRM
        // answers and bodies are small, and a handle exists per concurrent CRM call. The read
        // buffer is curl's smallest: 12 instead of 15 KiB per call in flight (a larger answer
        // takes a few more reads; TLS records are buffered by OpenSSL either way).
        crm_curl_setopt_long(h, CURLOPT_BUFFERSIZE, 1024)
        crm_curl_setopt_long(h, CURLOPT_UPLOAD_BUFFERSIZE, 16384)
        crm_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, timeoutMS)
        crm_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, connectTimeoutMS)
        crm_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        crm_curl_setopt_str(h, CURLOPT_USERAGENT, "crm-service/1")
        crm_curl_setopt_slist(h, CURLOPT_HTTPHEADER, headerList)
        crm_curl_setopt_writefn(h, CURLOPT_WRITEFUNCTION, { data, size, count, user in
            guard let user, let data else { return 0 }
            let sink = Unmanaged<ResponseSink>.fromOpaque(user).takeUnretainedValue()
            return sink.appendBody(UnsafeRawBufferPointer(start: data, count: size * count)) ? size * count : 0
        })
        crm_curl_setopt_ptr(h, CURLOPT_WRITEDATA, sinkPointer)
        crm_curl_setopt_writefn(h, CURLOPT_HEADERFUNCTION, { data, size, count, user in
            guard let user, let data else { return 0 }
            let sink = Unmanaged<ResponseSink>.fromOpaque(user).takeUnretainedValue()
            sink.appendHeaderLine(UnsafeRawBufferPointer(start: data, count: size * count))
            return size * count
        })
        crm_curl_setopt_ptr(h, CURLOPT_HEADERDATA, sinkPointer)
        if blockPrivateAddresses { crm_curl_block_private(h) }
        if !request.idempotent { crm_curl_setopt_long(h, CURLOPT_FRESH_CONNECT, 1) }

        let method = request.method.uppercased()
        switch method {
        case "GET": crm_curl_setopt_long(h, CURLOPT_HTTPGET, 1)
        case "HEAD": crm_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        case "POST": crm_curl_setopt_long(h, CURLOPT_POST, 1)
        default: crm_curl_setopt_str(h, CURLOPT_CUSTOMREQUEST, method)
        }
        if let body = request.body ?? (method == "POST" ? [] : nil) {
            // curl copies the body now, so the transfer does not depend on this array's lifetime
            // (it reads at least one byte, hence the placeholder for an empty body).
            crm_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            (body.isEmpty ? [0] : body).withUnsafeBufferPointer { buffer in
                _ = crm_curl_setopt_ptr(h, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: buffer.baseAddress!))
            }
        }
        return transfer
    }

    private static func isForbidden(_ byte: UInt8) -> Bool { byte == 0x0D || byte == 0x0A || byte == 0 }

    /// Whether `send` will carry `value` in a header (it refuses CR, LF and NUL).
    public static func canSendInAHeader(_ value: String) -> Bool { !value.utf8.contains(where: isForbidden) }

    /// Resolves `host`: nil when every address is public, else why it is refused.
    public static func privateAddressProblem(host: String) -> String? {
        switch crm_host_is_private(host) {
        case 0: return nil
        case 1: return "resolves to a loopback, private or link-local address"
        default: return "does not resolve"
        }
    }
}

/// One call in progress: its handle, what curl reads from (headers) and writes to (the sink),
/// and who to tell when it is done. Touched by the caller until started, then by the loop only.
final class Transfer: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    let headerList: UnsafeMutablePointer<curl_slist>?
    let sink: ResponseSink
    let timeoutMS: Int
    let blockPrivateAddresses: Bool
    /// curl's message for a failed call (CURLOPT_ERRORBUFFER); the handle is reset before it
    /// goes back to the pool, so curl never writes here after this transfer.
    let errorText = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
    var completion: (@Sendable (Result<HTTPClientResponse, HTTPClientError>) -> Void)?

    init(handle: UnsafeMutableRawPointer, headerList: UnsafeMutablePointer<curl_slist>?, sink: ResponseSink, timeoutMS: Int, blockPrivateAddresses: Bool) {
        self.handle = handle
        self.headerList = headerList
        self.sink = sink
        self.timeoutMS = timeoutMS
        self.blockPrivateAddresses = blockPrivateAddresses
        errorText[0] = 0  // a call that never ran (CURLE_FAILED_INIT) leaves it untouched
    }

    deinit {
        curl_slist_free_all(headerList)
        errorText.deallocate()
    }

    /// The response, or the error for curl's result `code`.
    func result(_ code: CURLcode) -> Result<HTTPClientResponse, HTTPClientError> {
        guard code == CURLE_OK else {
            var message = errorText[0] != 0 ? String(cString: errorText) : String(cString: curl_easy_strerror(code))
            // The system's reason (refused, no route, out of descriptors...) says what to fix.
            var osErrno = 0
            crm_curl_getinfo_long(handle, CURLINFO_OS_ERRNO, &osErrno)
            if osErrno != 0 { message += " (\(String(cString: strerror(Int32(osErrno)))))" }
            switch code {
            case CURLE_OPERATION_TIMEDOUT: return .failure(HTTPClientError(kind: .timeout, message: "timed out after \(timeoutMS) ms"))
            case CURLE_WRITE_ERROR where sink.overflowed:
                return .failure(HTTPClientError(kind: .tooLarge, message: "response larger than \(sink.limit) bytes"))
            case CURLE_COULDNT_CONNECT where blockPrivateAddresses:
                return .failure(HTTPClientError(kind: .connect, message: "\(message) (private addresses are not allowed)"))
            case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION:
                return .failure(HTTPClientError(kind: .connect, message: message))
            default: return .failure(HTTPClientError(kind: .other, message: message))
            }
        }
        var status = 0
        crm_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return .success(HTTPClientResponse(status: status, headers: sink.headers, body: sink.body))
    }
}

/// Collects one response; used only by the loop thread while the transfer runs.
final class ResponseSink {
    var body: [UInt8] = []
    var headers: [(String, String)] = []
    var overflowed = false
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func appendBody(_ chunk: UnsafeRawBufferPointer) -> Bool {
        guard body.count + chunk.count <= limit else { overflowed = true; return false }
        body.append(contentsOf: chunk)
        return true
    }

    /// One header line as curl hands it over (`Name: value\r\n`), read byte by byte.
    func appendHeaderLine(_ chunk: UnsafeRawBufferPointer) {
        let bytes = chunk.bindMemory(to: UInt8.self)
        let line = Self.trimmed(bytes[...])
        if line.starts(with: "HTTP/".utf8) { headers.removeAll(); return }  // a new response (e.g. after 100-continue)
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
        let name = String(decoding: line[..<colon], as: UTF8.self)
        let value = String(decoding: Self.trimmed(line[(colon + 1)...]), as: UTF8.self)
        headers.append((name, value))
    }

    private static func trimmed(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> Slice<UnsafeBufferPointer<UInt8>> {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A }
        var slice = bytes
        while let first = slice.first, isSpace(first) { slice.removeFirst() }
        while let last = slice.last, isSpace(last) { slice.removeLast() }
        return slice
    }
}
