import Foundation
import Hummingbird
import KoalaApp
import KoalaStore
import NIOCore

/// `/v1/subjects…`: the subject use cases for the request's key, which owns what it
/// creates and reaches nothing else (another key's subject is a 404, as if it did not
/// exist). Uploads go through the same checks as the CLI's files.
struct SubjectRoutes: Sendable {
    let location: StoreLocation
    let minimumSide: Int
    let maxBodyBytes: Int

    var subjects: SubjectUseCases { SubjectUseCases(location: location) }

    static let createFields: Set<String> = ["name", "class", "token", "notes", "allow_common_word"]

    func create(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let form = try MultipartForm(contentType: request.headers[.contentType], body: try await body(of: request, limit: maxBodyBytes))
        if let unknown = form.fields.keys.sorted().first(where: { !Self.createFields.contains($0) }) {
            throw APIError.badRequest("invalid_form", "unknown form field \(unknown); the fields are \(Self.createFields.sorted().joined(separator: ", ")) and photos.")
        }
        guard let name = form.fields["name"] else { throw Self.missing("name", "the subject's name") }
        guard let classNoun = form.fields["class"] else { throw Self.missing("class", "what the subject is, such as dog") }
        var new = SubjectUseCases.NewSubject(name: name, classNoun: classNoun, photoPaths: [])
        new.token = form.fields["token"] ?? new.token
        new.notes = form.fields["notes"] ?? ""
        new.minimumSide = minimumSide
        new.allowCommonWord = try Self.flag("allow_common_word", form.fields["allow_common_word"])
        let files = try Self.photoParts(form)
        let (subjects, location, newSubject) = (self.subjects, self.location, new)
        return try await blocking {
            let upload = try PhotoUpload(files, in: try location.open())
            defer { upload.discard() }
            var new = newSubject
            new.photoPaths = upload.paths
            var notices: [NoticeBody] = []
            do {
                let created = try subjects.create(new, owner: key) { notices.append(NoticeBody($0)) }
                let summary = try Self.summary(of: created.subject, subjects: subjects, key: key)
                return try JSONBody.response(CreatedSubjectBody(subject: SubjectBody(summary, photos: created.photos), notices: notices), status: .created)
            } catch {
                throw Self.worded(error, upload)
            }
        }
    }

    func list(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let subjects = self.subjects
        return try await blocking {
            try JSONBody.response(SubjectListBody(subjects: try subjects.list(owner: key).map { SubjectBody($0) }))
        }
    }

    func show(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let id = try Self.id(context, "id")
        let (subjects, location) = (self.subjects, self.location)
        return try await blocking {
            let subject = try Self.subject(id, location: location, key: key)
            let detail = try subjects.show(subject.name, generations: 0, owner: key).detail
            return try JSONBody.response(SubjectBody(try Self.summary(of: subject, subjects: subjects, key: key), photos: detail.photos))
        }
    }

    func rename(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let id = try Self.id(context, "id")
        let patch: SubjectPatch
        do {
            patch = try JSONDecoder().decode(SubjectPatch.self, from: Data(try await body(of: request, limit: ServerLimits.maxJSONBytes).readableBytesView))
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.badRequest("invalid_body", "the body is not a JSON object like {\"name\": \"new-name\"}.")
        }
        guard let newName = patch.name else {
            throw APIError.badRequest("invalid_body", "nothing to change: send {\"name\": \"new-name\"} to rename the subject.")
        }
        let (subjects, location) = (self.subjects, self.location)
        return try await blocking {
            let subject = try Self.subject(id, location: location, key: key)
            let renamed = try subjects.rename(subject.name, to: newName, owner: key)
            return try JSONBody.response(SubjectBody(try Self.summary(of: renamed, subjects: subjects, key: key)))
        }
    }

    func delete(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let id = try Self.id(context, "id")
        let (subjects, location) = (self.subjects, self.location)
        return try await blocking {
            let subject = try Self.subject(id, location: location, key: key)
            try subjects.delete(subject.name, owner: key)
            return Response(status: .noContent)
        }
    }

    func addPhotos(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let id = try Self.id(context, "id")
        let (subjects, location) = (self.subjects, self.location)
        // Before the upload is read: a stranger's guess at an id learns nothing more.
        let subject = try await blocking { try Self.subject(id, location: location, key: key) }
        let form = try MultipartForm(contentType: request.headers[.contentType], body: try await body(of: request, limit: maxBodyBytes))
        if let field = form.fields.keys.sorted().first {
            throw APIError.badRequest("invalid_form", "unknown form field \(field); send only photos parts.")
        }
        let files = try Self.photoParts(form)
        if files.isEmpty { throw APIError.badRequest("missing_field", "no photos: send one photos part per photo.") }
        let minimumSide = self.minimumSide
        return try await blocking {
            let upload = try PhotoUpload(files, in: try location.open())
            defer { upload.discard() }
            var notices: [NoticeBody] = []
            do {
                let added = try subjects.addPhotos(upload.paths, to: subject.name, minimumSide: minimumSide, owner: key) { notices.append(NoticeBody($0)) }
                return try JSONBody.response(PhotosAddedBody(added: added.added.map(PhotoBody.init), total: added.total, notices: notices))
            } catch {
                throw Self.worded(error, upload)
            }
        }
    }

