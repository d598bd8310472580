import Foundation
import Hummingbird
import KoalaApp

/// Lets a request through only with `Authorization: Bearer KEY` naming an unrevoked key
/// of the data directory, which it records in the context; 401 with `WWW-Authenticate`
/// otherwise. Every route sits behind it, the OpenAPI document and unknown paths too,
/// so a stranger learns nothing about the server; only the web UI's page and files
/// (`WebRoutes.isPublic`) are open, as they hold no data.
struct BearerAuthMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let keys: APIKeyUseCases

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .get, WebRoutes.isPublic(path: request.uri.path) { return try await next(request, context) }
        guard let header = request.headers[.authorization] else { throw APIError.unauthorized("missing API key") }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw APIError.unauthorized("the Authorization header is not a bearer token")
        }
        let secret = String(parts[1]).trimmingCharacters(in: .whitespaces)
        guard let key = try await blocking({ [keys] in try keys.authenticate(secret: secret) }) else {
            var e = APIError.unauthorized("unknown or revoked API key")
            e.headers[.wwwAuthenticate] = #"Bearer realm="koalabooth", error="invalid_token""#
            throw e
        }
        var context = context
        context.key = key
        return try await next(request, context)
    }
}

/// Runs blocking work (SQLite, image decoding, file copies) on a Dispatch thread, so it
/// does not hold one of the few threads Swift's concurrency pool has.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
    }
}
