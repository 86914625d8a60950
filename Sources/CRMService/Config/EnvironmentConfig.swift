import Glibc

/// A configuration key as lower-case path components: `["crm", "encryption", "key"]` is the
/// environment variable `CRM_ENCRYPTION_KEY`.
public struct ConfigKey: Sendable, Hashable, ExpressibleByArrayLiteral {
    public var components: [String]

    public init(_ components: [String]) { self.components = components }
    public init(arrayLiteral components: String...) { self.components = components }

    /// Components upper-cased and joined with `_`; any character that is not a letter or a digit
    /// becomes `_` (swift-configuration's naming, without its camelCase splitting: our keys are lower-case).
    public var variableName: String {
        components.map { component in
            String(component.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
        }.joined(separator: "_")
    }
}

/// Configuration from environment variables, then a `.env` file (the environment wins, even when
/// a variable is set to the empty string there). Replaces swift-configuration, which imports all
/// of Foundation (and ICU) into the worker.
///
/// Values are never printed: `description` shows only counts.
public struct EnvironmentConfig: Sendable, CustomStringConvertible {
    private let environment: [String: String]
    private let file: [String: String]

    /// `environment` is looked up first, then `file` (the parsed `.env`).
    public init(environment: [String: String], file: [String: String] = [:]) {
        self.environment = environment
        self.file = file
    }

    /// The process environment, then the `.env` file at `path` (relative to the working directory).
    /// A missing file is fine; one that exists but cannot be read is an error.
    public static func load(environmentFile path: String = ".env",
                            environment: [String: String] = processEnvironment()) throws(EnvironmentFileError) -> EnvironmentConfig {
        let file = try readFile(path).map { parse(String(decoding: $0, as: UTF8.self)) } ?? [:]
        return EnvironmentConfig(environment: environment, file: file)
    }

    /// The value of the key's variable, or nil when it is set in neither place. `isSecret` marks
    /// secrets at the call site; this type never logs or prints a value, secret or not.
    public func string(forKey key: ConfigKey, isSecret: Bool = false) -> String? {
        let name = key.variableName
        return environment[name] ?? file[name]
    }

    public var description: String { "EnvironmentConfig[\(environment.count) environment, \(file.count) .env values]" }

    /// `environ` as a dictionary; for a name that appears twice the first wins, as with `getenv`.
    public static func processEnvironment() -> [String: String] {
        var variables: [String: String] = [:]
        let start: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = environ  // NULL after clearenv()
        guard var entry = start else { return variables }
        while let pointer = entry.pointee {
            let line = String(cString: pointer)
            if let equals = line.firstIndex(of: "=") {
                let name = String(line[..<equals])
                if variables[name] == nil { variables[name] = String(line[line.index(after: equals)...]) }
            }
            entry += 1
        }
        return variables
    }

    /// Parses `.env` contents with the rules of swift-configuration 1.4's `EnvironmentFileParser`,
    /// so existing files mean the same thing:
    /// - each line is trimmed of whitespace; blank lines are ignored;
    /// - the line is split at its first `=` (later `=` stay in the value); both sides are trimmed;
    /// - lines without `=`, with an empty name, or whose name starts with `#` (comments) are ignored;
    /// - no quote, escape, `export ` or inline-comment handling: `A="x y"` is the value `"x y"`
    ///   with its quotes, `A=x # note` is `x # note`, and `export A=x` defines the name
    ///   `export A`, which no key reads;
    /// - when a name repeats, the last line wins.
    /// Two deliberate differences, both at the file-encoding level: CRLF line ends separate lines
    /// (swift-configuration does not split `\r\n`, so a CRLF file became one variable), and a
    /// leading UTF-8 byte-order mark is dropped (it would otherwise be part of the first name).
    public static func parse(_ contents: String) -> [String: String] {
        var text = Substring(contents)
        if text.first == "\u{FEFF}" { text = text.dropFirst() }
        var variables: [String: String] = [:]
        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = rawLine.trimmingUnicodeWhitespace()
            guard let equals = line.firstIndex(of: "=") else { continue }
            let name = line[..<equals].trimmingUnicodeWhitespace()
            guard !name.isEmpty, name.first != "#" else { continue }
            variables[String(name)] = String(line[line.index(after: equals)...].trimmingUnicodeWhitespace())
        }
        return variables
    }

    /// The file's bytes, or nil when it does not exist.
    static func readFile(_ path: String) throws(EnvironmentFileError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw EnvironmentFileError(path: path, errno: errno)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                bytes.append(contentsOf: buffer[..<count])
            } else if count == 0 {
                return bytes
            } else if errno != EINTR {
                throw EnvironmentFileError(path: path, errno: errno)
            }
        }
    }
}

/// The `.env` file exists but cannot be read (permissions, a directory, …).
public struct EnvironmentFileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var description: String { "cannot read \(path): \(String(cString: strerror(errno)))" }
}

extension Substring {
    /// Trims `Character.isWhitespace` (Unicode: also no-break space, form feed, …), as
    /// swift-configuration does; CRMCore's `trimming()` strips only the characters it is given.
    fileprivate func trimmingUnicodeWhitespace() -> Substring {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return self[first...last]
    }
}
