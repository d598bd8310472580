import Foundation
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// Crafted, non-regular and oversized files given to the executable (issue 13, items 4
/// and 6): each must end in a clean error exit that names the problem, never a signal
/// (a trap in the parser) and never a hang (a FIFO) or a read until memory runs out.
final class CraftedFileCLITests: XCTestCase {
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    struct Outcome {
        let exited: Bool
        let status: Int32
        let stderr: String
    }

    /// Runs the executable with a deadline: past it the process is killed and the test fails.
    func run(_ args: [String], timeout: TimeInterval = 120, file: StaticString = #filePath, line: UInt = #line) throws -> Outcome {
        let p = Process()
        p.executableURL = CLI.executable
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(["KOALABOOTH_HOME": home.path]) { $1 }
        let errURL = dir.appendingPathComponent("stderr-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let err = try FileHandle(forWritingTo: errURL)
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        try p.run()
        if done.wait(timeout: .now() + timeout) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            done.wait()
            XCTFail("koalabooth \(args.joined(separator: " ")) was still running after \(Int(timeout)) s", file: file, line: line)
        }
        try err.close()
        let stderr = String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self)
        return Outcome(exited: p.terminationReason == .exit, status: p.terminationStatus, stderr: stderr)
    }

    /// The command fails with exit status 1 and a message holding every needle.
    func assertCleanFailure(_ args: [String], _ needles: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        let o = try run(args, file: file, line: line)
        XCTAssertTrue(o.exited, "killed by signal \(o.status): \(args.joined(separator: " "))\n\(o.stderr)", file: file, line: line)
        XCTAssertEqual(o.status, 1, o.stderr, file: file, line: line)
        for needle in needles { XCTAssertTrue(o.stderr.contains(needle), "expected '\(needle)' in: \(o.stderr)", file: file, line: line) }
    }

    func generateArgs(model: String = CLI.tinyModel, _ extra: [String]) -> [String] {
        ["generate", "--model", model, "--prompt", "p", "--steps", "1", "--width", "64", "--height", "64",
         "--output", dir.appendingPathComponent("x.png").path] + extra
    }

    /// Three good photos (the example subject's), so that `subject create` gets past its
    /// photo count and reaches the file under test.
    var goodPhotos: [String] {
        let photos = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("subjects/robot-toy")
        return (1...3).map { photos.appendingPathComponent("robot-toy-\($0).jpg").path }
    }

    func createArgs(_ photo: String) -> [String] { ["subject", "create", "toy", "--class", "toy", "--token", "sks"] + goodPhotos + [photo] }

    func write(_ bytes: [UInt8], _ name: String) -> String {
        let path = dir.appendingPathComponent(name).path
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    /// A header length of 2^63 and a shape whose byte count wraps to the bytes present.
    var hugeHeader: [UInt8] { SafeTensorsCraft.bytes(headerLength: 1 << 63, rest: Array("{}      ".utf8)) }
    func wrappingShape(_ name: String) -> [UInt8] {
        SafeTensorsCraft.file(header: "{\"\(name)\":{\"dtype\":\"F32\",\"shape\":[4611686018427387910],\"data_offsets\":[0,24]}}", data: 24)
    }

    func testCraftedLoRAIsACleanError() throws {
        try assertCleanFailure(generateArgs(["--lora", write(hugeHeader, "huge.safetensors")]), "header length field says 9223372036854775808 bytes")
        let wraps = write(wrappingShape("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"), "wraps.safetensors")
        try assertCleanFailure(generateArgs(["--lora", wraps]), "would need more than")
        var rng = SplitMix64(seed: 13)
        for kind in SafeTensorsCraft.Mutation.allCases {
            let path = write(SafeTensorsCraft.mutated(kind, rng: &rng), "mutated-\(kind).safetensors")
            // Most are refused as safetensors; a mutation that still parses is refused as a LoRA.
            try assertCleanFailure(generateArgs(["--lora", path]), "LoRA file \(path)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.png").path))
    }

    func testCraftedLatentsAreACleanError() throws {
        try assertCleanFailure(generateArgs(["--latents", write(hugeHeader, "huge.safetensors")]), "--latents", "header length field says")
        try assertCleanFailure(generateArgs(["--latents", write(wrappingShape("latents"), "wraps.safetensors")]), "would need more than")
    }

    func testCraftedUNetWeightsInAModelFolderAreACleanError() throws {
        let model = dir.appendingPathComponent("model")
        try FileManager.default.copyItem(atPath: CLI.tinyModel, toPath: model.path)
        let weights = model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        XCTAssertTrue(FileManager.default.fileExists(atPath: weights.path))
        try Data(hugeHeader).write(to: weights)
        try assertCleanFailure(generateArgs(model: model.path, []), weights.path, "header length field says")
        try Data(wrappingShape("conv_in.weight")).write(to: weights)
        try assertCleanFailure(generateArgs(model: model.path, []), weights.path, "would need more than")
        try assertCleanFailure(["model", "info", model.path], weights.path)
    }

    func testFIFOsAreRefusedWithoutBlocking() throws {
        let fifo = dir.appendingPathComponent("pipe").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let unblock = FIFOUnblocker(path: fifo)
        defer { unblock.stop() }
        try assertCleanFailure(generateArgs(["--lora", fifo]), "FIFO")
        try assertCleanFailure(generateArgs(["--latents", fifo]), "FIFO")
        try assertCleanFailure(createArgs(fifo), fifo, "FIFO")
        // The recipe is read once the subject is known: create it first.
        let created = try run(["subject", "create", "toy", "--class", "toy", "--token", "sks"] + goodPhotos)
        XCTAssertEqual(created.status, 0, created.stderr)
        try assertCleanFailure(["train", "toy", "--recipe", fifo, "--model", CLI.tinyModel], fifo, "FIFO")
    }

    /// /dev/zero as a photo was read until the OOM killer ended the process.
    func testDeviceAsPhotoIsRefused() throws {
        try assertCleanFailure(createArgs("/dev/zero"), "/dev/zero", "device")
    }

    func testOversizedPhotoIsRefusedBeforeReading() throws {
        let big = dir.appendingPathComponent("big.jpg").path
        FileManager.default.createFile(atPath: big, contents: Data([0xFF, 0xD8, 0xFF, 0xE0]))
        XCTAssertEqual(truncate(big, off_t(ImageLimits.maxFileBytes + 1)), 0)  // sparse: no disk used
        try assertCleanFailure(createArgs(big), big, "more than the \(ImageLimits.maxFileBytes) bytes")
    }
}
