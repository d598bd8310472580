import Foundation
import KoalaStore

/// Something a subject use case tells its caller on the way, without failing.
public enum SubjectNotice: Equatable, Sendable {
    /// The request allowed a common English word as token.
    case commonWordToken(String)
    /// A new subject gets more distinct photos than `PhotoLimits.recommendedMaximum`.
    case manyPhotos(distinct: Int)
    /// Two of the given files hold the same picture; `source` was not stored.
    case skippedCopy(source: String, sameAs: String)
    /// The subject already has the picture in `source`.
    case skippedKnownPhoto(subject: String, source: String, sameAs: String)
    /// After adding photos the subject has more than `PhotoLimits.recommendedMaximum`.
    case subjectHasManyPhotos(subject: String, total: Int)
}

/// Everything about one subject, as `subject show` reports it.
public struct SubjectDetail: Encodable, Sendable {
    public var subject: Subject
    public var photos: [Photo]
    public var runs: [TrainingRun]
    public var checkpoints: [Checkpoint]
    public var generations: [Generation]
}

/// The subject use cases: create, change, inspect and delete subjects and their photos.
/// Input is checked whole before anything is stored; errors are `SubjectError` and
/// `StoreError`; notices go to the `notify` the caller gives.
///
/// `owner`: the API key a request of the service carries. A key reaches only the
/// subjects it created; any other subject, one made on the command line included, is
/// `unknownSubject` to it, as if it did not exist (default deny). Nil (the command
/// line, run by whoever owns the data directory) reaches every subject.
public struct SubjectUseCases: Sendable {
    public let location: StoreLocation

    public init(location: StoreLocation) { self.location = location }

    /// What `create` needs.
    public struct NewSubject: Sendable {
        public var name: String
        public var classNoun: String
        public var token = "sks"
        public var notes = ""
        public var photoPaths: [String]
        /// Smallest accepted shorter side of a photo, in pixels.
        public var minimumSide = 256
        /// Accept a token from `CommonWords`.
        public var allowCommonWord = false

        public init(name: String, classNoun: String, photoPaths: [String]) {
            self.name = name
            self.classNoun = classNoun
            self.photoPaths = photoPaths
        }
    }

    public struct Created: Sendable {
        public var subject: Subject
        public var photos: [Photo]
        /// The data directory it was stored in.
        public var home: URL

        /// As `show` reports it: a new subject has no runs or images yet.
        public var detail: SubjectDetail {
            SubjectDetail(subject: subject, photos: photos, runs: [], checkpoints: [], generations: [])
        }
    }

    public func create(_ new: NewSubject, owner: APIKey? = nil, notify: (SubjectNotice) -> Void = { _ in }) throws -> Created {
        try Subject.validate(name: new.name)
        try Subject.validate(token: new.token)
        try Subject.validate(classNoun: new.classNoun)
        let classWords = new.classNoun.lowercased().split(separator: " ").map(String.init)
        if classWords.contains(new.token.lowercased()) {
            throw SubjectError.tokenInClassNoun(token: new.token, classNoun: new.classNoun)
        }
        if CommonWords.contains(new.token) {
            guard new.allowCommonWord else { throw SubjectError.commonWordToken(token: new.token) }
            notify(.commonWordToken(new.token))
        }
        if new.photoPaths.count < PhotoLimits.minimum {
            throw SubjectError.tooFewPhotos(given: new.photoPaths.count, classNoun: new.classNoun)
        }
        // Fail on a taken name before decoding every photo.
        if try location.openExisting()?.subject(named: new.name) != nil { throw StoreError.duplicateName(name: new.name) }
        let inputs = try SubjectPhotos.validate(new.photoPaths, minimumSide: new.minimumSide)
        let distinct = try SubjectPhotos.distinctCount(inputs)
        if distinct < PhotoLimits.minimum {
            throw SubjectError.tooFewDistinctPhotos(given: new.photoPaths.count, distinct: distinct)
        }
        if distinct > PhotoLimits.recommendedMaximum { notify(.manyPhotos(distinct: distinct)) }

        let store = try location.open()
        let (subject, result) = try store.createSubject(name: new.name, token: new.token, classNoun: new.classNoun,
                                                        notes: new.notes, photos: inputs, ownerKeyID: owner?.id)
        for d in result.duplicates { notify(.skippedCopy(source: d.sourcePath, sameAs: d.sameAs)) }
        return Created(subject: subject, photos: result.added, home: store.home)
    }

    public struct PhotosAdded: Sendable {
        public var subject: Subject
        public var added: [Photo]
        /// The subject's photos after the addition.
        public var total: Int
    }

