import ArgumentParser
import CRMCore
import CRMService
import CRMStore
import FastCGI
import FoundationEssentials
import CSystem
import Glibc
import Logging
import Threads

@main
struct CRMServiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm-service",
        abstract: "CRM integration worker: FastCGI behind nginx, PostgreSQL through libpq.",
        discussion: "Configuration comes from the environment and an optional .env file in the working directory (the environment wins).",
        subcommands: [Serve.self, Migrate.self, CheckConfig.self, RotateKey.self, PrintOpenAPI.self])
}

/// Environment first, then `.env` in the working directory.
func configReader() throws -> EnvironmentConfig {
    try EnvironmentConfig.load(environmentFile: ".env")
}

func loadConfig() throws -> Config {
    switch Config.load(try configReader()) {
    case let .success(config): return config
    case let .failure(problems):
        printError("crm-service: refusing to start.\n\(problems)\n")
        throw ExitCode(2)
    }
}

/// Synchronous commands: `serve` blocks its thread in `FastCGIServer.run`, which must not be one
/// of the concurrency pool's (one per core), where the CRM-waiting requests run.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve FastCGI on FCGI_SOCKET (or an inherited socket on fd 0 / systemd's fd 3) until SIGTERM.")

    func run() throws {
        // glibc gives each busy thread its own malloc arena (up to 8 per core), each keeping
        // its freed memory: with 64 request threads that is most of the heap. Two arenas
        // (per-thread caches stay) unless the operator set MALLOC_ARENA_MAX.
        if getenv("MALLOC_ARENA_MAX") == nil { mallopt(M_ARENA_MAX, 2) }
        // What a burst of requests freed goes back to the system once the burst is over.
        HeapTrimmer().start()
        let config = try loadConfig()
        let logger = makeLogger(config)
        let target = ListenTarget.detect(path: config.fcgiSocket)
        // Stable across restarts of this instance, so a restart takes back its own in-flight deliveries.
        let worker = "\(ProcessInfo.processInfo.hostName):\(target)"
        let application = Application(context: ServiceContext(config: config, logger: logger), worker: worker)
        raiseDescriptorLimit()
        let server = FastCGIServer(target: target, threads: config.fcgiThreads, maxRequests: config.fcgiMaxRequests,
                                   maxBodyBytes: Router.maxBodyBytes)
        // CRM_SWEEP_CONCURRENCY=0: an API-only worker; other workers deliver the queue.
        let sweeper = config.sweepConcurrency > 0 ? Sweeper(delivery: application.delivery, concurrency: config.sweepConcurrency,
                                                                busyRequests: config.fcgiThreads) : nil
        sweeper?.start()
        // Sweep attempts still running after this are left in flight and taken back at the next start.
        defer { sweeper?.stop(waitSeconds: min(5, config.crmHTTPTimeoutSeconds + 1)) }
        logger.info("worker starting", metadata: ["listen": "\(target)", "threads": "\(config.fcgiThreads)", "max_requests": "\(config.fcgiMaxRequests)", "db_pool_size": "\(config.dbPoolSize)"])
        let drained = try server.run { request, responder in
            application.handle(HTTPRequest(fastCGI: request)) { response in
                responder.respond(FastCGIResponse(status: response.status, reason: HTTPResponse.reason(response.status),
                                                  headers: response.headers, body: response.body))
            }
        }
        logger.info("worker stopped", metadata: ["drained": "\(drained)"])
        if !drained { throw ExitCode(1) }
    }
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Bring the database (new, legacy or current) to the current schema, idempotently.")

    func run() throws {
        let reader = try configReader()
        let database: DatabaseSettings
        switch Config.loadDatabase(reader) {
        case let .success(settings): database = settings
        case let .failure(problems):
            printError("crm-service migrate: \(problems)\n")
            throw ExitCode(2)
        }
        do {
            let connection = try Connection(dsn: database.dsn, connectTimeoutSeconds: database.connectTimeoutSeconds)
            let report = try Migrator.embedded.migrate(connection)
            if report.created {
                print("created the crm schema (all migrations recorded as applied)")
            } else if report.applied.isEmpty {
                print("database is up to date")
            } else {
                print("applied: \(report.applied.joined(separator: ", "))")
            }
        } catch {
            printError("crm-service migrate failed: \(error)\n")
            throw ExitCode(1)
        }
    }
}

struct RotateKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Re-encrypt every stored credential from CRM_ENCRYPTION_KEY to a new key, in one transaction.",
        discussion: """
            The new key (exactly 32 characters) is read from CRM_NEW_ENCRYPTION_KEY, or from the first line of \
            standard input with --new-key-stdin (never from the command line, where other users could see it). \
            If the current key cannot decrypt every stored credential, nothing is changed. Afterwards, set \
            CRM_ENCRYPTION_KEY to the new key and restart the workers.
            """)

    @Flag(help: "Read the new key from the first line of standard input.")
    var newKeyStdin = false

    func run() throws {
        let reader = try configReader()
        guard case let .success(database) = Config.loadDatabase(reader) else {
            fail("DB_DSN is required (or INSTANCE_CONNECTION_NAME)")
        }
        let current = reader.string(forKey: ["crm", "encryption", "key"], isSecret: true) ?? ""
        let new = newKeyStdin ? (readLine(strippingNewline: true) ?? "") : (reader.string(forKey: ["crm", "new", "encryption", "key"], isSecret: true) ?? "")
        guard current.count == 32 else { fail("CRM_ENCRYPTION_KEY must be the current key, exactly 32 characters") }
        guard new.count == 32 else { fail("the new key must be exactly 32 characters (CRM_NEW_ENCRYPTION_KEY or --new-key-stdin)") }
        guard new != current else { fail("the new key is the same as the current one") }
        do {
            let connection = try Connection(dsn: database.dsn, connectTimeoutSeconds: database.connectTimeoutSeconds)
            let rows = try KeyRotation.rotate(on: connection, current: Secret(current), new: Secret(new))
            print("re-encrypted \(rows) credential(s); now set CRM_ENCRYPTION_KEY to the new key and restart the workers")
        } catch let failure as KeyRotation.Failure {
            fail("\(failure)")
        } catch {
            fail("key rotation failed, nothing was changed: \(error)")
        }
    }

    private func fail(_ message: String) -> Never {
        printError("crm-service rotate-key: \(message)\n")
        Glibc.exit(1)
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Print the effective configuration, secrets masked; exit 2 when it has problems.")

    func run() throws {
        let config = try loadConfig()
        for (name, value) in config.effectiveDescription { print("\(name)=\(value)") }
    }
}

struct PrintOpenAPI: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "openapi", abstract: "Print the OpenAPI 3.1 document.")
    func run() throws { print(OpenAPIDocument.json) }
}

func makeLogger(_ config: Config) -> Logger {
    let level = Logger.Level(rawValue: config.logLevel) ?? .info
    LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
    return Logger(label: "crm-service")
}

extension HTTPRequest {
    /// CGI parameters → request value. Headers arrive as `HTTP_*`; CONTENT_TYPE/LENGTH without the prefix.
    init(fastCGI request: FastCGIRequest) {
        self.init(method: request.method, uri: request.uri, headers: HTTPHeaders(pairs: request.headers), body: request.body, contentLength: request.contentLength)
    }
}

/// A message for the operator on stderr (stdout stays free for command output).
func printError(_ message: String) {
    JSONLogHandler.writeToStderr(Array(message.utf8))
}

/// Open descriptors: each request in progress holds its FastCGI connection and usually a CRM
/// connection, so the usual soft limit (1024) is raised to the hard one, as servers do.
func raiseDescriptorLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
