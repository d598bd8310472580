import Foundation
import Hummingbird
import KoalaApp
import Logging
import NIOCore

/// The HTTP service: the `/v1` routes over the application layer, behind API-key auth,
/// errors as JSON. `run` binds, reports the URL and serves until cancelled or signalled.
public struct APIServer: Sendable {
    public let configuration: ServerConfiguration
    let logger: Logger

    public init(configuration: ServerConfiguration, logger: Logger = Logger(label: "koalabooth.serve")) {
        self.configuration = configuration
        self.logger = logger
    }

    struct Route: Sendable {
        var method: HTTPRequest.Method
        /// An OpenAPI path template ("/v1/subjects/{id}"), which the router reads as is.
        var path: String
        var handler: @Sendable (Request, APIRequestContext) async throws -> Response
    }

    /// Every route, in one table: the router is made from it and the OpenAPI test
    /// compares it with the document.
    func routes(openAPIJSON: Data, web: WebRoutes = WebRoutes(contents: [:])) -> [Route] {
        let subjects = SubjectRoutes(location: configuration.location, minimumSide: configuration.minimumPhotoSide,
                                     maxBodyBytes: configuration.maxBodyBytes)
        let models = configuration.models
        let recipes = RecipeRoutes(directory: configuration.recipes)
        return [
            // The web UI, public (`WebRoutes.isPublic`).
            Route(method: .get, path: "/", handler: web.page),
            Route(method: .get, path: "/web/{file}", handler: web.asset),
            Route(method: .get, path: "/v1/openapi.json") { _, _ in
                Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: openAPIJSON)))
            },
            Route(method: .get, path: "/v1/models") { _, _ in
                try JSONBody.response(ModelListBody(models: models.models.map { ModelBody(name: $0.name, pipelineClass: $0.pipelineClass) }))
            },
            Route(method: .post, path: "/v1/subjects", handler: subjects.create),
            Route(method: .get, path: "/v1/subjects", handler: subjects.list),
            Route(method: .get, path: "/v1/subjects/{id}", handler: subjects.show),
            Route(method: .patch, path: "/v1/subjects/{id}", handler: subjects.rename),
            Route(method: .delete, path: "/v1/subjects/{id}", handler: subjects.delete),
            Route(method: .post, path: "/v1/subjects/{id}/photos", handler: subjects.addPhotos),
            Route(method: .delete, path: "/v1/subjects/{id}/photos/{photo}", handler: subjects.removePhoto),
            Route(method: .get, path: "/v1/subjects/{id}/photos/{photo}/image", handler: subjects.photoImage),
            Route(method: .get, path: "/v1/recipes", handler: recipes.list),
        ]
    }

    /// "GET /v1/models", … for every route.
    public var endpoints: [String] { routes(openAPIJSON: Data()).map { "\($0.method.rawValue) \($0.path)" } }

    func router(openAPIJSON: Data, web: WebRoutes) -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        let table = routes(openAPIJSON: openAPIJSON, web: web)
        router.add(middleware: APIErrorMiddleware(logger: logger, methods: RouteMethods(table.map { ($0.path, $0.method) })))
        router.add(middleware: BearerAuthMiddleware(keys: APIKeyUseCases(location: configuration.location)))
        for route in table {
            router.on(RouterPath(stringLiteral: route.path), method: route.method, use: route.handler)
        }
        return router
    }

    /// Refuses a non-loopback address while no API key exists (`ServeError`).
    public func checkExposure() throws {
        if !isLoopback(host: configuration.host), try !APIKeyUseCases(location: configuration.location).anyActiveKey() {
            throw ServeError.noKeyForPublicAddress(host: configuration.host)
        }
    }

    /// Opens the data directory (creating or upgrading it, clearing what killed
    /// processes left), binds, calls `onListening` with the URL (the real port when
    /// `port` is 0) and serves until the task is cancelled, or SIGINT/SIGTERM when
    /// `handleSignals`.
    public func run(handleSignals: Bool = false, onListening: @escaping @Sendable (URL) async -> Void) async throws {
        try checkExposure()
        // One store for every request, opened now.
        var opened = configuration
        opened.location = try configuration.location.keepingOpen()
        let openAPI = try OpenAPIDocument.json()
        let web = try WebRoutes.load()
        let host = configuration.host
        let listening = ListeningFlag()
        let app = Application(
            router: APIServer(configuration: opened, logger: logger).router(openAPIJSON: openAPI, web: web),
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: "KoalaBooth/\(Product.version)"),
            onServerRunning: { channel in
                listening.set()
                let port = channel.localAddress?.port ?? 0
                let shown = host.contains(":") ? "[\(host)]" : host
                await onListening(URL(string: "http://\(shown):\(port)")!)
            },
            logger: logger
        )
        do {
            if handleSignals { try await app.runService() } else { try await app.run() }
        } catch where !listening.isSet {
            throw ServeError.cannotListen(host: host, port: configuration.port, reason: "\(error)")
        }
    }
}

/// Whether the server got as far as listening (errors before that are start failures).
final class ListeningFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
