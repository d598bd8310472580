import ArgumentParser
import Foundation
import KoalaImageIO
import KoalaStore
#if canImport(Glibc)
import Glibc
#endif

struct SubjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subject",
        abstract: "Create and manage subjects: the photos of one dog, person or object to teach the model.",
        subcommands: [SubjectCreate.self, SubjectAddPhotos.self, SubjectRemovePhoto.self, SubjectList.self,
                      SubjectShow.self, SubjectRename.self, SubjectDelete.self]
    )
}

/// Photo count limits: DreamBooth needs a few views of the subject; many more mostly
/// slow training down and make overfitting likelier.
enum PhotoLimits {
    static let minimum = 3
    static let recommendedMaximum = 20
}

/// Decodes every photo (so a broken file is caught now, not mid-training) and returns
/// what the store needs. Reports all bad files at once; throws if any is bad.
func validatePhotos(_ paths: [String], minimumSide: Int) throws -> [PhotoInput] {
    var inputs: [PhotoInput] = [], problems: [String] = []
    for path in paths {
        do {
            let image = try RGBImage.loadForTraining(path: path, minimumSide: minimumSide)
            let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: path)).read(upToCount: 16) ?? Data()
            let ext = ImageFormat.sniff([UInt8](head)) == .supported(.png) ? "png" : "jpg"
            inputs.append(PhotoInput(sourcePath: path, width: image.width, height: image.height, fileExtension: ext))
        } catch {
            problems.append("  - \(error)")
        }
    }
    if !problems.isEmpty {
        let what = problems.count == 1 ? "1 photo cannot be used" : "\(problems.count) photos cannot be used"
        throw CLIError("\(what); nothing was stored:\n" + problems.joined(separator: "\n")
                       + "\nFix or leave out these files and run the command again.")
    }
    return inputs
}

/// How many different pictures `inputs` holds (the same bytes count once).
func distinctCount(_ inputs: [PhotoInput]) throws -> Int {
    Set(try inputs.map { try SHA256.hexOfFile(atPath: $0.sourcePath).hex }).count
}

struct SubjectCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a subject from 3-20 photos.",
        discussion: """
            Every photo is decoded and checked before anything is stored; if one is unusable \
            the subject is not created. Photos are copied into the data directory.
            Example: koalabooth subject create rex --class dog rex1.jpg rex2.jpg rex3.jpg
            """
    )

    @Argument(help: "Subject name: letters, digits, '-' and '_'.")
    var name: String

    @Option(name: .customLong("class"), help: "What the subject is, e.g. dog, woman, mug.")
    var classNoun: String

    @Option(help: "Identifier word that stands for the subject in prompts; a rare word, not an English one.")
    var token = "sks"

    @Option(help: "Free-form notes.")
    var notes = ""

    @Option(name: .customLong("min-side"), help: "Smallest accepted shorter side of a photo, in pixels.")
    var minimumSide = 256

    @Flag(help: "Accept a common English word as token.")
    var force = false

    @Flag(help: "Print the new subject as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("The photos (JPEG or PNG).", valueName: "photo"))
    var photos: [String] = []

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if minimumSide < 1 { throw ValidationError("--min-side must be at least 1 pixel.") }
    }

    func run() throws {
        try Subject.validate(name: name)
        try Subject.validate(token: token)
        try Subject.validate(classNoun: classNoun)
        let classWords = classNoun.lowercased().split(separator: " ").map(String.init)
        if classWords.contains(token.lowercased()) {
            throw CLIError("the token '\(token)' is part of the class noun '\(classNoun)': prompts would read \"\(token) \(classNoun)\" and the token could not mean this particular \(classNoun). Choose a rare word as --token (the default 'sks' works).")
        }
        if CommonWords.contains(token) {
            if !force {
                throw CLIError("the token '\(token)' is a common English word; the model already has a meaning for it, and training would fight that and change every prompt using it. Choose a rare word as --token (the default 'sks' works), or pass --force to use '\(token)' anyway.")
            }
            Output.warn("using the common word '\(token)' as token (--force).")
        }
        if photos.count < PhotoLimits.minimum {
            throw CLIError("a subject needs at least \(PhotoLimits.minimum) photos, got \(photos.count). Give \(PhotoLimits.minimum)-\(PhotoLimits.recommendedMaximum) photos of the \(classNoun) from different angles and backgrounds.")
        }
        // Fail on a taken name before decoding every photo.
        if try global.openExistingStore()?.subject(named: name) != nil { throw StoreError.duplicateName(name: name) }
        let inputs = try validatePhotos(photos, minimumSide: minimumSide)
        let distinct = try distinctCount(inputs)
        if distinct < PhotoLimits.minimum {
            throw CLIError("a subject needs at least \(PhotoLimits.minimum) different photos; the \(photos.count) files given hold only \(distinct) different pictures (some are copies of each other). Add more photos.")
        }
        if distinct > PhotoLimits.recommendedMaximum {
            Output.warn("\(distinct) photos: more than \(PhotoLimits.recommendedMaximum) rarely helps DreamBooth and makes training slower; consider picking the best \(PhotoLimits.recommendedMaximum).")
        }

        let store = try global.openStore()
        let (subject, result) = try store.createSubject(name: name, token: token, classNoun: classNoun, notes: notes, photos: inputs)
        for d in result.duplicates { Output.note("skipped \(d.sourcePath): same picture as \(d.sameAs)") }
        if json {
            try Output.json(SubjectDetail(subject: subject, photos: result.added, runs: [], checkpoints: [], generations: []))
            return
        }
        print("Created subject \(subject.name) (\"\(subject.instancePhrase)\") with \(result.added.count) photos in \(store.home.path).")
    }
}

