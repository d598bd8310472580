import Foundation
import KoalaTraining
import XCTest

/// The names of a checkpoint's files: `doctor`, `keep_last` and resume find checkpoints by them.
final class CheckpointNameTests: XCTestCase {
    func testNamesOfAStep() {
        let n = CheckpointName(step: 15)
        XCTAssertEqual(n.tag, "step000015")
        XCTAssertEqual(n.stateFile, "state-step000015.json")
        XCTAssertEqual(n.optimizerFile, "optimizer-step000015.safetensors")
        XCTAssertEqual(n.validationImage(promptIndex: 0, imageIndex: 1), "step000015-p1-2.png")
        XCTAssertEqual(CheckpointName.step(ofStateFile: n.stateFile), 15)
    }

    func testEntriesOfTheCheckpoint() {
        let n = CheckpointName(step: 5)
        for name in ["lora-step000005.safetensors", "lora-step000005.kohya.safetensors", "unet-step000005", "state-step000005.json"] {
            XCTAssertTrue(n.names(name), name)
        }
        for name in ["lora-step000050.safetensors", "step000005-p1-1.png", "lora-step0000055.safetensors", "notes.txt"] {
            XCTAssertFalse(n.names(name), name)
        }
        for name in ["state-stepx.json", "lora-step000005.safetensors", "state-step000005.txt"] {
            XCTAssertNil(CheckpointName.step(ofStateFile: name), name)
        }
    }
}
