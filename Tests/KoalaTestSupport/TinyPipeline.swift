import Foundation
import KoalaDiffusion

/// The tiny random pipeline (`model init --preset tiny --seed 0`, the preset and seed the
/// fixtures were made with), written once per test process into a temporary folder,
/// shared read-only by the tests that load it, and removed when the process exits.
public enum TinyPipeline {
    public static let folder: URL = {
        let root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-tiny-\(getpid())")
        try? FileManager.default.removeItem(at: root)
        try! FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let dir = root.appendingPathComponent("tiny")
        try! StableDiffusionXLPipeline.initialize(preset: try! PipelinePreset.named("tiny"), seed: 0, at: dir.path)
        atexit { try? FileManager.default.removeItem(at: URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-tiny-\(getpid())")) }
        return dir
    }()

    /// A fresh load of the folder (each caller may change its weights in memory).
    public static func load() -> StableDiffusionXLPipeline { try! StableDiffusionXLPipeline.load(from: folder.path) }
}
