// swift-tools-version:5.9
// The Swift SDK of pottery-semaphore. Sources/CPotterySemaphore and Sources/PotterySemaphoreFFI are
// generated from the Rust library (not kept in git); README.md says how, and how to build.

import PackageDescription

#if os(Linux)
// The header and a modulemap that links libpottery_semaphore_ffi from the library path.
let ffi: Target = .systemLibrary(name: "CPotterySemaphore", path: "Sources/CPotterySemaphore")
#else
// Apple platforms: static libraries, header and modulemap in an XCFramework (README.md's recipe).
let ffi: Target = .binaryTarget(name: "CPotterySemaphore", path: "CPotterySemaphore.xcframework")
#endif

let apple: [Platform] = [.macOS, .iOS]

let package = Package(
    name: "PotterySemaphore",
    platforms: [.macOS(.v10_15), .iOS(.v13)],
    products: [
        .library(name: "PotterySemaphore", targets: ["PotterySemaphore"]),
    ],
    targets: [
        ffi,
        // The UniFFI-generated Swift (one file, written by the generator).
        .target(
            name: "PotterySemaphoreFFI",
            dependencies: ["CPotterySemaphore"],
            path: "Sources/PotterySemaphoreFFI",
            linkerSettings: [
                // What the static Rust library needs on Apple platforms (native-tls).
                .linkedFramework("Security", .when(platforms: apple)),
                .linkedFramework("CoreFoundation", .when(platforms: apple)),
            ]
        ),
        // The hand-written layer.
        .target(
            name: "PotterySemaphore",
            dependencies: ["PotterySemaphoreFFI"],
            path: "Sources/PotterySemaphore"
        ),
    ]
)
