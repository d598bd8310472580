import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KoalaApp
import KoalaImageIO
import KoalaServer
import KoalaStore
import KoalaTestSupport
import Logging
import XCTest

/// One HTTP response, read whole.
struct HTTPResult {
    let status: Int
    let headers: [String: String]
    let body: Data

    func header(_ name: String) -> String? { headers.first { $0.key.lowercased() == name.lowercased() }?.value }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
    var errorMessage: String { (json["error"] as? [String: Any])?["message"] as? String ?? "" }
    var text: String { String(decoding: body, as: UTF8.self) }
}

struct Timeout: Error, CustomStringConvertible {
    let seconds: Double
    var description: String { "nothing within \(seconds) s" }
}

/// A form part for `multipart/form-data` bodies.
enum FormPart {
    case field(String, String)
    case file(field: String, filename: String, bytes: Data)
}

/// A server per test on 127.0.0.1 and a port the system picks, with a fresh data
/// directory, the tiny model registered as "tiny", and two keys, A and B. Requests go
/// over real HTTP (URLSession), each bounded by a timeout; nothing leaves loopback.
class ServerTestCase: XCTestCase {
    var root: URL!
    var home: URL { root.appendingPathComponent("home") }
    var location: StoreLocation { StoreLocation(home: home) }
    var baseURL: URL!
    var keyA: String!
    var keyB: String!
    private var serverTask: Task<Void, any Error>?
    let session: URLSession = {
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = 60
        c.timeoutIntervalForResource = 120
        return URLSession(configuration: c)
    }()

    /// Overridden by tests that need other limits.
    func configure(_ config: inout ServerConfiguration) {}

    override func setUp() async throws {
        root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-server-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let keys = APIKeyUseCases(location: location)
        keyA = try keys.create(name: "alice").secret
        keyB = try keys.create(name: "bob").secret
        var config = ServerConfiguration(location: location, models: try ModelRegistry([("tiny", TinyPipeline.folder.path)]),
                                         recipes: root.appendingPathComponent("recipes"))
        config.host = "127.0.0.1"
        config.port = 0
        configure(&config)
        let (urls, continuation) = AsyncStream<URL>.makeStream()
        // Cancelling the server at the end of a test is no error worth a log line.
        var logger = Logger(label: "koalabooth.serve.test")
        logger.logLevel = .critical
        let server = APIServer(configuration: config, logger: logger)
        serverTask = Task { try await server.run { url in continuation.yield(url) } }
        baseURL = try await withTimeout(30) { await urls.first { _ in true } }
    }

    override func tearDown() async throws {
        serverTask?.cancel()
        _ = await serverTask?.result
        try? FileManager.default.removeItem(at: root)
    }

