import Foundation
import Hummingbird

/// `GET /v1/recipes`: the training recipes clients may name, the `.toml` files of
/// `--recipes DIR` without the extension. Read at each request, so a recipe added while
/// the server runs is offered at once.
struct RecipeRoutes: Sendable {
    let directory: URL

    func list(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        _ = try context.requireKey()
        let directory = self.directory
        let names = try await blocking { Self.names(in: directory) }
        return try JSONBody.response(RecipeListBody(recipes: names.map { RecipeBody(name: $0) }))
    }

    /// Sorted; hidden files and folders are left out. A missing folder offers none.
    static func names(in directory: URL) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return entries.filter { name in
            var isFolder: ObjCBool = false
            return name.hasSuffix(".toml") && !name.hasPrefix(".") && name.count > 5
                && FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path, isDirectory: &isFolder) && !isFolder.boolValue
        }
        .map { String($0.dropLast(5)) }
        .sorted()
    }
}

struct RecipeBody: Encodable { var name: String }

struct RecipeListBody: Encodable { var recipes: [RecipeBody] }
