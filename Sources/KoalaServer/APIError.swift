import Foundation
import Hummingbird
import KoalaApp
import KoalaStore
import Logging
import NIOCore

/// An error response: `{"error": {"code": …, "message": …}}`. Client mistakes carry the
/// library's own description (the CLI shows the same words, less its flag hints); a
/// failure on the server's side names only its kind, since its description holds server
/// paths, and goes to the server's log in full.
struct APIError: Error, Equatable {
    var status: HTTPResponse.Status
    var code: String
    var message: String
    var headers: HTTPFields = [:]
    /// For `unusable_photos`: which uploaded file has which problem, so a client can show
    /// each beside its photo.
    var photos: [PhotoProblem] = []

    struct PhotoProblem: Equatable {
        /// The file's position among the request's `photos` parts, from 0.
        var index: Int
        var file: String
        var message: String
    }

    static func unauthorized(_ why: String) -> APIError {
        APIError(status: .unauthorized, code: "unauthorized",
                 message: "\(why): send `Authorization: Bearer KEY` with an API key of this server.",
                 headers: [.wwwAuthenticate: #"Bearer realm="koalabooth""#])
    }

    /// A method the path does not have; `Allow` lists those it has.
    static func methodNotAllowed(_ method: HTTPRequest.Method, allowed: [HTTPRequest.Method]) -> APIError {
        let names = allowed.map(\.rawValue).joined(separator: ", ")
        return APIError(status: .methodNotAllowed, code: "method_not_allowed", message: "\(method.rawValue) is not allowed here; use \(names).",
                        headers: [.allow: names])
    }

    static func badRequest(_ code: String, _ message: String) -> APIError { APIError(status: .badRequest, code: code, message: message) }

    static func subjectNotFound(id: String) -> APIError {
        APIError(status: .notFound, code: "subject_not_found", message: "no subject with id \(id).")
    }

    static func photoNotFound(id: String, subject: String) -> APIError {
        APIError(status: .notFound, code: "photo_not_found", message: "subject \(subject) has no photo with id \(id).")
    }

    /// `error` as a response; `logger` gets the server-side failures.
    static func from(_ error: any Error, logger: Logger) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as StoreError: return from(e, logger: logger)
        case let e as SubjectError: return from(e)
        case is NIOTooManyBytesError:
            return APIError(status: .contentTooLarge, code: "body_too_large", message: "the request body is larger than this server accepts.")
        case let e as HTTPError where e.status == .notFound:
            return APIError(status: .notFound, code: "not_found", message: "no such endpoint; GET /v1/openapi.json lists them.")
        case let e as HTTPError:
            return APIError(status: e.status, code: "http_\(e.status.code)", message: e.body ?? e.status.reasonPhrase)
        default:
            logger.error("request failed: \(error)")
            return internalError
        }
    }

    static let internalError = APIError(status: .internalServerError, code: "internal",
                                        message: "the server failed to handle the request; its log says why.")

    static func from(_ e: StoreError, logger: Logger) -> APIError {
        switch e {
        case .unknownSubject: return APIError(status: .notFound, code: "subject_not_found", message: e.description)
        case .duplicateName: return APIError(status: .conflict, code: "duplicate_name", message: e.description)
        case .invalidName: return badRequest("invalid_name", e.description)
        case .invalidToken: return badRequest("invalid_token", e.description)
        case .invalidClassNoun: return badRequest("invalid_class", e.description)
        case .photoNotFound: return APIError(status: .notFound, code: "photo_not_found", message: e.description)
        case .ambiguousPhoto: return badRequest("ambiguous_photo", e.description)
        case .subjectBusy: return APIError(status: .conflict, code: "subject_busy", message: e.description)
        case .diskFull:
            logger.error("\(e)")
            return APIError(status: HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage"), code: "disk_full", message: "the server's disk is full; nothing was changed.")
        case .readOnly:
            logger.error("\(e)")
            return APIError(status: .serviceUnavailable, code: "read_only", message: "the server's data directory is read-only; nothing can be changed.")
        case .homeNotADirectory, .homeNotWritable, .databaseTooNew, .databaseUnreadable, .databaseMissing,
             .notKoalaBoothDatabase, .unknownRun, .fileUnreadable, .fileOperationFailed, .outsideHome:
            logger.error("\(e)")
            return internalError
        }
    }

    static func from(_ e: SubjectError) -> APIError {
        switch e {
        case .tokenInClassNoun, .commonWordToken: return badRequest("invalid_token", e.description)
        case .tooFewPhotos, .tooFewDistinctPhotos: return badRequest("too_few_photos", e.description)
        case .unusablePhotos: return badRequest("unusable_photos", e.description)
        case .removalBelowMinimum: return APIError(status: .conflict, code: "below_minimum", message: e.description)
        }
    }

    var response: Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        var error: [String: Any] = ["code": code, "message": message]
        if !photos.isEmpty { error["photos"] = photos.map { ["index": $0.index, "file": $0.file, "message": $0.message] as [String: Any] } }
        let body = ["error": error]
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Turns every error a route or middleware throws into an `APIError` response, so no
/// client sees Hummingbird's plain-text errors.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let logger: Logger
    let methods: RouteMethods

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            // The router found no route: a known path asked with another method is a 405.
            guard let allowed = methods.allowed(forPath: request.uri.path) else { return APIError.from(e, logger: logger).response }
            return APIError.methodNotAllowed(request.method, allowed: allowed).response
        } catch {
            return APIError.from(error, logger: logger).response
        }
    }
}

/// The route table's paths with their methods, to tell a path asked with a method it
/// lacks (any method, `QUERY` included) from one that does not exist.
struct RouteMethods: Sendable {
    private let templates: [(segments: [String], methods: [HTTPRequest.Method])]

    /// `routes`: OpenAPI path templates ("/v1/subjects/{id}") and methods.
    init(_ routes: [(path: String, method: HTTPRequest.Method)]) {
        var out: [(segments: [String], methods: [HTTPRequest.Method])] = []
        for (path, method) in routes {
            let segments = path.split(separator: "/").map(String.init)
            if let i = out.firstIndex(where: { $0.segments == segments }) { out[i].methods.append(method) } else { out.append((segments, [method])) }
        }
        templates = out
    }

    /// The methods of the template `path` fits ("{…}" takes any one segment); nil when none.
    func allowed(forPath path: String) -> [HTTPRequest.Method]? {
        let parts = path.split(separator: "/")
        return templates.first { t in
            t.segments.count == parts.count && zip(t.segments, parts).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }?.methods
    }
}
