import Foundation
import KoalaApp
import KoalaStore
import NIOCore

/// The `photos` parts of a form written to a staging folder of the data directory, so the
/// subject use cases check and import them exactly as they do a CLI user's files. Each
/// file keeps the client's file name (in a folder of its own), which the store records
/// as the photo's original name and the error messages show.
struct PhotoUpload {
    let directory: URL
    /// The staged files, in the order of the form.
    let paths: [String]

    init(_ files: [MultipartForm.File], in store: SubjectStore) throws {
        if files.count > ServerLimits.maxPhotosPerRequest {
            throw APIError.badRequest("too_many_photos", "\(files.count) photos in one request; send at most \(ServerLimits.maxPhotosPerRequest).")
        }
        directory = try store.makeStagingDirectory()
        var paths: [String] = []
        do {
            for (i, file) in files.enumerated() {
                let folder = directory.appendingPathComponent("\(i)")
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false)
                let url = folder.appendingPathComponent(Self.safeName(file.filename, index: i))
                guard FileManager.default.createFile(atPath: url.path, contents: Data(file.bytes.readableBytesView)) else {
                    throw StoreError.fileOperationFailed(path: url.path, reason: "cannot write the uploaded photo")
                }
                paths.append(url.path)
            }
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        self.paths = paths
    }

    func discard() { try? FileManager.default.removeItem(at: directory) }

    /// `message` with the staging folders taken out of the paths it names, so a client
    /// reads "rex.jpg: …" and never a path of the server.
    func clientWording(_ message: String) -> String {
        var out = message
        for path in paths { out = out.replacingOccurrences(of: (path as NSString).deletingLastPathComponent + "/", with: "") }
        return out.replacingOccurrences(of: directory.path, with: "upload")
    }

    /// Each "PATH: problem" of `SubjectError.unusablePhotos` as the part it is about.
    func problems(_ problems: [String]) -> [APIError.PhotoProblem] {
        problems.compactMap { problem in
            guard let index = paths.firstIndex(where: { problem.hasPrefix($0 + ": ") }) else { return nil }
            return APIError.PhotoProblem(index: index, file: (paths[index] as NSString).lastPathComponent,
                                         message: clientWording(String(problem.dropFirst(paths[index].count + 2))))
        }
    }

    /// The client's file name without any folder part, or `photo-N` when it sent none.
    static func safeName(_ filename: String?, index: Int) -> String {
        let base = (filename ?? "").split(separator: "/").last.map(String.init) ?? ""
        let cleaned = String(base.unicodeScalars.filter { $0.value >= 0x20 && $0 != "\\" }.map(Character.init).prefix(120))
        return cleaned.isEmpty || cleaned == "." || cleaned == ".." ? "photo-\(index + 1)" : cleaned
    }
}
