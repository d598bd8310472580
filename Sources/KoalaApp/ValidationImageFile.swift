import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaTraining

/// A validation image as the PNG a run keeps: `generate`'s text chunks (A1111's
/// `parameters` naming the LoRA it was drawn with) plus `step` and what else says which
/// run drew it, written durably.
enum ValidationImageFile {
    /// Writes `image` into `directory` (made when missing) under `image.fileName`.
    static func write(_ image: ValidationImage, in directory: URL, model: String, loras: [Infotext.LoRA] = [],
                      chunks extra: [String: String]) throws -> URL {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(image.fileName)
        let rgb = RGBImage(planarFloats: image.pixels, width: image.width, height: image.height)
        let png = try PNGCodec.encode(rgb, text: textChunks(image, model: model, loras: loras, chunks: extra))
        try DurableWrite.file(url) { try Data(png).write(to: $0) }
        return url
    }

    /// Whether the images of these file names are all in `directory`.
    static func allWritten(_ names: [String], in directory: URL) -> Bool {
        names.allSatisfy { FileManager.default.fileExists(atPath: directory.appendingPathComponent($0).path) }
    }

    static func textChunks(_ image: ValidationImage, model: String, loras: [Infotext.LoRA] = [],
                           chunks extra: [String: String]) -> [(key: String, value: String)] {
        let p = image.parameters
        var m = p.textChunks(width: image.width, height: image.height, model: model, base: image.schedulerConfig)
        var info = Infotext(parameters: p, schedulerConfig: image.schedulerConfig, width: image.width, height: image.height, modelPath: model)
        info.loras = loras
        m["parameters"] = info.text
        m["step"] = "\(image.step)"
        if p.count > 1 { m["index"] = "\(image.imageIndex + 1) of \(p.count)" }
        m.merge(extra) { _, new in new }
        return m.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }
}
