import Foundation
import XCTest

@testable import CRMService

/// The in-repo configuration reader: `.env` parsing, key names, precedence, and typed values
/// as `Config` checks them.
final class EnvironmentConfigTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("env-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Writes `contents` as a file in the test directory and returns its path.
    private func file(_ contents: String, named name: String = ".env") throws -> String {
        let url = directory.appendingPathComponent(name)
        try Data(contents.utf8).write(to: url)
        return url.path
    }

    func testParseFollowsSwiftConfigurationsRules() {
        let parsed = EnvironmentConfig.parse("""
            # a comment line
            #COMMENTED=out

              # an indented comment, with = in it
            PLAIN=value
              PADDED  =   spaced value\t
            DSN=host=db port=5432 password=a=b
            EMPTY=
            DOUBLE_QUOTED="quoted value"
            SINGLE_QUOTED='single'
            INLINE=value # not a comment
            export EXPORTED=1
            no equals sign here
            =no name
            REPEATED=first
            REPEATED=last
            """)
        XCTAssertEqual(parsed, [
            "PLAIN": "value",
            "PADDED": "spaced value",
            "DSN": "host=db port=5432 password=a=b",
            "EMPTY": "",
            "DOUBLE_QUOTED": "\"quoted value\"",
            "SINGLE_QUOTED": "'single'",
            "INLINE": "value # not a comment",
            "export EXPORTED": "1",
            "REPEATED": "last",
        ])
    }

    func testParseLineEndsAndByteOrderMark() {
        XCTAssertEqual(EnvironmentConfig.parse("A=1\r\nB=2\r\n\r\nC=3"), ["A": "1", "B": "2", "C": "3"])
        XCTAssertEqual(EnvironmentConfig.parse("\u{FEFF}A=1\nB=2\n"), ["A": "1", "B": "2"])
        XCTAssertEqual(EnvironmentConfig.parse("\u{00A0}A\u{00A0}=\u{00A0}x y\u{00A0}\n"), ["A": "x y"], "Unicode whitespace is trimmed")
        XCTAssertEqual(EnvironmentConfig.parse(""), [:])
        XCTAssertEqual(EnvironmentConfig.parse("\n\n  \n# only comments\n"), [:])
    }

    func testKeyNames() {
        XCTAssertEqual(ConfigKey(["crm", "encryption", "key"]).variableName, "CRM_ENCRYPTION_KEY")
        XCTAssertEqual(ConfigKey(["db", "connect", "timeout", "s"]).variableName, "DB_CONNECT_TIMEOUT_S")
        XCTAssertEqual(ConfigKey(["http", "user-agent"]).variableName, "HTTP_USER_AGENT")
        let key: ConfigKey = ["instance", "connection", "name"]
        XCTAssertEqual(key.components, ["instance", "connection", "name"])

        let reader = EnvironmentConfig(environment: ["CRM_ENCRYPTION_KEY": testKey32, "crm_new_encryption_key": "lower"])
        XCTAssertEqual(reader.string(forKey: ["crm", "encryption", "key"], isSecret: true), testKey32)
        XCTAssertNil(reader.string(forKey: ["crm", "new", "encryption", "key"]), "names are case-sensitive")
        XCTAssertNil(reader.string(forKey: ["db", "dsn"]))
    }

    func testEnvironmentWinsOverTheFile() {
        let reader = EnvironmentConfig(environment: ["PORT": "9000", "LOG_LEVEL": ""],
                                       file: ["PORT": "8000", "LOG_LEVEL": "debug", "DEBUG": "true"])
        XCTAssertEqual(reader.string(forKey: ["port"]), "9000")
        XCTAssertEqual(reader.string(forKey: ["log", "level"]), "", "set to empty in the environment still wins")
        XCTAssertEqual(reader.string(forKey: ["debug"]), "true", "only in the file")
        XCTAssertNil(reader.string(forKey: ["environment"]))
    }

    func testLoadReadsTheFile() throws {
        let path = try file("DB_DSN=host=file dbname=crm\nCRM_ENCRYPTION_KEY=\(testKey32)\nPORT = 9100\nDB_POOL_SIZE=4\n")
        let reader = try EnvironmentConfig.load(environmentFile: path, environment: ["DB_POOL_SIZE": "7"])
        let config = try Config.load(reader).get()
        XCTAssertEqual(config.databaseDSN, "host=file dbname=crm")
        XCTAssertEqual(config.encryptionKey.revealed, testKey32)
        XCTAssertEqual(config.port, 9100)
        XCTAssertEqual(config.dbPoolSize, 7, "the environment wins")
        XCTAssertEqual(try Config.loadDatabase(reader).get().dsn, "host=file dbname=crm")
        XCTAssertFalse("\(reader)".contains(testKey32), "the reader prints no values")
        XCTAssertFalse("\(reader)".contains("host=file"), "the reader prints no values")
    }

    func testMissingFileIsFineUnreadableIsNot() throws {
        let missing = directory.appendingPathComponent("absent.env").path
        let reader = try EnvironmentConfig.load(environmentFile: missing, environment: ["PORT": "1"])
        XCTAssertEqual(reader.string(forKey: ["port"]), "1")
        XCTAssertNil(reader.string(forKey: ["debug"]))

        XCTAssertThrowsError(try EnvironmentConfig.load(environmentFile: directory.path, environment: [:])) { error in
            XCTAssertEqual("\(error)", "cannot read \(directory.path): Is a directory")
        }
    }

    func testProcessEnvironment() throws {
        let name = "CRM_ENV_CONFIG_TEST_\(getpid())"
        setenv(name, "a=b c", 1)
        defer { unsetenv(name) }
        XCTAssertEqual(EnvironmentConfig.processEnvironment()[name], "a=b c")
        let reader = try EnvironmentConfig.load(environmentFile: directory.appendingPathComponent("absent.env").path)
        XCTAssertEqual(reader.string(forKey: ConfigKey(name.lowercased().split(separator: "_").map(String.init))), "a=b c")
    }

    /// Typed values are checked by `Config`, with the raw text in the message; quotes in `.env`
    /// are part of the value, so a quoted number is not a number.
    func testTypedValuesFromTheFile() throws {
        let path = try file("""
            CRM_ENCRYPTION_KEY=\(testKey32)
            DB_DSN=host=db
            PORT="9000"
            DEBUG=maybe
            CRM_HTTP_TIMEOUT_S=fast
            FCGI_THREADS=2000
            """)
        let reader = try EnvironmentConfig.load(environmentFile: path, environment: ["DB_POOL_SIZE": "many"])
        guard case let .failure(problems) = Config.load(reader) else { return XCTFail("expected problems") }
        XCTAssertEqual(problems.problems.sorted(), [
            "CRM_HTTP_TIMEOUT_S must be a number from 0.1 to 600.0 (got 'fast')",
            "DB_POOL_SIZE must be an integer from 1 to 500 (got 'many')",
            "DEBUG must be true or false (got 'maybe')",
            "FCGI_THREADS must be an integer from 1 to 1024 (got '2000')",
            "PORT must be an integer from 1 to 65535 (got '\"9000\"')",
        ])

        let fixed = try EnvironmentConfig.load(environmentFile: path, environment: [
            "PORT": "9000", "DEBUG": "on", "CRM_HTTP_TIMEOUT_S": "2.5", "FCGI_THREADS": "8", "DB_POOL_SIZE": "3",
        ])
        let config = try Config.load(fixed).get()
        XCTAssertEqual(config.port, 9000)
        XCTAssertTrue(config.debug)
        XCTAssertEqual(config.crmHTTPTimeoutSeconds, 2.5)
        XCTAssertEqual(config.fcgiThreads, 8)
        XCTAssertEqual(config.dbPoolSize, 3)
    }
}
