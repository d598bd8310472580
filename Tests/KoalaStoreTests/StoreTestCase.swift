import Foundation
@testable import KoalaStore
import XCTest

/// A fresh temporary folder per test (`root`) with the data directory `home` inside it,
/// and source "photos" to add (the store does not decode images, so any bytes do).
class StoreTestCase: XCTestCase {
    var root: URL!
    var home: URL { root.appendingPathComponent("home") }

    override func setUpWithError() throws {
        root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-\(type(of: self))-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: root) }

    func photos(_ n: Int = 3) throws -> [PhotoInput] {
        let dir = root.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return try (0..<n).map { i in
            let url = dir.appendingPathComponent("p\(i).jpg")
            try Data((0..<2000).map { UInt8(truncatingIfNeeded: $0 * (i + 3) + i) }).write(to: url)
            return PhotoInput(sourcePath: url.path, width: 300, height: 400, fileExtension: "jpg")
        }
    }
}
