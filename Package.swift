// swift-tools-version: 6.1
import PackageDescription

// Switchyard has no SwiftPM package dependencies by design: Postgres is reached through libpq
// (the CLibPQ system library), everything else comes from Foundation and the standard library.
let package = Package(
    name: "Switchyard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dispatcher", targets: ["Dispatcher"]),
        .executable(name: "worker", targets: ["Worker"]),
        .library(name: "QueueModel", targets: ["QueueModel"]),
        .library(name: "Postgres", targets: ["Postgres"]),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
        ),
        .target(name: "Postgres", dependencies: ["CLibPQ"]),
        .target(
            name: "QueueModel",
            dependencies: ["Postgres"],
            plugins: [.plugin(name: "EmbedMigrations")]
        ),
        .executableTarget(name: "Dispatcher", dependencies: ["QueueModel", "Postgres"]),
        .executableTarget(name: "Worker", dependencies: ["QueueModel", "Postgres"]),

        // Build-time only: turns sql/*.sql into a Swift source, so every binary carries the exact
        // migrations it was built with and can refuse a database that is ahead of it.
        .executableTarget(name: "EmbedMigrationsTool", path: "Plugins/EmbedMigrationsTool"),
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["EmbedMigrationsTool"]
        ),

        .testTarget(name: "QueueModelTests", dependencies: ["QueueModel"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["QueueModel", "Postgres", "Dispatcher", "Worker"],
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
