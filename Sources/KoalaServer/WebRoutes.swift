import Foundation
import Hummingbird
import NIOCore

/// The web UI: `Resources/web/` (index.html, app.css, app.js, icon.svg), read once at start and
/// served without a key, since the page holds no data; every API call it makes carries
/// the key the person types in. Only the files of `WebRoutes.files` exist, so a path
/// can never reach anything else.
struct WebRoutes: Sendable {
    /// File name → content type.
    static let files: [String: String] = [
        "index.html": "text/html; charset=utf-8",
        "app.css": "text/css; charset=utf-8",
        "app.js": "text/javascript; charset=utf-8",
        "icon.svg": "image/svg+xml",
    ]

    /// Scripts, styles and connections from this origin only, images also from the
    /// blob: URLs the page makes of API images (which need the key, so no <img src> can
    /// load them), nothing inline, no framing.
    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        + "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

    let contents: [String: Data]

    /// Loads every file of `files` from the bundle; a missing one is a broken build.
    static func load() throws -> WebRoutes {
        var contents: [String: Data] = [:]
        for name in files.keys {
            let base = (name as NSString).deletingPathExtension, ext = (name as NSString).pathExtension
            guard let url = Bundle.module.url(forResource: base, withExtension: ext, subdirectory: "Resources/web")
                ?? Bundle.module.url(forResource: base, withExtension: ext, subdirectory: "web"),
                let data = FileManager.default.contents(atPath: url.path) else {
                throw OpenAPIDocument.Invalid(description: "web/\(name) is missing from the KoalaServer resources")
            }
            contents[name] = data
        }
        return WebRoutes(contents: contents)
    }

    /// Whether `path` is exactly the page or one of its files, which need no key; any
    /// other path, under /web/ too, stays behind the key.
    static func isPublic(path: String) -> Bool {
        path == "/" || (path.hasPrefix("/web/") && files[String(path.dropFirst(5))] != nil)
    }

    func page(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        try file("index.html")
    }

    func asset(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        try file(context.parameters.get("file") ?? "")
    }

    func file(_ name: String) throws -> Response {
        guard let type = Self.files[name], let data = contents[name] else {
            throw APIError(status: .notFound, code: "not_found", message: "the web UI has no file \(name).")
        }
        return Response(status: .ok, headers: [
            .contentType: type,
            // Small and unversioned: revalidate each time, so an upgraded server's page is
            // never mixed with an old script.
            .cacheControl: "no-cache",
            .contentSecurityPolicy: Self.contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
            .init("Referrer-Policy")!: "no-referrer",
        ], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
