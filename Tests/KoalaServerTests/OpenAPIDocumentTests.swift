import Foundation
import KoalaApp
import KoalaServer
import XCTest

/// docs/openapi.yaml describes exactly the routes the server has, and the server serves
/// it as JSON.
final class OpenAPIDocumentTests: ServerTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testServedJSONIsTheDocument() async throws {
        let r = try await get("/v1/openapi.json", key: keyA)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.header("Content-Type"), "application/json")
        let served = try XCTUnwrap(try JSONSerialization.jsonObject(with: r.body) as? NSDictionary)
        XCTAssertEqual(served, try OpenAPIDocument.object() as NSDictionary)
        XCTAssertEqual(served["openapi"] as? String, "3.1.0")
        // Response codes stay strings (YAML would read 200 as a number).
        let models = ((served["paths"] as? [String: Any])?["/v1/models"] as? [String: Any])?["get"] as? [String: Any]
        XCTAssertNotNil((models?["responses"] as? [String: Any])?["200"])
    }

    func testDocumentInDocsIsTheBundledOne() throws {
        let docs = try String(contentsOf: Self.repository.appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
        XCTAssertEqual(docs, try OpenAPIDocument.yaml())
    }

    /// Every documented operation exists and every route is documented, nothing more.
    func testDocumentedOperationsAreTheRoutes() throws {
        let paths = try XCTUnwrap(try OpenAPIDocument.object()["paths"] as? [String: [String: Any]])
        let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options"]
        let documented = paths.flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } }
        let server = APIServer(configuration: ServerConfiguration(location: location, models: ModelRegistry(), recipes: root))
        XCTAssertEqual(Set(documented), Set(server.endpoints))
        XCTAssertEqual(documented.count, server.endpoints.count)
        // Every $ref points at a component that exists.
        let text = try OpenAPIDocument.yaml()
        let components = try XCTUnwrap(try OpenAPIDocument.object()["components"] as? [String: [String: Any]])
        let refs = text.components(separatedBy: "$ref: \"#/components/").dropFirst().map { $0.prefix { $0 != "\"" } }
        XCTAssertFalse(refs.isEmpty)
        for ref in refs {
            let parts = ref.split(separator: "/").map(String.init)
            XCTAssertNotNil(components[parts[0]]?[parts[1]], "dangling $ref \(ref)")
        }
    }
}
