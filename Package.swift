// swift-tools-version: 6.1
import PackageDescription

// The release worker's code layout (`make bench` measured it; README "Performance"):
// - lld lays out the functions that ran under a profile first, hottest first (link-order.txt,
//   scripts/link-order.sh), so the pages of code the worker touches are few and together;
// - relative relocations are packed (DT_RELR, glibc >= 2.36): ~1 MB less for the loader to read.
// Our modules put each function in its own section so that they can be ordered (the Swift
// runtime and the packages' public functions already are).
let releaseLayout: [LinkerSetting] = [.unsafeFlags([
    "-use-ld=lld",
    "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/link-order.txt",
    "-Xlinker", "--no-warn-symbol-ordering",
    "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
], .when(configuration: .release))]
let functionSections: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-function-sections"], .when(configuration: .release))]

let package = Package(
    name: "crm-service",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "crm-service", targets: ["crm-service"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries from Debian's -dev packages.
        .systemLibrary(name: "CFastCGI", pkgConfig: "fcgi", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // glibc calls Swift's Glibc module lacks (mallopt, gettid); part of libc: nothing to link.
        .systemLibrary(name: "CSystem"),

        // The domain: pure Swift, no I/O.
        .target(name: "CRMCore"),
        // Outbound HTTP over libcurl.
        .target(name: "HTTPClient", dependencies: ["CCurl", "CSystem", "Threads"]),
        // One folder per CRM, and the registry.
        .target(name: "CRMConnectors", dependencies: ["CRMCore", "HTTPClient", "COpenSSL"]),
        // libpq layer, stores, migrator.
        .target(name: "CRMStore", dependencies: ["CRMCore", "CLibPQ", "Threads"]),
        // The application: router, handlers, config, OpenAPI.
        .target(name: "CRMService", dependencies: [
            "CRMCore", "CRMConnectors", "CRMStore", "HTTPClient", "Threads",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // FastCGI transport over libfcgi.
        .target(name: "FastCGI", dependencies: ["CFastCGI", "Threads"]),
        // POSIX threads and a condition variable (no Foundation in the worker).
        .target(name: "Threads", dependencies: ["CSystem"]),
        .executableTarget(name: "crm-service", dependencies: [
            "CRMService", "FastCGI", "CRMStore", "CSystem", "Threads",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], linkerSettings: releaseLayout),
        .testTarget(name: "CRMCoreTests", dependencies: ["CRMCore"]),
        .testTarget(name: "CRMServiceTests", dependencies: [
            "CRMService", "CRMCore", "CRMStore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "CRMStoreTests", dependencies: ["CRMStore", "CRMCore"]),
        .testTarget(name: "FastCGITests", dependencies: ["FastCGI"]),
        .testTarget(name: "HTTPClientTests", dependencies: ["HTTPClient", "Threads"]),
        .testTarget(name: "ThreadsTests", dependencies: ["Threads", "CSystem"]),
    ],
    swiftLanguageModes: [.v6]
)

// `make fuzz` only (scripts/fuzz.sh): the libFuzzer harness. It links only with
// -sanitize=fuzzer, so other builds leave it out.
if Context.environment["CRM_FUZZ"] == "1" {
    package.targets += [
        .systemLibrary(name: "CFuzzer", path: "fuzz/CFuzzer"),
        .executableTarget(name: "crm-fuzz", dependencies: ["CFuzzer", "CRMCore", "CRMService", "CRMConnectors", "FastCGI", "HTTPClient", "Threads"],
                          path: "fuzz/crm-fuzz"),
    ]
    package.products.append(.executable(name: "crm-fuzz", targets: ["crm-fuzz"]))
}

for target in package.targets where target.type == .regular || target.type == .executable {
    target.swiftSettings = (target.swiftSettings ?? []) + functionSections
}

