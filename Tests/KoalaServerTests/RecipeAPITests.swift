import Foundation
import XCTest

/// `GET /v1/recipes`: the `.toml` files of `--recipes DIR`, by name.
final class RecipeAPITests: ServerTestCase {
    var recipes: URL { root.appendingPathComponent("recipes") }

    func testListsTheTOMLFilesByName() async throws {
        let none = try await get("/v1/recipes", key: keyA)
        XCTAssertEqual(none.status, 200, none.text)
        XCTAssertEqual(none.json["recipes"] as? [[String: String]], [], "no folder, no recipes")

        try FileManager.default.createDirectory(at: recipes.appendingPathComponent("nested.toml"), withIntermediateDirectories: true)
        for file in ["tiny.toml", "koala-700m-paper.toml", ".hidden.toml", "README.md", "tiny.toml.bak"] {
            try Data("[train]\n".utf8).write(to: recipes.appendingPathComponent(file))
        }
        let r = try await get("/v1/recipes", key: keyA)
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.header("Content-Type"), "application/json")
        // Only files: the folder nested.toml is no recipe.
        XCTAssertEqual(r.json["recipes"] as? [[String: String]], [["name": "koala-700m-paper"], ["name": "tiny"]])

        let anonymous = try await get("/v1/recipes", key: nil)
        XCTAssertEqual(anonymous.status, 401)
    }
}
