import CRMCore
import CRMService
import FastCGI
import Glibc

/// What the fuzzer feeds, and what must hold for every input: the worker never traps on what
/// a client (or a CRM) sends, refusals are the contract's statuses with a JSON body, and what
/// the worker accepts it can store in PostgreSQL and read back as it was.
enum FuzzTarget: String, CaseIterable {
    /// Bytes as a JSON document.
    case json
    /// An HTTP request as nginx passes it on (see `request(_:)`), through the router.
    case request
    /// CGI parameters (`NAME=value`, NUL-separated) as libfcgi gives them, through the router.
    case fastcgi
    /// A CRM's `Retry-After` header.
    case retryAfter = "retry-after"
    /// Text read back from the database: settings, a logged request, credentials.
    case stored
    /// What a CRM answers, through a connector's whole flow (`CRMReplies`).
    case crmReplies = "crm-replies"

    nonisolated(unsafe) static var selected = FuzzTarget.json

    func run(_ data: UnsafeBufferPointer<UInt8>) {
        switch self {
        case .json: Self.json(data)
        case .request: Self.decode(Self.request(data))
        case .fastcgi: Self.decode(Self.fastCGI(data))
        case .stored: Self.stored(data)
        case .crmReplies: CRMReplies.run(data)
        case .retryAfter:
            if let seconds = RetryPolicy.retryAfterSeconds(String(decoding: data, as: UTF8.self)) {
                check(seconds.isFinite && seconds >= 0 && seconds <= 24 * 3600, "Retry-After gave \(seconds) s")
            }
        }
    }

    /// Parsed JSON serialises to text that parses to the same value, and serialises the same again.
    static func json(_ data: UnsafeBufferPointer<UInt8>) {
        guard let value = try? JSONParser.parse(data) else { return }
        let text = value.serialized()
        guard let again = try? JSONParser.parse(text) else { fail("its serialisation does not parse", text) }
        check(again == value, "its serialisation parses to another value", text)
        check(again.serialized() == text, "its serialisation is not stable", text)
    }

    /// Whatever the database holds (a row written by an older version, or edited by hand), the
    /// worker reads it without trapping: settings by the one-pass scanner exactly as by the
    /// general decoder, a logged request (the sweep retries from it) and credentials.
    static func stored(_ data: UnsafeBufferPointer<UInt8>) {
        let json = try? JSONParser.parse(data)
        for type in CRMType.allCases {
            let general = json.map { IntegrationSettings.fromStored($0, for: type) } ?? .defaults
            check(IntegrationSettings.fromStored(utf8: data, for: type) == general, "the settings scanner and the decoder disagree (\(type))",
                  Array(data))
            _ = Credentials.decode(json, for: type, at: [])
        }
        guard let json, var reader = FieldReader(json, at: []) else { return }
        var again = reader
        if let contact = Contact.read(&reader) {
            guard var copy = FieldReader(contact.json, at: []) else { fail("a contact's JSON is no object", []) }
            check(Contact.read(&copy) == contact, "a logged contact reads back differently", contact.json.serialized())
        }
        if let event = Event.read(&again) {
            guard var copy = FieldReader(event.json, at: []) else { fail("an event's JSON is no object", []) }
            check(Event.read(&copy) == event, "a logged event reads back differently", event.json.serialized())
        }
    }

