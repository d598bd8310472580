import Foundation

/// A folder of captioned images, as the distillation data (`koalabooth distill --data`):
/// either a `metadata.jsonl` whose lines name `file_name` and `text` (Hugging Face's
/// imagefolder convention; then it alone decides which images are used), or each image
/// with a `.txt` of the same name beside it (kohya's convention). Images are JPEG or PNG.
public struct CaptionedImageFolder: Sendable {
    public struct Item: Sendable, Equatable {
        public let image: URL
        public let caption: String
    }

    public let directory: URL
    /// In file-name order (kohya) or line order (metadata.jsonl).
    public let items: [Item]

    static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    public init(path: String) throws {
        directory = URL(fileURLWithPath: path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw TrainingError("the data folder \(path) does not exist; give a folder of images with a caption each (name.txt beside name.jpg, or a metadata.jsonl)")
        }
        let metadata = directory.appendingPathComponent("metadata.jsonl")
        items = FileManager.default.fileExists(atPath: metadata.path)
            ? try Self.readMetadata(metadata, in: directory) : try Self.readSidecars(in: directory)
        guard !items.isEmpty else {
            throw TrainingError("the data folder \(path) holds no JPEG or PNG images; add images with a caption each")
        }
    }

    private static func readSidecars(in dir: URL) throws -> [Item] {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        var missing: [String] = []
        var items: [Item] = []
        for name in names where imageExtensions.contains((name as NSString).pathExtension.lowercased()) {
            let caption = dir.appendingPathComponent((name as NSString).deletingPathExtension + ".txt")
            guard let text = try? String(contentsOf: caption, encoding: .utf8) else { missing.append(name); continue }
            items.append(Item(image: dir.appendingPathComponent(name), caption: text.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        if !missing.isEmpty {
            let shown = missing.prefix(5).joined(separator: ", ") + (missing.count > 5 ? ", …" : "")
            throw TrainingError("\(missing.count) image\(missing.count == 1 ? "" : "s") in \(dir.path) \(missing.count == 1 ? "has" : "have") no caption (\(shown)); put the caption in a .txt of the same name beside each image, or list every image in a metadata.jsonl")
        }
        return items
    }

    private static func readMetadata(_ url: URL, in dir: URL) throws -> [Item] {
        let text = try String(contentsOf: url, encoding: .utf8)
        var items: [Item] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let where_ = "\(url.path) line \(i + 1)"
            guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any],
                  let file = object["file_name"] as? String, let caption = object["text"] as? String else {
                throw TrainingError("\(where_) is not a JSON object with the strings \"file_name\" and \"text\"; write one {\"file_name\": \"a.jpg\", \"text\": \"a caption\"} per line")
            }
            let image = dir.appendingPathComponent(file)
            guard !file.hasPrefix("/"), !file.split(separator: "/").contains(".."),
                  FileManager.default.fileExists(atPath: image.path) else {
                throw TrainingError("\(where_) names \(file), which is not a file in \(dir.path); name the image by its path inside the folder")
            }
            items.append(Item(image: image, caption: caption))
        }
        return items
    }
}
