import Foundation
import KoalaServer
import XCTest

/// The web UI's page and files: public, with their content types, no caching without
/// revalidation, a strict Content-Security-Policy, and nothing else reachable through
/// their routes.
final class WebUITests: ServerTestCase {
    static let webFolder = OpenAPIDocumentTests.repository.appendingPathComponent("Sources/KoalaServer/Resources/web")

    func testPageAndFilesAreServedWithoutAKey() async throws {
        let files: [(path: String, file: String, type: String)] = [
            ("/", "index.html", "text/html; charset=utf-8"),
            ("/web/index.html", "index.html", "text/html; charset=utf-8"),
            ("/web/app.js", "app.js", "text/javascript; charset=utf-8"),
            ("/web/app.css", "app.css", "text/css; charset=utf-8"),
            ("/web/icon.svg", "icon.svg", "image/svg+xml"),
        ]
        for (path, file, type) in files {
            let r = try await get(path, key: nil)
            XCTAssertEqual(r.status, 200, path)
            XCTAssertEqual(r.header("Content-Type"), type, path)
            XCTAssertEqual(r.body, try Data(contentsOf: Self.webFolder.appendingPathComponent(file)), "\(path) is the bundled \(file)")
            XCTAssertEqual(r.header("Cache-Control"), "no-cache", path)
            XCTAssertEqual(r.header("X-Content-Type-Options"), "nosniff", path)
            let csp = try XCTUnwrap(r.header("Content-Security-Policy"), path)
            for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob:", "connect-src 'self'", "frame-ancestors 'none'"] {
                XCTAssertTrue(csp.contains(directive), "\(path): \(directive) in \(csp)")
            }
            XCTAssertFalse(csp.contains("unsafe"), "no unsafe-inline or unsafe-eval: \(csp)")
        }
        // With a key the page is the same.
        let withKey = try await get("/", key: keyA)
        XCTAssertEqual(withKey.status, 200)
    }

    /// The CSP forbids inline code, so the page must have none: every script is a file,
    /// no element carries a style or an event handler attribute.
    func testPageHasNoInlineScriptOrStyle() throws {
        let html = try String(contentsOf: Self.webFolder.appendingPathComponent("index.html"), encoding: .utf8)
        let scripts = html.components(separatedBy: "<script").dropFirst()
        XCTAssertFalse(scripts.isEmpty)
        for script in scripts {
            XCTAssertTrue(script.hasPrefix(" src=\"/web/"), "inline script: <script\(script.prefix(40))")
        }
        XCTAssertFalse(html.contains("<style"))
        XCTAssertNil(html.range(of: #"\s(style|on[a-z]+)\s*="#, options: .regularExpression), "inline style or handler in index.html")
        let js = try String(contentsOf: Self.webFolder.appendingPathComponent("app.js"), encoding: .utf8)
        XCTAssertFalse(js.contains("innerHTML"), "API text goes in through textContent only")
        XCTAssertFalse(js.contains("eval("))
    }

    func testUnknownFilesAndTraversalReachNothing() async throws {
        let paths = ["/web/nope.js", "/web/", "/web/openapi.yaml", "/web/..%2Fopenapi.yaml", "/web/%2E%2E%2Fopenapi.yaml",
                     "/web/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/web/%2e%2e/v1/models", "/web/app.js%00.png", "/index.html"]
        for path in paths {
            let anonymous = try await get(path, key: nil)
            XCTAssertEqual(anonymous.status, 401, "\(path) without a key: \(anonymous.text)")
            XCTAssertEqual(anonymous.errorCode, "unauthorized", path)
            let keyed = try await get(path, key: keyA)
            XCTAssertEqual(keyed.status, 404, "\(path) with a key: \(keyed.text)")
            XCTAssertFalse(keyed.text.contains("root:"), path)
            XCTAssertFalse(keyed.text.contains("openapi: "), path)
        }
        // Only GET is public.
        let post = try await request("POST", "/", key: nil)
        XCTAssertEqual(post.status, 401)
        // The API behind the page still needs the key.
        let models = try await get("/v1/models", key: nil)
        XCTAssertEqual(models.status, 401)
    }
}
