import Foundation
import KoalaStore

/// Identifies a base model folder, to tell that a model was replaced since a run
/// trained on it, and to key the class-image cache: a SHA-256 of the folder's file
/// names and sizes and of its small config files (`*.json`, `*.txt`), so gigabytes of
/// weights are never read.
public enum ModelFingerprint {
    /// The lowercase hex fingerprint of the folder at `path`.
    public static func of(folder path: String) throws -> String {
        let root = URL(fileURLWithPath: path)
        var hasher = KoalaStore.SHA256()
        let files = (FileManager.default.subpaths(atPath: path) ?? []).sorted()
        for rel in files {
            let url = root.appendingPathComponent(rel)
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: url.path),
                  attrs[.type] as? FileAttributeType == .typeRegular else { continue }
            let size = (attrs[.size] as? NSNumber)?.intValue ?? 0
            hasher.update(Data("\(rel):\(size)\n".utf8))
            if rel.hasSuffix(".json") || rel.hasSuffix(".txt") { hasher.update(try Data(contentsOf: url)) }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