    /// Adds photos (all checked first; pictures the subject already has are skipped).
    public func addPhotos(_ paths: [String], to name: String, minimumSide: Int = 256, owner: APIKey? = nil,
                          notify: (SubjectNotice) -> Void = { _ in }) throws -> PhotosAdded {
        let store = try requireStore(subject: name)
        let subject = try store.requireSubject(named: name, visibleTo: owner)
        let inputs = try SubjectPhotos.validate(paths, minimumSide: minimumSide)
        let result = try store.addPhotos(inputs, toSubjectNamed: subject.name)
        for d in result.duplicates { notify(.skippedKnownPhoto(subject: subject.name, source: d.sourcePath, sameAs: d.sameAs)) }
        let total = try store.photos(subjectID: subject.id!).count
        if total > PhotoLimits.recommendedMaximum && !result.added.isEmpty {
            notify(.subjectHasManyPhotos(subject: subject.name, total: total))
        }
        return PhotosAdded(subject: subject, added: result.added, total: total)
    }

    public struct PhotoRemoved: Sendable {
        public var subject: Subject
        public var photo: Photo
        public var remaining: Int
    }

    /// Removes the photo `query` names (a hash prefix or a file name). Refused when it
    /// would leave fewer than `PhotoLimits.minimum`, unless `allowBelowMinimum`.
    public func removePhoto(of name: String, matching query: String, allowBelowMinimum: Bool = false,
                            owner: APIKey? = nil) throws -> PhotoRemoved {
        let store = try requireStore(subject: name)
        let subject = try store.requireSubject(named: name, visibleTo: owner)
        let target = try store.findPhoto(subjectNamed: subject.name, matching: query)
        let remaining = try store.photos(subjectID: subject.id!).count - 1
        if remaining < PhotoLimits.minimum && !allowBelowMinimum {
            throw SubjectError.removalBelowMinimum(subject: subject.name, remaining: remaining)
        }
        try store.removePhoto(target)
        return PhotoRemoved(subject: subject, photo: target, remaining: remaining)
    }

    /// Every subject with its counts; none when there is no data directory yet.
    public func list(owner: APIKey? = nil) throws -> [SubjectSummary] {
        guard let store = try location.openExisting() else { return [] }
        guard let owner, let keyID = owner.id else { return try store.subjects() }
        let owned = try store.subjectIDs(ownedBy: keyID)
        return try store.subjects().filter { owned.contains($0.subject.id!) }
    }

    /// One subject with its photos, runs, checkpoints and its `generations` latest images.
    public func show(_ name: String, generations: Int, owner: APIKey? = nil) throws -> (detail: SubjectDetail, directory: URL) {
        let store = try requireStore(subject: name)
        let s = try store.requireSubject(named: name, visibleTo: owner)
        let detail = SubjectDetail(subject: s, photos: try store.photos(subjectID: s.id!), runs: try store.runs(subjectID: s.id!),
                                   checkpoints: try store.checkpoints(subjectID: s.id!),
                                   generations: try store.generations(subjectID: s.id!, limit: max(0, generations)))
        return (detail, store.subjectDirectory(subjectID: s.id!))
    }

    public func rename(_ old: String, to new: String, owner: APIKey? = nil) throws -> Subject {
        try Subject.validate(name: new)
        let store = try requireStore(subject: old)
        let s = try store.requireSubject(named: old, visibleTo: owner)
        return try store.renameSubject(s.name, to: new)
    }

    /// What deleting `name` would remove, for a confirmation.
    public struct DeletionPreview: Sendable {
        public var subject: Subject
        public var photos: Int
        public var runs: Int
        public var generations: Int
    }

    public func deletionPreview(_ name: String, owner: APIKey? = nil) throws -> DeletionPreview {
        let store = try requireStore(subject: name)
        let s = try store.requireSubject(named: name, visibleTo: owner)
        return DeletionPreview(subject: s, photos: try store.photos(subjectID: s.id!).count,
                               runs: try store.runs(subjectID: s.id!).count, generations: try store.generations(subjectID: s.id!).count)
    }

    /// Deletes the subject with its photos, runs, checkpoints and generated images;
    /// returns what it was.
    @discardableResult
    public func delete(_ name: String, owner: APIKey? = nil) throws -> Subject {
        let store = try requireStore(subject: name)
        let s = try store.requireSubject(named: name, visibleTo: owner)
        try store.deleteSubject(named: s.name)
        return s
    }

    /// The existing store; without one no subject exists.
    private func requireStore(subject name: String) throws -> SubjectStore {
        guard let store = try location.openExisting() else { throw StoreError.unknownSubject(name: name) }
        return store
    }
}
