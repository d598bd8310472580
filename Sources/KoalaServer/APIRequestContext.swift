import Hummingbird
import KoalaStore

/// Per-request state: the API key `BearerAuthMiddleware` found.
struct APIRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set for every request that reaches a route.
    var key: APIKey?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    /// The authenticated key; the middleware guarantees one.
    func requireKey() throws -> APIKey {
        guard let key else { throw APIError.unauthorized("missing API key") }
        return key
    }
}
