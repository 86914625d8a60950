import Dispatch
import Glibc
import HTTPClient
import Synchronization
import Threads
import XCTest

/// The client against a small HTTP/1.1 server on 127.0.0.1 (below): concurrency on one loop
/// thread, timeouts, refused connections, bodies, connection reuse and header safety.
final class HTTPClientTests: XCTestCase {
    /// `count` GETs sent together to a server that holds each `delaySeconds`; all answered 200.
    /// The caller stops the server.
    private func burst(_ count: Int, delaySeconds: Double) async throws -> (TestServer, HTTPClient) {
        let server = try TestServer(delaySeconds: delaySeconds)
        let client = HTTPClient(timeoutSeconds: 10, blockPrivateAddresses: false)
        let statuses = await withTaskGroup(of: Int.self) { group in
            for i in 0..<count {
                group.addTask {
                    (try? await client.send(HTTPClientRequest(method: "GET", url: server.url + "/slow/\(i)")))?.status ?? -1
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(statuses, Array(repeating: 200, count: count))
        return (server, client)
    }

    func testManyCallsAreInFlightAtOnce() async throws {
        let (server, client) = try await burst(40, delaySeconds: 0.4)
        defer { server.stop() }
        // Each call is held 0.4 s by the server: all 40 were waiting there together.
        XCTAssertGreaterThanOrEqual(server.maxConcurrent, 35, "calls were not in flight together")
        XCTAssertEqual(client.inFlight, 0)
    }

    func testABurstOfCallsLeavesABoundedNumberOfHandlesBehind() async throws {
        let (server, client) = try await burst(90, delaySeconds: 0.3)
        defer { server.stop() }
        XCTAssertGreaterThan(server.maxConcurrent, 64, "the burst was not larger than the handles kept")
        XCTAssertEqual(client.idleHandles, 64, "handles beyond the limit are freed, the rest kept for reuse")
        let after = try await client.send(HTTPClientRequest(method: "GET", url: server.url + "/after"))
        XCTAssertEqual(after.status, 200)
        XCTAssertEqual(client.idleHandles, 64)
    }

    func testTimeoutIsReportedAsTimeout() async throws {
        let server = try TestServer(delaySeconds: 5)
        defer { server.stop() }
        let client = HTTPClient(timeoutSeconds: 0.3, blockPrivateAddresses: false)
        let error = await failure(of: HTTPClientRequest(method: "GET", url: server.url + "/hang"), on: client)
        XCTAssertEqual(error?.kind, .timeout, error?.message ?? "expected a timeout")
    }

    func testRefusedConnectionIsAConnectError() async throws {
        let port = try TestServer.unusedPort()
        let client = HTTPClient(timeoutSeconds: 2, blockPrivateAddresses: false)
        let error = await failure(of: HTTPClientRequest(method: "GET", url: "http://127.0.0.1:\(port)/"), on: client)
        XCTAssertEqual(error?.kind, .connect, error?.message ?? "expected a connect error")
        XCTAssertTrue(error?.message.contains("refused") == true, "the system's reason is part of the message: \(error?.message ?? "")")
        // curl's own account (its error buffer), not only its code's text, says where it tried.
        XCTAssertTrue(error?.message.contains("127.0.0.1 port \(port)") == true, error?.message ?? "")
    }

    /// A handle whose transfer failed is freed, not reused: libcurl 7.88 reads the next answer
    /// on it past the end of its receive buffer (see `TransferLoop.complete`).
    func testAHandleWhoseTransferFailedIsNotReused() async throws {
        let server = try TestServer()
        defer { server.stop() }
        let client = HTTPClient(timeoutSeconds: 5, blockPrivateAddresses: false)
        _ = try await client.send(HTTPClientRequest(method: "GET", url: server.url + "/read"))
        XCTAssertEqual(client.idleHandles, 1)
        for url in ["http://[::1/", "http://host.invalid/"] {
            let error = await failure(of: HTTPClientRequest(method: "GET", url: url), on: client)
            XCTAssertNotNil(error)
            XCTAssertEqual(client.idleHandles, 0, "the handle of the failed call \(url) was freed")
        }
        let body = (0..<12_000).map { UInt8(ascii: "a") + UInt8($0 % 26) }
        let echoed = try await client.send(HTTPClientRequest(method: "POST", url: server.url + "/echo", body: body))
        XCTAssertEqual(echoed.body, body, "an answer of 12 KB arrives intact")
        XCTAssertEqual(client.idleHandles, 1)
    }

    func testPrivateAddressesAreRefusedWhenBlocked() async throws {
        try await assertRefusedUnsent(as: .connect, blockPrivateAddresses: true) { HTTPClientRequest(method: "GET", url: $0 + "/") }
    }

    func testBodiesHeadersAndStatusArriveIntact() async throws {
        let server = try TestServer()
        defer { server.stop() }
        let client = HTTPClient(timeoutSeconds: 5, blockPrivateAddresses: false)
        let body = Array(#"{"email":"ada@example.com","note":"ünïcode"}"#.utf8)
        let response = try await client.send(HTTPClientRequest(method: "POST", url: server.url + "/echo?x=1",
                                                               headers: [("Content-Type", "application/json"), ("X-Test", "yes")], body: body))
        XCTAssertEqual(response.status, 201)
        XCTAssertEqual(response.body, body)
        XCTAssertEqual(response.header("x-echo-method"), "POST")
        let request = try XCTUnwrap(server.requests.last)
        XCTAssertTrue(request.head.hasPrefix("POST /echo?x=1 HTTP/1.1\r\n"), request.head)
        XCTAssertTrue(request.head.lowercased().contains("\r\nx-test: yes\r\n"), request.head)
        XCTAssertFalse(request.head.lowercased().contains("\r\nexpect:"), "no Expect: 100-continue")

        let empty = try await client.send(HTTPClientRequest(method: "POST", url: server.url + "/echo"))
        XCTAssertEqual(empty.status, 201)
        XCTAssertEqual(empty.body, [])
        XCTAssertTrue(server.requests.last!.head.lowercased().contains("\r\ncontent-length: 0\r\n"), server.requests.last!.head)

        let patch = try await client.send(HTTPClientRequest(method: "PATCH", url: server.url + "/echo", body: Array("x".utf8)))
        XCTAssertEqual(patch.header("X-Echo-Method"), "PATCH")
        XCTAssertEqual(patch.bodyText, "x")
    }

    /// Reads share connections; a call that creates something goes out on its own connection,
    /// which the server closes after answering (libcurl would otherwise re-send it on a reused
    /// connection that closed without an answer).
    func testReadsReuseConnectionsAndCreatesUseTheirOwn() async throws {
        let server = try TestServer()
        defer { server.stop() }
        let client = HTTPClient(timeoutSeconds: 5, blockPrivateAddresses: false)
        for _ in 0..<3 { _ = try await client.send(HTTPClientRequest(method: "GET", url: server.url + "/read")) }
        XCTAssertEqual(server.connections, 1)
        for _ in 0..<2 { _ = try await client.send(HTTPClientRequest(method: "POST", url: server.url + "/echo", body: [])) }
        XCTAssertEqual(server.connections, 3)
        let posts = server.requests.filter { $0.head.hasPrefix("POST") }
        XCTAssertEqual(posts.count, 2)
        XCTAssertTrue(posts.allSatisfy { $0.head.lowercased().contains("\r\nconnection: close\r\n") })
        XCTAssertFalse(server.requests.first!.head.lowercased().contains("connection: close"))
    }

    func testHeaderWithLineBreakIsNeverSent() async throws {
        try await assertRefusedUnsent(as: .other) { HTTPClientRequest(method: "GET", url: $0 + "/", headers: [("X-Evil", "a\r\nX-Injected: 1")]) }
    }

    func testOversizedResponseIsRefused() async throws {
        let server = try TestServer()
        defer { server.stop() }
        let client = HTTPClient(timeoutSeconds: 10, blockPrivateAddresses: false)
        let error = await failure(of: HTTPClientRequest(method: "GET", url: server.url + "/huge"), on: client)
        XCTAssertEqual(error?.kind, .tooLarge, error?.message ?? "expected tooLarge")
    }
}

/// The error `request` fails with; nil (a test failure) when it succeeds.
func failure(of request: HTTPClientRequest, on client: HTTPClient, file: StaticString = #filePath, line: UInt = #line) async -> HTTPClientError? {
    do {
        _ = try await client.send(request)
        XCTFail("expected \(request.method) \(request.url) to fail", file: file, line: line)
        return nil
    } catch {
        return error
    }
}

/// Sends the request made for a test server's URL and asserts that it failed with `kind`
/// before anything reached the server.
func assertRefusedUnsent(as kind: HTTPClientError.Kind, blockPrivateAddresses: Bool = false, file: StaticString = #filePath, line: UInt = #line,
                         _ request: (String) -> HTTPClientRequest) async throws {
    let server = try TestServer()
    defer { server.stop() }
    let client = HTTPClient(timeoutSeconds: 2, blockPrivateAddresses: blockPrivateAddresses)
    let error = await failure(of: request(server.url), on: client, file: file, line: line)
    XCTAssertEqual(error?.kind, kind, error?.message ?? "expected a refusal", file: file, line: line)
    XCTAssertEqual(server.requests.count, 0, "nothing reached the server", file: file, line: line)
}

/// HTTP/1.1 on 127.0.0.1, a thread per connection, keep-alive unless the request says close.
/// `/slow…` and `/hang` wait `delaySeconds`; `/echo` answers 201 with the request body;
/// `/huge` sends 9 MiB; anything else 200 "ok".
final class TestServer: @unchecked Sendable {
    struct Request { let head: String; let body: [UInt8] }

    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }
    private let fd: Int32
    private let delaySeconds: Double
    private let state = Mutex<(requests: [Request], connections: Int, concurrent: Int, maxConcurrent: Int)>(([], 0, 0, 0))

    var requests: [Request] { state.withLock { $0.requests } }
    var connections: Int { state.withLock { $0.connections } }
    var maxConcurrent: Int { state.withLock { $0.maxConcurrent } }

    private let acceptEnded = DispatchSemaphore(value: 0)

    init(delaySeconds: Double = 0) throws {
        self.delaySeconds = delaySeconds
        (fd, port) = try Self.listen()
        Threads.detach { [self] in
            acceptLoop()
            acceptEnded.signal()
        }
    }

    /// Stops accepting. The socket is closed only once the accept thread has left: closed at
    /// once, its number went to the next test's server while this thread, not yet in accept(),
    /// could still take that server's connections and answer them with its own delay (a burst
    /// then saw 10 of its 40 calls held together, not 35).
    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        acceptEnded.wait()
        close(fd)
    }

    static func unusedPort() throws -> Int {
        let (fd, port) = try listen()
        close(fd)
        return port
    }

    private static func listen() throws -> (Int32, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, Glibc.listen(fd, 128) == 0 else { throw ListenError(code: errno) }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    private func acceptLoop() {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }
            state.withLock { $0.connections += 1 }
            Threads.detach { [self] in serve(client) }
        }
    }

    private func serve(_ client: Int32) {
        defer { close(client) }
        var buffer: [UInt8] = []
        while let (head, body) = readRequest(client, &buffer) {
            state.withLock { $0.requests.append(Request(head: head, body: body)) }
            let path = head.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
            var status = 200, reply = Array("ok".utf8)
            if path.hasPrefix("/slow") || path.hasPrefix("/hang") {
                state.withLock { $0.concurrent += 1; $0.maxConcurrent = max($0.maxConcurrent, $0.concurrent) }
                usleep(UInt32(delaySeconds * 1_000_000))
                state.withLock { $0.concurrent -= 1 }
            } else if path.hasPrefix("/echo") {
                status = 201
                reply = body
            } else if path.hasPrefix("/huge") {
                reply = [UInt8](repeating: 0x61, count: 9 << 20)
            }
            let method = head.split(separator: " ").first.map(String.init) ?? "?"
            let closing = head.lowercased().contains("\r\nconnection: close\r\n")
            let response = Array("HTTP/1.1 \(status) X\r\nContent-Length: \(reply.count)\r\nX-Echo-Method: \(method)\r\n\(closing ? "Connection: close\r\n" : "")\r\n".utf8) + reply
            guard writeAll(client, response), !closing else { return }
        }
    }

    private func readRequest(_ client: Int32, _ buffer: inout [UInt8]) -> (String, [UInt8])? {
        let separator = Array("\r\n\r\n".utf8)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let end = buffer.firstRange(of: separator) {
                let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self) + "\r\n"
                let lengthLine = head.lowercased().split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                let length = lengthLine.flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: " ")) } ?? 0
                if buffer.count - end.upperBound >= length {
                    let body = Array(buffer[end.upperBound..<end.upperBound + length])
                    buffer.removeSubrange(..<(end.upperBound + length))
                    return (head, body)
                }
            }
            let n = read(client, &chunk, chunk.count)
            guard n > 0 else { return nil }
            buffer += chunk[..<n]
        }
    }

    private func writeAll(_ client: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }
}

private extension Substring {
    func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}

struct ListenError: Error { let code: Int32 }