    /// The first value of `work`, or a failure after `seconds`.
    func withTimeout<T: Sendable>(_ seconds: Double, _ work: @escaping @Sendable () async -> T?) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { await work() }
            group.addTask { try await Task.sleep(nanoseconds: UInt64(seconds * 1e9)); return nil }
            guard let first = try await group.next(), let value = first else {
                group.cancelAll()
                throw Timeout(seconds: seconds)
            }
            group.cancelAll()
            return value
        }
    }

    // MARK: Requests

    func request(_ method: String, _ path: String, key: String?, body: Data? = nil, contentType: String? = nil,
                 headers: [String: String] = [:]) async throws -> HTTPResult {
        var r = URLRequest(url: URL(string: path, relativeTo: baseURL)!)
        r.httpMethod = method
        if let key { r.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        if let contentType { r.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        for (k, v) in headers { r.setValue(v, forHTTPHeaderField: k) }
        r.httpBody = body
        let session = self.session
        return try await withCheckedThrowingContinuation { c in
            session.dataTask(with: r) { data, response, error in
                if let error { return c.resume(throwing: error) }
                let http = response as! HTTPURLResponse
                var headers: [String: String] = [:]
                for (k, v) in http.allHeaderFields { headers["\(k)"] = "\(v)" }
                c.resume(returning: HTTPResult(status: http.statusCode, headers: headers, body: data ?? Data()))
            }.resume()
        }
    }

    func get(_ path: String, key: String?) async throws -> HTTPResult { try await request("GET", path, key: key) }
    func delete(_ path: String, key: String?) async throws -> HTTPResult { try await request("DELETE", path, key: key) }

    func patch(_ path: String, key: String?, json: Any) async throws -> HTTPResult {
        try await request("PATCH", path, key: key, body: try JSONSerialization.data(withJSONObject: json), contentType: "application/json")
    }

    func post(_ path: String, key: String?, form: [FormPart]) async throws -> HTTPResult {
        let (body, type) = multipart(form)
        return try await request("POST", path, key: key, body: body, contentType: type)
    }

    func multipart(_ parts: [FormPart]) -> (Data, String) {
        let boundary = "kb-test-\(UUID().uuidString)"
        var body = Data()
        for part in parts {
            body.append(Data("--\(boundary)\r\n".utf8))
            switch part {
            case .field(let name, let value):
                body.append(Data("Content-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8))
            case .file(let field, let filename, let bytes):
                body.append(Data("Content-Disposition: form-data; name=\"\(field)\"; filename=\"\(filename)\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8))
                body.append(bytes)
                body.append(Data("\r\n".utf8))
            }
        }
        body.append(Data("--\(boundary)--\r\n".utf8))
        return (body, "multipart/form-data; boundary=\(boundary)")
    }

    // MARK: Photos and subjects

    /// A gradient photo that differs with `seed`, encoded as the name's extension says
    /// (the subject CLI tests' photos).
    func photo(seed: Int, png: Bool = false, width: Int = 288, height: Int = 256) throws -> Data {
        let pixels = gradientPixels(seed: seed, width: width, height: height)
        let path = root.appendingPathComponent("photo-\(UUID().uuidString).\(png ? "png" : "jpg")").path
        let image = RGBImage(width: width, height: height, pixels: pixels)
        if png { try image.writePNG(path: path) } else { try image.writeJPEG(path: path, quality: 90) }
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try Data(contentsOf: URL(fileURLWithPath: path))
    }

    func photoParts(_ n: Int, from: Int = 0) throws -> [FormPart] {
        try (from..<from + n).map { .file(field: "photos", filename: "p\($0).\($0 % 2 == 0 ? "jpg" : "png")", bytes: try photo(seed: $0, png: $0 % 2 == 1)) }
    }

    /// Creates subject `name` with three photos as `key`; returns its id.
    @discardableResult
    func createSubject(_ name: String, key: String, file: StaticString = #filePath, line: UInt = #line) async throws -> Int64 {
        let r = try await post("/v1/subjects", key: key, form: [.field("name", name), .field("class", "dog")] + (try photoParts(3)))
        XCTAssertEqual(r.status, 201, r.text, file: file, line: line)
        return ((r.json["subject"] as? [String: Any])?["id"] as? NSNumber)?.int64Value ?? -1
    }

    /// The id of the first photo `GET /v1/subjects/{id}` lists.
    func firstPhotoID(ofSubject id: Int64, key: String) async throws -> Int64 {
        let shown = try await get("/v1/subjects/\(id)", key: key)
        let photos = try XCTUnwrap(shown.json["photos"] as? [[String: Any]], shown.text)
        return try XCTUnwrap((photos.first?["id"] as? NSNumber)?.int64Value)
    }

    /// Every file under the data directory but the database's, and every row of the
    /// subject tables: equal before and after means a request changed nothing.
    func storeState() throws -> [String] {
        var out: [String] = []
        let subjectsDir = home.appendingPathComponent("subjects")
        if let walker = FileManager.default.enumerator(at: subjectsDir, includingPropertiesForKeys: nil) {
            for case let url as URL in walker { out.append("file \(url.path)") }
        }
        let store = try SubjectStore(home: home)
        out += try store.subjects().map { "subject \($0.subject.name) \($0.photoCount)" }
        for s in try store.subjects() { out += try store.photos(subjectID: s.subject.id!).map { "photo \($0.sha256)" } }
        return out.sorted()
    }
}
