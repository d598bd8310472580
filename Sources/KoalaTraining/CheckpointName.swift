import Foundation

/// The names a checkpoint's files carry in a run folder, all derived from its step: the
/// tag `step000100` (`lora-step000100.safetensors`, `optimizer-step000100.safetensors`,
/// `unet-step000100/`, with `[ema]` `ema-step000100.safetensors` and `raw-step000100.safetensors`), the resume state `state-step000100.json`, and the validation
/// images drawn at the step (`validation/step000100-p1-1.png`). `doctor` and
/// `keep_last` recognise a checkpoint's files by these names, so they are spelled here
/// only.
public struct CheckpointName: Sendable, Equatable {
    public let step: Int

    public init(step: Int) { self.step = step }

    /// `step000100`: six digits, so that names sort by step.
    public var tag: String { String(format: "step%06d", step) }

    /// `state-step000100.json`: the resume state, written last of the checkpoint's files.
    public var stateFile: String { "state-\(tag).json" }

    /// `optimizer-step000100.safetensors`.
    public var optimizerFile: String { "optimizer-\(tag).safetensors" }

    /// `ema-step000100.safetensors`: the EMA state (`[ema]`), when the run keeps one.
    public var emaFile: String { "ema-\(tag).safetensors" }

    /// `raw-step000100.safetensors`: the weights training continues from, when the exported
    /// files hold their EMA (`ema.use_for = "export"` or `"both"`).
    public var rawWeightsFile: String { "raw-\(tag).safetensors" }

    /// `step000100-p1-1.png`: prompt and image numbers count from 1.
    public func validationImage(promptIndex: Int, imageIndex: Int) -> String {
        "\(tag)-p\(promptIndex + 1)-\(imageIndex + 1).png"
    }

    /// Whether a run-folder entry belongs to this checkpoint: `<name>-<tag>` or
    /// `<name>-<tag>.<extensions>`, a file or a folder.
    public func names(_ entry: String) -> Bool {
        guard let r = entry.range(of: "-\(tag)"), r.lowerBound > entry.startIndex else { return false }
        let rest = entry[r.upperBound...]
        return rest.isEmpty || rest.hasPrefix(".")
    }

    /// The step of a resume state's file name (`state-step000100.json` → 100); nil for
    /// any other name.
    public static func step(ofStateFile name: String) -> Int? {
        guard name.hasPrefix("state-step"), name.hasSuffix(".json") else { return nil }
        return Int(name.dropFirst("state-step".count).dropLast(".json".count))
    }
}
