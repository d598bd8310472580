import Foundation
@testable import KoalaTraining
import XCTest

/// Trainer helpers that need no model (the loop itself is tested in-process on a loaded
/// tiny pipeline in Tests/KoalaAppTests/TrainingRunnerTests.swift, and through the CLI in
/// Tests/KoalaCLITests/TrainTests.swift).
final class DreamBoothTrainerTests: XCTestCase {
    func testMirroredFlipsEveryChannelRowLeftToRight() {
        // 2x2, planar RGB: channel c, row y, column x holds 100c + 10y + x.
        var values: [Float] = []
        for c in 0..<3 { for y in 0..<2 { for x in 0..<2 { values.append(Float(100 * c + 10 * y + x)) } } }
        let img = TrainingImage(pixels: values, size: 2, originalWidth: 4, originalHeight: 2, cropX: 1, cropY: 0)
        let m = DreamBoothTrainer.mirrored(img)
        XCTAssertEqual(m.pixels, [1, 0, 11, 10, 101, 100, 111, 110, 201, 200, 211, 210])
        XCTAssertEqual(m.originalWidth, 4)
        XCTAssertEqual(m.cropX, 1, "4x2 resized onto a 2x2 crop is 4x2: the window at x = 1 mirrors to 4 - 2 - 1")
        let wide = TrainingImage(pixels: [Float](repeating: 0, count: 3 * 128 * 32), width: 128, height: 32,
                                 originalWidth: 768, originalHeight: 150, cropX: 0, cropY: 3)
        // 768x150 covers 128x32 at 163x32 (the height decides): x = 0 mirrors to 163 - 128 - 0.
        XCTAssertEqual(DreamBoothTrainer.mirrored(wide).cropX, 35)
        XCTAssertEqual(DreamBoothTrainer.mirrored(wide).cropY, 3)
        XCTAssertEqual(DreamBoothTrainer.mirrored(m).pixels, values)
    }

    func testCheckpointStatesAreFoundOldestFirst() throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-states-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["state-step000020.json", "state-step000005.json", "lora-step000005.safetensors", "state-stepx.json"] {
            try Data("{}".utf8).write(to: dir.appendingPathComponent(name))
        }
        XCTAssertEqual(DreamBoothTrainer.checkpointStates(in: dir).map(\.step), [5, 20])
    }

    func testPeakRSSIsPlausible() {
        let rss = DreamBoothTrainer.peakRSSBytes()
        XCTAssertGreaterThan(rss, 1 << 20)
        XCTAssertLessThan(rss, 1 << 40)
    }
}
