import ArgumentParser
import Foundation
import KoalaApp
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

/// A subject use case's notice, as the CLI prints it (stderr; stdout stays clean for `--json`).
func printNotice(_ notice: SubjectNotice) {
    switch notice {
    case .commonWordToken(let token):
        Output.warn("using the common word '\(token)' as token (--force).")
    case .manyPhotos(let distinct):
        Output.warn("\(distinct) photos: more than \(PhotoLimits.recommendedMaximum) rarely helps DreamBooth and makes training slower; consider picking the best \(PhotoLimits.recommendedMaximum).")
    case .skippedCopy(let source, let sameAs):
        Output.note("skipped \(source): same picture as \(sameAs)")
    case .skippedKnownPhoto(let subject, let source, let sameAs):
        Output.note("skipped \(source): \(subject) already has this picture (\(sameAs))")
    case .subjectHasManyPhotos(let subject, let total):
        Output.warn("\(subject) now has \(total) photos: more than \(PhotoLimits.recommendedMaximum) rarely helps DreamBooth and makes training slower.")
    }
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
        var new = SubjectUseCases.NewSubject(name: name, classNoun: classNoun, photoPaths: photos)
        new.token = token
        new.notes = notes
        new.minimumSide = minimumSide
        new.allowCommonWord = force
        let created = try SubjectUseCases(location: global.location).create(new, notify: printNotice)
        if json {
            try Output.json(created.detail)
            return
        }
        print("Created subject \(created.subject.name) (\"\(created.subject.instancePhrase)\") with \(created.photos.count) photos in \(created.home.path).")
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
        let result = try SubjectUseCases(location: global.location).addPhotos(photos, to: name, minimumSide: minimumSide, notify: printNotice)
        if json { return try Output.json(result.added) }
        print("Added \(result.added.count) photo\(result.added.count == 1 ? "" : "s") to \(result.subject.name) (\(result.total) in all).")
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
        let removed = try SubjectUseCases(location: global.location).removePhoto(of: name, matching: photo, allowBelowMinimum: force)
        let (target, remaining) = (removed.photo, removed.remaining)
        print("Removed \(target.originalName) (\(target.sha256.prefix(12))) from \(removed.subject.name); \(remaining) photo\(remaining == 1 ? "" : "s") left.")
    }
}

struct SubjectList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the subjects.")

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let summaries = try SubjectUseCases(location: global.location).list()
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
        let (detail, directory) = try SubjectUseCases(location: global.location).show(name, generations: generations)
        let s = detail.subject
        if json { return try Output.json(detail) }
        print("\(s.name): \"\(s.instancePhrase)\" (token \(s.token), class \(s.classNoun))")
        if !s.notes.isEmpty { print("notes: \(s.notes)") }
        print("created \(Output.date(s.createdAt)), updated \(Output.date(s.updatedAt)); files in \(directory.path)")
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
        let renamed = try SubjectUseCases(location: global.location).rename(old, to: new)
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
        let subjects = SubjectUseCases(location: global.location)
        if !yes {
            let preview = try subjects.deletionPreview(name)
            guard isatty(STDIN_FILENO) != 0 else {
                throw CLIError("refusing to delete \(preview.subject.name) without confirmation: input is not a terminal. Pass --yes to delete it from a script.")
            }
            print("Delete \(preview.subject.name) with \(preview.photos) photos, \(preview.runs) runs and \(preview.generations) generated images? This removes their files. [y/N] ", terminator: "")
            fflush(nil)
            let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
            guard answer == "y" || answer == "yes" else {
                print("Nothing deleted.")
                return
            }
        }
        let deleted = try subjects.delete(name)
        print("Deleted \(deleted.name).")
    }
}
