import Foundation
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `generate` refuses requests it cannot carry out (too large, too many, non-finite) with
/// the limit in the message, instead of aborting in the allocator or writing a black
/// picture with exit status 0 (issue 13 item 7); and a run whose latents go non-finite
/// fails without leaving an image.
final class GenerateBoundsTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    var output: String { dir.appendingPathComponent("out.png").path }

    func generate(_ extra: [String]) throws -> CLIResult {
        try CLI.run(["generate", "--model", CLI.tinyModel, "--prompt", "a photo of a koala", "--steps", "4",
                     "--width", "64", "--height", "64", "--output", output] + extra)
    }

    /// Fails cleanly (an error status, not a signal such as SIGABRT's 134), says `needle`,
    /// and leaves no image in the output folder.
    func assertRefused(_ r: CLIResult, _ needle: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertTrue(r.status == 1 || r.status == 64, "status \(r.status): \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(needle), "expected '\(needle)' in: \(r.stderr)", file: file, line: line)
        let images = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(images, [], "no image may be left behind", file: file, line: line)
    }

    func testHugeSizeIsRefusedWithTheLimit() throws {
        try assertRefused(try generate(["--width", "1000000", "--height", "1000000"]), "over the limit of 4096 pixels")
        try assertRefused(try generate(["--height", "8192"]), "--height 8192 is over the limit of 4096 pixels")
    }

    func testHugeCountIsRefusedWithTheLimit() throws {
        try assertRefused(try generate(["--count", "100000000"]), "over the limit of 10000 images")
    }

    func testNonFiniteOptionsAreRefusedNamingTheFlag() throws {
        try assertRefused(try generate(["--guidance", "nan"]), "--guidance must be a finite number, got nan")
        try assertRefused(try generate(["--guidance", "inf"]), "--guidance must be a finite number, got inf")
        try assertRefused(try generate(["--guidance-rescale", "nan"]), "--guidance-rescale must be a finite number")
        try assertRefused(try generate(["--lora", LoRAGenerateTests.loraPath("peft"), "--lora-scale", "nan"]),
                          "--lora-scale must be a finite number")
    }

    func testLoRAWithNaNIsRefusedNamingFileAndTensor() throws {
        let source = try SafeTensorsFile(path: LoRAGenerateTests.loraPath("peft"))
        var tensors: [String: Tensor] = [:]
        for name in source.names { tensors[name] = try source.tensor(name).contiguous().copy() }
        let poisoned = source.names.first { $0.contains("lora_B") || $0.contains("lora_up") || $0.contains("up.weight") }!
        tensors[poisoned]!.data[3] = .nan
        let path = dir.appendingPathComponent("nan-lora.safetensors").path
        try SafeTensors.write(tensors, to: path)
        try assertRefused(try generate(["--lora", path]), "LoRA file \(path) is unusable: tensor \(poisoned) holds nan at element 3")

        tensors[poisoned]!.data[3] = .infinity
        try SafeTensors.write(tensors, to: path)
        try assertRefused(try generate(["--lora", path]), "tensor \(poisoned) holds inf")
    }

    func testLatentsFileWithNaNIsRefused() throws {
        let noise = Tensor.zeros([1, 4, 8, 8])
        noise.data[17] = .nan
        let path = dir.appendingPathComponent("nan-latents.safetensors").path
        try SafeTensors.write(["latents": noise], to: path)
        try assertRefused(try generate(["--latents", path]), "--latents \(path) holds nan at element 17")
    }

    /// Finite inputs whose product overflows: the loop notices at the step it happens.
    func testLatentsGoingNonFiniteFailTheRunWithoutAnImage() throws {
        var r = try generate(["--guidance", "1e38"])
        try assertRefused(r, "the latents became NaN or infinite at denoising step")
        XCTAssertTrue(r.stderr.contains("of 4"), r.stderr)

        r = try generate(["--lora", LoRAGenerateTests.loraPath("peft"), "--lora-scale", "1e30"])
        try assertRefused(r, "the latents became NaN or infinite at denoising step 1 of 4")

        // With several images, the failure stops the run with the same message.
        r = try generate(["--guidance", "1e38", "--count", "3"])
        try assertRefused(r, "the latents became NaN or infinite")
    }

    /// Images are drawn one at a time (GenerateTests compares their pixels with diffusers'
    /// batch); the saved latents of several images are still one [count, 4, h, w] tensor.
    func testSeveralImagesSaveTheirLatentsTogether() throws {
        let saved = dir.appendingPathComponent("latents.safetensors").path
        let r = try generate(["--count", "3", "--seed", "5", "--save-latents", saved])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("image 3/3"), r.stderr)
        let latents = try SafeTensorsFile(path: saved).tensor("latents")
        XCTAssertEqual(latents.shape, [3, 4, 8, 8])
        XCTAssertTrue(latents.isAllFinite)
        let rows = latents.toArray()
        XCTAssertNotEqual(Array(rows[0..<256]), Array(rows[256..<512]), "each image has its own noise")
        for i in 1...3 { XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out-\(i).png").path)) }
    }
}
