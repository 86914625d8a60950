import CRMConnectors
import CRMCore
import Dispatch
import Glibc
import HTTPClient
import Synchronization
import Threads

/// The `crm-replies` target: a connector's whole flow (validate, upsert a contact, send an
/// event) against a CRM on 127.0.0.1 that answers each request with the next reply of the input.
/// What any reply must leave: no trap, no hang (the client's timeout), an outcome the worker can
/// log (no U+0000 in what is stored, an error that says something) and no credential in it.
///
/// Input: byte 0 picks the CRM type (`% 4`, `CRMType.allCases` order) and the operation
/// (`/ 4 % 3`: validate, contact, event) and whether an event may already be recorded (`/ 12`
/// even: yes, the connector looks for it first; odd: no, the request's own first attempt);
/// byte 1 the settings (low 4 bits) and credentials (high 4 bits) variants; then replies separated by `\n===\n`, each a status line, `Name:
/// value` header lines, an empty line and the body. Replies run out: 503.
enum CRMReplies {
    static let server = ReplyServer()
    static let client = HTTPClient(timeoutSeconds: 2, connectTimeoutSeconds: 1, blockPrivateAddresses: false)
    static let separator = Array("\n===\n".utf8)
    /// CRM_FUZZ_VERBOSE=1: each input's outcome on standard error (for writing seeds).
    static let verbose = getenv("CRM_FUZZ_VERBOSE").map { String(cString: $0) == "1" } ?? false
    static let secrets = ["cr-fuzzsecret-pw", "cr-fuzzsecret-2", "pat-fuzzsecret-h1", "pk_fuzzsecret_k1", "sf-fuzzsecret-1",
                          "sf-fuzzsecret-tok", "sf-fuzzsecret-ref", "sf-fuzzsecret-2", "sf-fuzzsecret-3", "sf-fuzzsecret-pw"]

