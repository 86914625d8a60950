import CCurl
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

/// A small synchronous client over libcurl, made for thread-per-request: easy handles are
/// pooled (so connections and TLS sessions are reused), timeouts are exact, and redirects
/// are not followed (a CRM answering with one is an error to report, not to chase).
public final class HTTPClient: Sendable {
    public let timeoutMS: Int
    public let connectTimeoutMS: Int
    /// Refuse connections to loopback/private/link-local addresses (checked at connect time).
    public let blockPrivateAddresses: Bool
    public let maxResponseBytes = 8 << 20

    private let idleHandles = Mutex<[EasyHandle]>([])
    private static let globalInit: Bool = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK }()

    public init(timeoutSeconds: Double, connectTimeoutSeconds: Double? = nil, blockPrivateAddresses: Bool) {
        _ = Self.globalInit
        timeoutMS = max(1, Int(timeoutSeconds * 1000))
        connectTimeoutMS = max(1, Int((connectTimeoutSeconds ?? min(timeoutSeconds, 5)) * 1000))
        self.blockPrivateAddresses = blockPrivateAddresses
    }

    deinit {
        for handle in idleHandles.withLock({ $0 }) { curl_easy_cleanup(handle.raw) }
    }

    public func send(_ request: HTTPClientRequest) throws(HTTPClientError) -> HTTPClientResponse {
        let pooled = idleHandles.withLock { $0.popLast() }
        guard let handle = pooled ?? curl_easy_init().map(EasyHandle.init) else {
            throw HTTPClientError(kind: .other, message: "could not create an HTTP handle")
        }
        defer {
            curl_easy_reset(handle.raw)
            idleHandles.withLock { $0.append(handle) }
        }
        return try perform(request, on: handle.raw)
    }

    private func perform(_ request: HTTPClientRequest, on h: UnsafeMutableRawPointer) throws(HTTPClientError) -> HTTPClientResponse {
        let sink = ResponseSink(limit: maxResponseBytes)
        let sinkPointer = Unmanaged.passUnretained(sink).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }
        for (name, value) in request.headers {
            // A value with CR, LF or NUL could add headers or a second request: never send it.
            guard !(name + value).utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) else {
                throw HTTPClientError(kind: .other, message: "refused to send a header containing CR, LF or NUL")
            }
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        headerList = curl_slist_append(headerList, "Expect:")

        crm_curl_setopt_str(h, CURLOPT_URL, request.url)
        crm_curl_setopt_str(h, CURLOPT_PROTOCOLS_STR, "http,https")
        crm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        // Small buffers (default 16 KiB in, 64 KiB out, per handle, kept while pooled): CRM
        // answers and bodies are small, and a handle exists per concurrent CRM call.
        crm_curl_setopt_long(h, CURLOPT_BUFFERSIZE, 4096)
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
        let body = request.body ?? (method == "POST" ? [] : nil)
        let code: CURLcode
        if let body {
            code = body.withUnsafeBufferPointer { buffer in
                crm_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(buffer.count))
                crm_curl_setopt_ptr(h, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!))
                return curl_easy_perform(h)
            }
        } else {
            code = curl_easy_perform(h)
        }
        guard code == CURLE_OK else {
            let message = String(cString: curl_easy_strerror(code))
            switch code {
            case CURLE_OPERATION_TIMEDOUT: throw HTTPClientError(kind: .timeout, message: "timed out after \(timeoutMS) ms")
            case CURLE_WRITE_ERROR where sink.overflowed: throw HTTPClientError(kind: .tooLarge, message: "response larger than \(maxResponseBytes) bytes")
            case CURLE_COULDNT_CONNECT where blockPrivateAddresses:
                throw HTTPClientError(kind: .connect, message: "\(message) (private addresses are not allowed)")
            case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION:
                throw HTTPClientError(kind: .connect, message: message)
            default: throw HTTPClientError(kind: .other, message: message)
            }
        }
        var status = 0
        crm_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        return HTTPClientResponse(status: status, headers: sink.headers, body: sink.body)
    }

    /// Resolves `host`: nil when every address is public, else why it is refused.
    public static func privateAddressProblem(host: String) -> String? {
        switch crm_host_is_private(host) {
        case 0: return nil
        case 1: return "resolves to a loopback, private or link-local address"
        default: return "does not resolve"
        }
    }
}

/// A curl easy handle; only one thread uses it at a time (it is taken out of the pool).
private struct EasyHandle: @unchecked Sendable { let raw: UnsafeMutableRawPointer }

/// Collects one response; used only by the thread performing the transfer.
private final class ResponseSink {
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
