// swift-tools-version: 6.0
import PackageDescription

// Release builds are plain -O: every `precondition` runs in the shipped binary and in
// the tests. -Ounchecked was measured to buy nothing (KOALA-700M forward and LoRA step
// within noise, docs/ARCHITECTURE.md "Build flags and checks"): the time is in
// OpenBLAS/oneDNN and the C kernels.

// Linux x86-64 only: the code calls Glibc (statvfs, flock, fsync), reads /proc, asks Linux
// for AMX state (arch_prctl), and the C kernels are built for AVX2+FMA (AVX-512 and bf16
// are chosen at run time, through oneDNN).
#if !(os(Linux) && arch(x86_64))
#error("KoalaBooth builds on Linux x86-64 only (Glibc calls, AVX2 C kernels)")
#endif

let package = Package(
    name: "KoalaBooth",
    products: [
        .executable(name: "koalabooth", targets: ["koalabooth"]),
        .library(name: "KoalaTensor", targets: ["KoalaTensor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // The HTTP service only (KoalaServer): the core libraries never depend on these.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // System library (Debian: libopenblas-dev). libjpeg and libpng are wrapped by the
        // C target CImageCodecs, which links them itself.
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        // oneDNN matmul where it beats OpenBLAS (Debian: libdnnl-dev; threads with libgomp).
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        // SIMD kernels that Swift does not vectorise well (exp/tanh/erf families).
        .target(
            name: "CKernels",
            cSettings: [.unsafeFlags(["-O3", "-mavx2", "-mfma", "-fno-math-errno"])]
        ),

        // Layer 1: tensor engine (tensors, autograd, ops, safetensors).
        .target(name: "KoalaTensor", dependencies: ["COpenBLAS", "CDNNL", "CKernels", .product(name: "Logging", package: "swift-log")]),
        // Layer 2: models (U-Net, CLIP text encoders, VAE, tokenizer, pipeline folders).
        .target(name: "KoalaModels", dependencies: ["KoalaTensor"], resources: [.copy("Resources")]),
        // libjpeg/libpng (Debian: libjpeg-dev, libpng-dev) behind setjmp/longjmp wrappers:
        // their error callbacks must not return, which Swift cannot express.
        .target(
            name: "CImageCodecs",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png16")]
        ),
        // Layer 2: image I/O (JPEG/PNG decode/encode, resize, crop).
        .target(name: "KoalaImageIO", dependencies: ["CImageCodecs"]),
        // Layer 3: diffusion schedulers and sampling pipelines.
        .target(name: "KoalaDiffusion", dependencies: ["KoalaModels", "KoalaTensor"]),
        // Layer 4: DreamBooth training (optimizers, LoRA, recipes).
        .target(name: "KoalaTraining", dependencies: ["KoalaDiffusion", "KoalaImageIO", "KoalaModels", "KoalaTensor", "TOMLKit"]),
        // Layer 4: subject store (SQLite via GRDB).
        .target(name: "KoalaStore", dependencies: [.product(name: "GRDB", package: "GRDB.swift"), .product(name: "Crypto", package: "swift-crypto")]),
        // Layer 5: the application layer: the use cases the CLI and the service both call.
        .target(name: "KoalaApp", dependencies: ["KoalaTraining", "KoalaStore", "KoalaDiffusion", "KoalaModels", "KoalaImageIO", "KoalaTensor",
                                                 .product(name: "Crypto", package: "swift-crypto")]),
        // Layer 6: the HTTP service (`koalabooth serve`): routes, API-key auth and JSON over
        // the application layer. Hummingbird's core product only (no TLS, HTTP/2 or client).
        .target(
            name: "KoalaServer",
            dependencies: [
                "KoalaApp", "KoalaStore", "KoalaModels",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Resources")]
        ),
        // Layer 6: the command-line program (commands in a library so tests can reach them).
        .target(
            name: "KoalaCLI",
            dependencies: [
                "KoalaApp", "KoalaServer", "KoalaTraining", "KoalaStore", "KoalaDiffusion", "KoalaModels", "KoalaImageIO", "KoalaTensor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
        ),
        .executableTarget(name: "koalabooth", dependencies: ["KoalaCLI", .product(name: "Logging", package: "swift-log")]),
        // Benchmarks (`just bench`): release build only.
        .executableTarget(name: "KoalaBench", dependencies: ["KoalaDiffusion", "KoalaModels", "KoalaTensor", "KoalaTraining"]),

        // Tests. Fixtures (reference data from tools/reference/) live in Tests/Fixtures.
        .target(name: "KoalaTestSupport", dependencies: ["KoalaTensor", "KoalaDiffusion"], path: "Tests/KoalaTestSupport"),
        .testTarget(name: "KoalaTensorTests", dependencies: ["KoalaTensor", "KoalaTestSupport"]),
        .testTarget(name: "KoalaModelsTests", dependencies: ["KoalaModels", "KoalaTestSupport"]),
        .testTarget(name: "KoalaDiffusionTests", dependencies: ["KoalaDiffusion", "KoalaTestSupport"]),
        .testTarget(name: "KoalaImageIOTests", dependencies: ["KoalaImageIO", "KoalaTestSupport"]),
        .testTarget(name: "KoalaTrainingTests", dependencies: ["KoalaTraining", "KoalaTestSupport"]),
        .testTarget(name: "KoalaStoreTests", dependencies: ["KoalaStore", "KoalaTestSupport"]),
        .testTarget(name: "KoalaAppTests", dependencies: ["KoalaApp", "KoalaTestSupport"]),
        .testTarget(name: "KoalaCLITests", dependencies: ["koalabooth", "KoalaCLI", "KoalaApp", "KoalaTestSupport"]),
        // Over real HTTP on loopback (URLSession): no HTTP client package to build.
        .testTarget(name: "KoalaServerTests", dependencies: ["KoalaServer", "KoalaApp", "KoalaStore", "KoalaImageIO", "KoalaTestSupport",
                                                            .product(name: "Logging", package: "swift-log")]),
    ]
)
