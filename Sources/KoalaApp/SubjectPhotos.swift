import Foundation
import KoalaImageIO
import KoalaStore

/// Photo count limits: DreamBooth needs a few views of the subject; many more mostly
/// slow training down and make overfitting likelier.
public enum PhotoLimits {
    public static let minimum = 3
    public static let recommendedMaximum = 20
}

/// The photo checks every subject use case runs before it stores anything.
public enum SubjectPhotos {
    /// Decodes every photo (so a broken file is caught now, not mid-training) and returns
    /// what the store needs. Reports all bad files at once (`SubjectError.unusablePhotos`).
    public static func validate(_ paths: [String], minimumSide: Int) throws -> [PhotoInput] {
        var inputs: [PhotoInput] = [], problems: [String] = []
        for path in paths {
            do {
                let image = try RGBImage.loadForTraining(path: path, minimumSide: minimumSide)
                let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: path)).read(upToCount: 16) ?? Data()
                let ext = ImageFormat.sniff([UInt8](head)) == .supported(.png) ? "png" : "jpg"
                inputs.append(PhotoInput(sourcePath: path, width: image.width, height: image.height, fileExtension: ext))
            } catch {
                problems.append("\(error)")
            }
        }
        if !problems.isEmpty { throw SubjectError.unusablePhotos(problems: problems) }
        return inputs
    }

    /// How many different pictures `inputs` holds (the same bytes count once).
    public static func distinctCount(_ inputs: [PhotoInput]) throws -> Int {
        Set(try inputs.map { try SHA256.hexOfFile(atPath: $0.sourcePath).hex }).count
    }
}
