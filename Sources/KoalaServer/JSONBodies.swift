import Foundation
import Hummingbird
import KoalaApp
import KoalaStore
import NIOCore

// The JSON the API sends, field for field as docs/openapi.yaml describes it (snake_case
// keys, ISO 8601 dates).

struct SubjectBody: Encodable {
    var id: Int64
    var name: String
    var token: String
    var classNoun: String
    var notes: String
    var createdAt: Date
    var updatedAt: Date
    var photoCount: Int
    var runCount: Int
    var generationCount: Int
    var lastRunStatus: String?
    /// Present when one subject is returned.
    var photos: [PhotoBody]?

    enum CodingKeys: String, CodingKey {
        case id, name, token, notes, photos
        case classNoun = "class"
        case createdAt, updatedAt, photoCount, runCount, generationCount, lastRunStatus
    }

    init(_ s: SubjectSummary, photos: [Photo]? = nil) {
        id = s.subject.id!
        name = s.subject.name
        token = s.subject.token
        classNoun = s.subject.classNoun
        notes = s.subject.notes
        createdAt = s.subject.createdAt
        updatedAt = s.subject.updatedAt
        photoCount = s.photoCount
        runCount = s.runCount
        generationCount = s.generationCount
        lastRunStatus = s.lastRunStatus?.rawValue
        self.photos = photos?.map(PhotoBody.init)
    }
}

struct PhotoBody: Encodable {
    var id: Int64
    var sha256: String
    var originalName: String
    var width: Int
    var height: Int
    var byteCount: Int
    var addedAt: Date

    init(_ p: Photo) {
        id = p.id!
        sha256 = p.sha256
        originalName = p.originalName
        width = p.width
        height = p.height
        byteCount = p.byteCount
        addedAt = p.addedAt
    }
}

/// Something the server did or noticed without failing (a skipped copy, a warning).
struct NoticeBody: Encodable {
    var code: String
    var message: String

    init(_ notice: SubjectNotice) {
        let words = Self.words(notice)
        code = words.code
        message = words.message
    }

    /// The notice's code and text, in the API's terms (the CLI words it with its flags).
    static func words(_ notice: SubjectNotice) -> (code: String, message: String) {
        let file = { (path: String) in (path as NSString).lastPathComponent }
        let recommended = PhotoLimits.recommendedMaximum
        switch notice {
        case .commonWordToken(let token):
            return ("common_word_token", "using the common word '\(token)' as token, as allow_common_word asked.")
        case .manyPhotos(let distinct):
            return ("many_photos", "\(distinct) photos: more than \(recommended) rarely helps DreamBooth and makes training slower.")
        case .skippedCopy(let source, let sameAs):
            return ("skipped_copy", "skipped \(file(source)): same picture as \(file(sameAs)).")
        case .skippedKnownPhoto(let subject, let source, let sameAs):
            return ("skipped_known_photo", "skipped \(file(source)): \(subject) already has this picture (\(sameAs)).")
        case .subjectHasManyPhotos(let subject, let total):
            return ("many_photos", "\(subject) now has \(total) photos: more than \(recommended) rarely helps DreamBooth and makes training slower.")
        }
    }
}

struct CreatedSubjectBody: Encodable {
    var subject: SubjectBody
    var notices: [NoticeBody]
}

struct PhotosAddedBody: Encodable {
    var added: [PhotoBody]
    /// The subject's photos after the addition.
    var total: Int
    var notices: [NoticeBody]
}

struct SubjectListBody: Encodable { var subjects: [SubjectBody] }

struct ModelBody: Encodable {
    var name: String
    var pipelineClass: String
}

struct ModelListBody: Encodable { var models: [ModelBody] }

/// What `PATCH /v1/subjects/{id}` accepts.
struct SubjectPatch: Decodable {
    var name: String?
}

enum JSONBody {
    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}