    func removePhoto(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let id = try Self.id(context, "id")
        let photoID = context.parameters.get("photo") ?? ""
        let allowBelowMinimum = try Self.flag("allow_below_minimum", request.uri.queryParameters.get("allow_below_minimum"))
        let (subjects, location) = (self.subjects, self.location)
        return try await blocking {
            let subject = try Self.subject(id, location: location, key: key)
            let photo = try Self.photo(photoID, of: subject, location: location)
            _ = try subjects.removePhoto(of: subject.name, matching: photo.sha256, allowBelowMinimum: allowBelowMinimum, owner: key)
            return Response(status: .noContent)
        }
    }

    func photoImage(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let key = try context.requireKey()
        let id = try Self.id(context, "id")
        let photoID = context.parameters.get("photo") ?? ""
        let location = self.location
        return try await blocking {
            let subject = try Self.subject(id, location: location, key: key)
            let photo = try Self.photo(photoID, of: subject, location: location)
            guard let store = try location.openExisting(),
                  let data = FileManager.default.contents(atPath: store.url(forRelativePath: photo.path).path) else {
                throw StoreError.fileUnreadable(path: photo.path, reason: "the stored photo is missing")
            }
            let type = photo.path.hasSuffix(".png") ? "image/png" : "image/jpeg"
            return Response(status: .ok, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
    }

    // MARK: Helpers

    /// The body, refused with 413 past `limit` bytes (before reading when the client
    /// announces its length).
    func body(of request: Request, limit: Int) async throws -> ByteBuffer {
        let tooLarge = APIError(status: .contentTooLarge, code: "body_too_large",
                                message: "the request body is larger than the limit of \(limit) bytes; send fewer or smaller photos per request.")
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit { throw tooLarge }
        do {
            return try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw tooLarge
        }
    }

    static func id(_ context: APIRequestContext, _ name: String) throws -> Int64 {
        let raw = context.parameters.get(name) ?? ""
        guard let id = Int64(raw) else { throw APIError.subjectNotFound(id: raw) }
        return id
    }

    /// The subject `id` if `key` owns it, else 404.
    static func subject(_ id: Int64, location: StoreLocation, key: APIKey) throws -> Subject {
        guard let store = try location.openExisting(), let subject = try store.subject(id: id, visibleTo: key) else {
            throw APIError.subjectNotFound(id: String(id))
        }
        return subject
    }

    static func photo(_ raw: String, of subject: Subject, location: StoreLocation) throws -> Photo {
        guard let id = Int64(raw), let store = try location.openExisting(),
              let photo = try store.photos(subjectID: subject.id!).first(where: { $0.id == id }) else {
            throw APIError.photoNotFound(id: raw, subject: subject.name)
        }
        return photo
    }

    static func summary(of subject: Subject, subjects: SubjectUseCases, key: APIKey) throws -> SubjectSummary {
        guard let summary = try subjects.list(owner: key).first(where: { $0.subject.id == subject.id }) else {
            throw APIError.subjectNotFound(id: String(subject.id!))
        }
        return summary
    }

    static func photoParts(_ form: MultipartForm) throws -> [MultipartForm.File] {
        if let other = form.files.first(where: { $0.field != "photos" }) {
            throw APIError.badRequest("invalid_form", "unexpected file in form field \(other.field); send photos as photos parts.")
        }
        return form.files
    }

    static func missing(_ field: String, _ what: String) -> APIError {
        APIError.badRequest("missing_field", "the form field \(field) is missing: give \(what).")
    }

    static func flag(_ name: String, _ value: String?) throws -> Bool {
        switch value?.lowercased() {
        case nil, "false", "0": return false
        case "true", "1": return true
        default: throw APIError.badRequest("invalid_field", "\(name) must be true or false, not '\(value!)'.")
        }
    }

    /// A use case's error with the upload's staging paths taken out of its message.
    static func worded(_ error: any Error, _ upload: PhotoUpload) -> any Error {
        switch error {
        case let e as SubjectError:
            var worded = reworded(APIError.from(e), upload)
            if case .unusablePhotos(let problems) = e { worded.photos = upload.problems(problems) }
            return worded
        case let e as StoreError where e.isClientError: return reworded(APIError.from(e, logger: .init(label: "koalabooth.serve")), upload)
        default: return error
        }
    }

    static func reworded(_ e: APIError, _ upload: PhotoUpload) -> APIError {
        var e = e
        e.message = upload.clientWording(e.message)
        return e
    }
}

extension StoreError {
    /// Caused by the request rather than by the server's state.
    var isClientError: Bool {
        switch self {
        case .unknownSubject, .duplicateName, .invalidName, .invalidToken, .invalidClassNoun, .photoNotFound, .ambiguousPhoto, .subjectBusy:
            return true
        default:
            return false
        }
    }
}