struct SubjectAddPhotos: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-photos",
        abstract: "Add photos to a subject (all are checked first; photos it already has are skipped)."
    )

    @Argument(help: "Subject name.")
    var name: String

    @Argument(help: ArgumentHelp("The photos (JPEG or PNG).", valueName: "photo"))
    var photos: [String] = []

    @Option(name: .customLong("min-side"), help: "Smallest accepted shorter side of a photo, in pixels.")
    var minimumSide = 256

    @Flag(help: "Print the added photos as JSON.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if photos.isEmpty { throw ValidationError("Give at least one photo to add.") }
        if minimumSide < 1 { throw ValidationError("--min-side must be at least 1 pixel.") }
    }

    func run() throws {
        guard let store = try global.openExistingStore() else { throw StoreError.unknownSubject(name: name) }
        let subject = try store.requireSubject(named: name)
        let inputs = try validatePhotos(photos, minimumSide: minimumSide)
        let result = try store.addPhotos(inputs, toSubjectNamed: subject.name)
        for d in result.duplicates { Output.note("skipped \(d.sourcePath): \(subject.name) already has this picture (\(d.sameAs))") }
        let total = try store.photos(subjectID: subject.id!).count
        if total > PhotoLimits.recommendedMaximum && !result.added.isEmpty {
            Output.warn("\(subject.name) now has \(total) photos: more than \(PhotoLimits.recommendedMaximum) rarely helps DreamBooth and makes training slower.")
        }
        if json { return try Output.json(result.added) }
        print("Added \(result.added.count) photo\(result.added.count == 1 ? "" : "s") to \(subject.name) (\(total) in all).")
    }
}

struct SubjectRemovePhoto: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-photo",
        abstract: "Remove one photo from a subject, by hash prefix or file name (see `subject show`)."
    )

    @Argument(help: "Subject name.")
    var name: String

    @Argument(help: ArgumentHelp("At least 4 leading hex digits of the photo's SHA-256, or its original or stored file name.", valueName: "sha-prefix|filename"))
    var photo: String

    @Flag(help: "Allow leaving the subject with fewer than 3 photos.")
    var force = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        guard let store = try global.openExistingStore() else { throw StoreError.unknownSubject(name: name) }
        let subject = try store.requireSubject(named: name)
        let target = try store.findPhoto(subjectNamed: subject.name, matching: photo)
        let remaining = try store.photos(subjectID: subject.id!).count - 1
        if remaining < PhotoLimits.minimum && !force {
            throw CLIError("removing it would leave \(subject.name) with \(remaining) photo\(remaining == 1 ? "" : "s"), fewer than the \(PhotoLimits.minimum) training needs. Add photos first (`koalabooth subject add-photos \(subject.name) ...`), or pass --force.")
        }
        try store.removePhoto(target)
        print("Removed \(target.originalName) (\(target.sha256.prefix(12))) from \(subject.name); \(remaining) photo\(remaining == 1 ? "" : "s") left.")
    }
}

struct SubjectList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the subjects.")

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let summaries = try global.openExistingStore()?.subjects() ?? []
        if json { return try Output.json(summaries) }
        if summaries.isEmpty {
            print("No subjects in \(global.homeURL.path). Create one with `koalabooth subject create NAME --class dog PHOTO...`.")
            return
        }
        Format.table(header: ["name", "prompt phrase", "photos", "runs", "last run", "generations", "created"], rows: summaries.map { s in
            [s.subject.name, s.subject.instancePhrase, String(s.photoCount), String(s.runCount),
             s.lastRunStatus?.rawValue ?? "-", String(s.generationCount), Output.date(s.subject.createdAt)]
        })
    }
}

