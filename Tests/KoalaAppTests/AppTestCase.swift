import Foundation
import KoalaApp
import KoalaDiffusion
import KoalaImageIO
import KoalaStore
import KoalaTestSupport
import XCTest

/// A temporary data directory and photo folder per test, and the tiny random pipeline
/// (`model init --preset tiny --seed 0`) made once per process.
class AppTestCase: XCTestCase {
    var root: URL!
    var location: StoreLocation { StoreLocation(home: root.appendingPathComponent("home")) }
    var subjects: SubjectUseCases { SubjectUseCases(location: location) }

    override func setUpWithError() throws {
        root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-app-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: root) }

    /// `n` different 32x32 PNG photos (different again for another `prefix`).
    func photos(_ n: Int, prefix: String = "p") throws -> [String] {
        let first = prefix == "p" ? 0 : 100
        return try (first..<first + n).map { i in
            let path = root.appendingPathComponent("\(prefix)\(i - first).png").path
            let pixels = (0..<(32 * 32 * 3)).map { UInt8(truncatingIfNeeded: $0 * (i + 2) + 17 * i) }
            try RGBImage(width: 32, height: 32, pixels: pixels).writePNG(path: path)
            return path
        }
    }

    func newSubject(_ name: String = "rex", photos: [String]) -> SubjectUseCases.NewSubject {
        var s = SubjectUseCases.NewSubject(name: name, classNoun: "dog", photoPaths: photos)
        s.minimumSide = 16
        return s
    }

    static var tinyModel: String { TinyPipeline.folder.path }
}