    static func run(_ data: UnsafeBufferPointer<UInt8>) {
        guard data.count >= 2 else { return }
        let input = Array(data)
        let type = CRMType.allCases[Int(input[0]) % 4]
        let operation = Int(input[0]) / 4 % 3
        let mayBeRecorded = Int(input[0]) / 12 % 2 == 0
        let base = "http://127.0.0.1:\(server.port)"
        let target = SyncTarget(user: UserID("fuzz-user")!, credentials: credentials(type, Int(input[1] >> 4), base: base),
                                settings: settings(type, Int(input[1] & 0x0F)))
        // A reply may name the server (a Salesforce token's instance_url) as 127.0.0.1:PORT.
        server.load(split(input[2...]).map { ReplyServer.response(Self.naming(port: server.port, in: $0)) })

        // A registry of its own each time: connectors cache sessions and tokens.
        let endpoints = CRMEndpoints(klaviyoBaseURL: base, hubspotBaseURL: base, salesforceLoginURL: base)
        let connector = ConnectorRegistry(client: client, endpoints: endpoints).connector(for: type)
        let texts = Mutex<[String]>([])
        let done = DispatchSemaphore(value: 0)
        Task {
            let found = await outcome(of: operation, connector, target, mayBeRecorded: mayBeRecorded)
            texts.withLock { $0 = found }
            done.signal()
        }
        done.wait()
        let replied = String(decoding: input, as: UTF8.self)
        if verbose { printError("crm-replies: \(type) \(["validate", "contact", "event"][operation]): \(texts.withLock { $0 })") }
        for text in texts.withLock({ $0 }) {
            check(!text.utf8.contains(0), "an outcome's text holds U+0000", Array(text.utf8))
            check(!text.contains(#"\u0000"#), "an outcome's JSON holds \\u0000", Array(text.utf8))
            for secret in secrets where !replied.contains(secret) {
                check(!text.contains(secret), "an outcome names a credential", Array(text.utf8))
            }
        }
    }

    /// The texts the worker would log or answer with for this operation's outcome.
    static func outcome(of operation: Int, _ connector: any Connector, _ target: SyncTarget, mayBeRecorded: Bool) async -> [String] {
        switch operation {
        case 0:
            do {
                switch try await connector.validate(target.credentials) {
                case let .valid(detail, account): return [detail, account?.jsonString ?? ""]
                case let .rejected(detail):
                    check(!detail.isEmpty, "a rejection without a detail")
                    return [detail]
                }
            } catch {
                check(!error.detail.isEmpty, "a connector error without a detail")
                return [error.detail, error.response?.jsonString ?? ""]
            }
        case 1: return describe(await connector.upsertContact(contact, for: target))
        default: return describe(await connector.sendEvent(event, uniqueID: "crm-log-1", mayBeRecorded: mayBeRecorded, for: target))
        }
    }

    static func describe(_ outcome: DeliveryOutcome) -> [String] {
        switch outcome {
        case let .success(action, recordID, _, detail, response):
            check(["created", "updated", "sent"].contains(action), "a success with action '\(action)'")
            return [action, recordID ?? "", detail ?? "", response?.jsonString ?? ""]
        case let .permanent(_, error, _, response):
            check(!error.isEmpty, "a permanent failure without an error")
            return [error, response?.jsonString ?? ""]
        case let .transient(_, error, retryAfter, response, _):
            check(!error.isEmpty, "a transient failure without an error")
            if let retryAfter { check(retryAfter.isFinite && retryAfter >= 0, "Retry-After of \(retryAfter) s") }
            return [error, response?.jsonString ?? ""]
        }
    }

    static let portMark = Array("127.0.0.1:PORT".utf8)

    /// `reply` with each `127.0.0.1:PORT` made the server's address.
    static func naming(port: Int, in reply: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        guard reply.count >= portMark.count else { return reply }
        var out: [UInt8] = [], i = reply.startIndex
        while i < reply.endIndex {
            if reply[i...].starts(with: portMark) {
                out += Array("127.0.0.1:\(port)".utf8)
                i += portMark.count
            } else {
                out.append(reply[i])
                i += 1
            }
        }
        return out[...]
    }

    static func split(_ bytes: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        var parts: [ArraySlice<UInt8>] = []
        var start = bytes.startIndex, i = bytes.startIndex
        while i + separator.count <= bytes.endIndex {
            if bytes[i..<i + separator.count].elementsEqual(separator) {
                parts.append(bytes[start..<i])
                i += separator.count
                start = i
            } else {
                i += 1
            }
        }
        parts.append(bytes[start...])
        return parts
    }

    static func settings(_ type: CRMType, _ variant: Int) -> IntegrationSettings {
        let variants: [String] = switch type {
        case .creatio: [#"{}"#, #"{"contact_entity":"Lead"}"#]
        case .hubspot: [#"{}"#, #"{"events":"note"}"#, #"{"events":"custom_event"}"#]
        case .klaviyo: [#"{}"#, #"{"list_id":"L1"}"#]
        case .salesforce: [#"{}"#, #"{"object":"Lead"}"#, #"{"events":"Order__e"}"#, #"{"events":"task","external_id_field":"Ext_Id__c"}"#]
        }
        return IntegrationSettings.fromStored(try! JSONParser.parse(variants[variant % variants.count]), for: type)
    }

    static func credentials(_ type: CRMType, _ variant: Int, base: String) -> Credentials {
        switch type {
        case .klaviyo: return .klaviyo(apiKey: Secret("pk_fuzzsecret_k1"))
        case .hubspot: return .hubspot(accessToken: Secret("pat-fuzzsecret-h1"))
        case .creatio:
            return variant % 2 == 0
                ? .creatio(.forms(baseURL: base, username: "Supervisor", password: Secret("cr-fuzzsecret-pw")))
                : .creatio(.oauth(baseURL: base, identityURL: base, clientID: "cr-client", clientSecret: Secret("cr-fuzzsecret-2")))
        case .salesforce:
            switch variant % 3 {
            case 0: return .salesforce(.clientCredentials(clientID: "sf-client", clientSecret: Secret("sf-fuzzsecret-1"), instanceURL: base))
            case 1: return .salesforce(.token(accessToken: Secret("sf-fuzzsecret-tok"), instanceURL: base, refreshToken: Secret("sf-fuzzsecret-ref"),
                                              clientID: "sf-client", clientSecret: Secret("sf-fuzzsecret-2")))
            default: return .salesforce(.password(clientID: "sf-client", clientSecret: Secret("sf-fuzzsecret-3"), username: "u@example.com",
                                                  password: Secret("sf-fuzzsecret-pw"), securityToken: nil, domain: nil))
            }
        }
    }

    static let contact: Contact = {
        var reader = FieldReader(try! JSONParser.parse(#"{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","phone":"+14155550100","company":"Analytical Engines","title":"Countess","address":{"line1":"1 Main St","city":"London","postal_code":"N1","country":"GB"}}"#), at: [])!
        return Contact.read(&reader)!
    }()

    static let event: Event = {
        var reader = FieldReader(try! JSONParser.parse(#"{"event":"Order Placed","email":"ada@example.com","properties":{"sku":"A1","qty":2},"value":12.5,"timestamp":"2026-12-07T10:00:00Z"}"#), at: [])!
        return Event.read(&reader)!
    }()
}

/// An HTTP/1.1 server on 127.0.0.1 that answers each request, in order, with the next of the
/// replies loaded, then 503; one request per connection.
final class ReplyServer: Sendable {
    let port: Int
    private let replies = Mutex<[[UInt8]]>([])
    private let listener: Int32

    init() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        precondition(bound && listen(fd, 64) == 0, "the reply server cannot listen")
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Threads.detach { [self] in
            while true {
                let connection = accept(self.listener, nil, nil)
                if connection >= 0 { answer(connection) }
            }
        }
    }

    func load(_ responses: [[UInt8]]) { replies.withLock { $0 = responses } }

    private func answer(_ connection: Int32) {
        defer { close(connection) }
        guard readRequest(connection) else { return }
        let reply = replies.withLock { $0.isEmpty ? Self.response(Array("503".utf8)[...]) : $0.removeFirst() }
        var sent = 0
        while sent < reply.count {
            let n = reply[sent...].withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// Reads one request: the head, then as many body bytes as its Content-Length says.
    private func readRequest(_ connection: Int32) -> Bool {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        let end = Array("\r\n\r\n".utf8)
        var bodyStart: Int?, wanted = 0
        while true {
            if let start = bodyStart, received.count - start >= wanted { return true }
            let n = buffer.withUnsafeMutableBytes { read(connection, $0.baseAddress, $0.count) }
            if n <= 0 { return false }
            received += buffer[..<n]
            if bodyStart == nil, let i = received.indices.first(where: { received[$0...].starts(with: end) }) {
                bodyStart = i + end.count
                let head = String(decoding: received[..<i], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    wanted = Int(line.dropFirst("content-length:".count).trimming()) ?? 0
                }
            }
        }
    }

    /// The bytes of a reply written as `STATUS\nName: value\n...\n\nbody`: a status made one
    /// of 200-599, header lines that are not well formed (or frame the message) left out.
    static func response(_ text: ArraySlice<UInt8>) -> [UInt8] {
        let newline = UInt8(ascii: "\n")
        var headEnd = text.endIndex, body: ArraySlice<UInt8> = []
        if let i = text.indices.first(where: { text[$0] == newline && $0 + 1 < text.endIndex && text[$0 + 1] == newline }) {
            (headEnd, body) = (i, text[(i + 2)...])
        }
        let lines = text[..<headEnd].split(separator: newline, omittingEmptySubsequences: false)
        let code = Int(String(decoding: lines.first ?? [], as: UTF8.self).prefix(6)) ?? 200
        let status = 200 + ((code - 200) % 400 + 400) % 400
        if status == 204 || status == 304 { body = [] }
        var head = "HTTP/1.1 \(status) Fuzz\r\n"
        for line in lines.dropFirst() {
            let text = String(decoding: line, as: UTF8.self)
            guard let colon = text.firstIndex(of: ":"), colon > text.startIndex,
                  text[..<colon].utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }),
                  !text.utf8.contains(where: { $0 == 0x0D || $0 == 0 }) else { continue }
            let name = text[..<colon].lowercased()
            if ["content-length", "transfer-encoding", "connection"].contains(name) { continue }
            head += text + "\r\n"
        }
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }
}