/// Everything about one subject, as `subject show --json` prints it.
struct SubjectDetail: Encodable {
    var subject: Subject
    var photos: [Photo]
    var runs: [TrainingRun]
    var checkpoints: [Checkpoint]
    var generations: [Generation]
}

struct SubjectShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a subject's photos, runs, checkpoints and recent generations.")

    @Argument(help: "Subject name.")
    var name: String

    @Option(help: "How many recent generations to show.")
    var generations = 10

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        guard let store = try global.openExistingStore() else { throw StoreError.unknownSubject(name: name) }
        let s = try store.requireSubject(named: name)
        let detail = SubjectDetail(subject: s, photos: try store.photos(subjectID: s.id!), runs: try store.runs(subjectID: s.id!),
                                   checkpoints: try store.checkpoints(subjectID: s.id!),
                                   generations: try store.generations(subjectID: s.id!, limit: max(0, generations)))
        if json { return try Output.json(detail) }
        print("\(s.name): \"\(s.instancePhrase)\" (token \(s.token), class \(s.classNoun))")
        if !s.notes.isEmpty { print("notes: \(s.notes)") }
        print("created \(Output.date(s.createdAt)), updated \(Output.date(s.updatedAt)); files in \(store.subjectDirectory(subjectID: s.id!).path)")
        print("\nphotos (\(detail.photos.count)):")
        Format.table(header: ["sha256", "original name", "size", "bytes", "added"], rows: detail.photos.map { p in
            [String(p.sha256.prefix(12)), p.originalName, "\(p.width)x\(p.height)", Format.bytes(p.byteCount), Output.date(p.addedAt)]
        })
        print("\nruns (\(detail.runs.count)):")
        if detail.runs.isEmpty { print("none yet") } else { printRunTable(detail.runs, subjectNames: [s.id!: s.name]) }
        print("\ncheckpoints (\(detail.checkpoints.count)):")
        if detail.checkpoints.isEmpty { print("none yet") } else {
            Format.table(header: ["run", "step", "kind", "bytes", "path"], rows: detail.checkpoints.map { c in
                [String(c.runId), String(c.step), c.kind.rawValue, Format.bytes(c.byteCount), c.path]
            })
        }
        print("\nrecent generations (\(detail.generations.count)):")
        if detail.generations.isEmpty { print("none yet") } else {
            Format.table(header: ["id", "run", "seed", "steps", "size", "image", "prompt"], rows: detail.generations.map { g in
                [String(g.id!), g.runId.map(String.init) ?? "base", String(g.seed), String(g.steps), "\(g.width)x\(g.height)", g.imagePath, g.prompt]
            })
        }
    }
}

struct SubjectRename: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rename", abstract: "Rename a subject (its files stay where they are).")

    @Argument(help: "Current name.")
    var old: String

    @Argument(help: "New name.")
    var new: String

    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Subject.validate(name: new)
        guard let store = try global.openExistingStore() else { throw StoreError.unknownSubject(name: old) }
        let renamed = try store.renameSubject(old, to: new)
        print("Renamed \(old) to \(renamed.name).")
    }
}

struct SubjectDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete a subject with its photos, runs, checkpoints and generated images.",
        discussion: "Asks for confirmation on a terminal; elsewhere (scripts) it refuses unless --yes is given. Refused while `koalabooth train` is training the subject."
    )

    @Argument(help: "Subject name.")
    var name: String

    @Flag(name: [.short, .long], help: "Do not ask for confirmation.")
    var yes = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        guard let store = try global.openExistingStore() else { throw StoreError.unknownSubject(name: name) }
        let s = try store.requireSubject(named: name)
        if !yes {
            guard isatty(STDIN_FILENO) != 0 else {
                throw CLIError("refusing to delete \(s.name) without confirmation: input is not a terminal. Pass --yes to delete it from a script.")
            }
            let photos = try store.photos(subjectID: s.id!).count, runs = try store.runs(subjectID: s.id!).count
            let gens = try store.generations(subjectID: s.id!).count
            print("Delete \(s.name) with \(photos) photos, \(runs) runs and \(gens) generated images? This removes their files. [y/N] ", terminator: "")
            fflush(nil)
            let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
            guard answer == "y" || answer == "yes" else {
                print("Nothing deleted.")
                return
            }
        }
        try store.deleteSubject(named: s.name)
        print("Deleted \(s.name).")
    }
}