    /// `METHOD URI`, header lines `name: value`, an empty line, the body (all lines end in LF).
    /// Strings end at a NUL, as the CGI parameters that carry them do.
    static func request(_ data: UnsafeBufferPointer<UInt8>) -> HTTPRequest {
        let bytes = Array(data)
        let newline = UInt8(ascii: "\n")
        var headEnd = bytes.count, bodyStart = bytes.count
        for i in bytes.indices.dropLast() where bytes[i] == newline && bytes[i + 1] == newline {
            (headEnd, bodyStart) = (i, i + 2)
            break
        }
        let lines = bytes[..<headEnd].split(separator: newline, omittingEmptySubsequences: false)
        let requestLine = lines.first.map { cString($0) } ?? ""
        let (method, uri) = requestLine.firstIndex(of: " ").map { (String(requestLine[..<$0]), String(requestLine[requestLine.index(after: $0)...])) }
            ?? (requestLine, "/")
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            let text = cString(line)
            guard let colon = text.firstIndex(of: ":") else { continue }
            let name = text[..<colon].lowercased()
            let value = String(text[text.index(after: colon)...].drop { $0 == " " })
            if let i = headers.firstIndex(where: { $0.name == name }) { headers[i].value += ", " + value } else { headers.append((name, value)) }
        }
        let body = Array(bytes[bodyStart...])
        let declared = headers.first { $0.name == "content-length" }.flatMap { Int($0.value) }
        return HTTPRequest(method: method, uri: uri, headers: HTTPHeaders(pairs: headers), body: body, contentLength: declared ?? body.count)
    }

    /// NUL-separated CGI parameters, then the body after an empty one (two NULs in a row).
    static func fastCGI(_ data: UnsafeBufferPointer<UInt8>) -> HTTPRequest {
        var bytes = Array(data)
        var bodyStart = bytes.count
        for i in bytes.indices.dropLast() where bytes[i] == 0 && bytes[i + 1] == 0 {
            bodyStart = i + 2
            break
        }
        let body = Array(bytes[bodyStart...])
        bytes.removeSubrange(min(bodyStart, bytes.count)...)
        bytes.append(0)
        let parsed: (method: String, uri: String, headers: [(name: String, value: String)], contentLength: Int) = bytes.withUnsafeBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { text in
                var parameters: [UnsafePointer<CChar>] = []
                var start = 0
                for i in text.indices where text[i] == 0 {
                    if i > start { parameters.append(text.baseAddress! + start) }
                    start = i + 1
                }
                return FastCGIRequest.parse(parameters: parameters)
            }
        }
        var names = Set<String>()
        for header in parsed.headers { check(names.insert(header.name).inserted, "header \(header.name) given twice") }
        return HTTPRequest(method: parsed.method, uri: parsed.uri, headers: HTTPHeaders(pairs: parsed.headers), body: body,
                           contentLength: parsed.contentLength)
    }

    static let routers = [Router(apiKey: nil), Router(apiKey: Secret("fuzz-api-key"))]
    static let refusals: Set<Int> = [400, 401, 404, 405, 413, 415, 422]

    /// Every request decodes to a command or to one of the contract's refusals.
    static func decode(_ request: HTTPRequest) {
        for router in routers {
            switch router.decode(request).command {
            case let .failure(error):
                check(refusals.contains(error.status), "refused with status \(error.status)")
                let response = HTTPResponse.error(error)
                guard let body = try? JSONParser.parse(response.body), body["detail"] != nil else { fail("a refusal without a JSON detail", response.body) }
            case let .success(command):
                accepted(command)
            }
        }
    }

    /// What an accepted command stores reads back as it was: a sync's request (the sweep
    /// retries from it), an integration's settings and credentials.
    static func accepted(_ command: Command) {
        switch command {
        case let .syncContact(_, contact, _, _):
            let text = storable(contact.json)
            guard var reader = (try? JSONParser.parse(text)).flatMap({ FieldReader($0, at: []) }) else { fail("the logged contact does not parse", text) }
            check(Contact.read(&reader) == contact, "the logged contact reads back differently", text)
        case let .syncEvent(_, event, _, _):
            let text = storable(event.json)
            guard var reader = (try? JSONParser.parse(text)).flatMap({ FieldReader($0, at: []) }) else { fail("the logged event does not parse", text) }
            check(Event.read(&reader) == event, "the logged event reads back differently", text)
        case let .connect(_, type, credentials, settings):
            let stored = storable(settings.json)
            guard let storedJSON = try? JSONParser.parse(stored) else { fail("the stored settings do not parse", stored) }
            check(IntegrationSettings.fromStored(storedJSON, for: type) == settings, "the stored settings read back differently", stored)
            check(stored.withUnsafeBufferPointer { IntegrationSettings.fromStored(utf8: $0, for: type) } == settings,
                  "the stored settings read back differently from their bytes", stored)
            let secret = storable(credentials.storageJSON)
            guard case let .success(again) = Credentials.decode(try? JSONParser.parse(secret), for: type, at: []) else {
                fail("the stored credentials do not decode", [])
            }
            check(again.storageJSON == credentials.storageJSON, "the stored credentials read back differently")
        default:
            break
        }
    }

    /// The value's text, which PostgreSQL must accept as jsonb (it refuses `\u0000`).
    static func storable(_ value: JSON) -> [UInt8] {
        let text = value.serialized()
        let nul = Array(#"\u0000"#.utf8)
        check(!text.indices.contains { text[$0...].starts(with: nul) }, "PostgreSQL's jsonb refuses \\u0000", text)
        return text
    }

    static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}

func check(_ condition: Bool, _ message: @autoclosure () -> String, _ text: [UInt8] = []) {
    if !condition { fail(message(), text) }
}

func fail(_ message: String, _ text: [UInt8]) -> Never {
    printError("crm-fuzz: \(message)\(text.isEmpty ? "" : ": " + String(decoding: text.prefix(2000), as: UTF8.self))")
    abort()
}

/// A line on standard error (Glibc's `stderr` is a global Swift 6 will not touch).
func printError(_ line: String) {
    var line = line + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
