import ArgumentParser
import Foundation
import KoalaApp
import KoalaDiffusion
import KoalaModels
import KoalaServer
import KoalaStore
import KoalaTraining

/// The CLI's wording of the library errors: the library says what is wrong, this adds
/// which flag or command fixes it. Errors of other types keep their own description.
enum ErrorWording {
    /// `error` as the CLI reports it: a `CLIError` with the CLI's text for a library error
    /// it words, else `error` itself (ArgumentParser's own errors and exit codes included).
    static func cli(_ error: Error) -> Error {
        switch error {
        case let e as StoreError: return CLIError(text(e))
        case let e as SubjectError: return CLIError(text(e))
        case let e as GenerationRequestError: return CLIError(text(e))
        case let e as DoctorError: return CLIError(text(e))
        case let e as ModelFolderError: return CLIError(text(e))
        case let e as DistillationError: return CLIError(text(e))
        case let e as ServeError: return CLIError(ServeCommand.text(e))
        case RecipeError.override(let key, let inner): return CLIError("\(RecipeOverrideOptions.flag(overriding: key)): \(inner)")
        default: return error
        }
    }

    static func text(_ e: ModelFolderError) -> String {
        switch e.problem {
        case .folderMissing:
            return "\(e) Point --model at a diffusers folder (the one holding model_index.json), or make a tiny test model with `koalabooth model init --preset tiny --out DIR`."
        case .notAPipelineFolder: return "\(e) Point --model at the folder that holds model_index.json."
        case .outputExists: return "\(e) (the --out folder)."
        case .other: return e.description
        }
    }

    static func text(_ e: StoreError) -> String {
        switch e {
        case .homeNotADirectory(let path):
            return "data directory \(path) is a file, not a directory. Point --home (or KOALABOOTH_HOME) at a directory."
        case .homeNotWritable(let path, let reason):
            return "data directory \(path) is not writable (\(reason)). Use a writable location with --home or KOALABOOTH_HOME, or fix its permissions."
        case .databaseTooNew(let path, let version, let supported):
            return "\(path) was written by a newer KoalaBooth (database schema \(version); this version understands up to \(supported)). Upgrade KoalaBooth, or use another data directory with --home."
        case .databaseUnreadable(let path, let reason):
            return "\(path) cannot be opened as a KoalaBooth database (\(reason)). Run `koalabooth doctor`; if the file is damaged, restore it from a backup or move the data directory aside."
        case .databaseMissing(let path, let empty, let n):
            let home = (path as NSString).deletingLastPathComponent
            return "\(path) is \(empty ? "empty (0 bytes)" : "missing"), but \(home)/subjects holds the files of \(n) subject\(n == 1 ? "" : "s"): KoalaBooth will not start a new database over them. Restore \(path) from a backup (with its -wal file, if there is one), or point --home / KOALABOOTH_HOME at another directory to start afresh."
        case .notKoalaBoothDatabase(let path, let reason):
            return "\(path) is not a KoalaBooth database (\(reason)); it was left unchanged. If it should be KoalaBooth's, restore it from a backup; otherwise point --home / KOALABOOTH_HOME at a KoalaBooth data directory or a new one."
        case .diskFull(let path, let available):
            return "the disk holding the data directory \(path) is full\(StoreError.free(available)), so the change could not be saved; nothing was changed. Free some space on it (`df -h \(path)` shows the disk; `koalabooth doctor` lists leftover files, and `checkpoint.keep_last` in a recipe limits how many checkpoints a run keeps), then run the command again."
        case .readOnly(let path):
            return "the data directory \(path) is read-only, so this command cannot change it (`subject list`, `subject show`, `runs list` and `doctor` still work). Make it writable, or copy it to a writable place and point --home / KOALABOOTH_HOME there."
        case .unknownSubject(let name):
            return "no subject named \(name); `koalabooth subject list` shows the names."
        case .duplicateName(let name):
            return "a subject named \(name) already exists (names are compared ignoring case). Choose another name, or `koalabooth subject add-photos \(name) ...` to add to it."
        case .invalidClassNoun(let classNoun, let reason):
            return "invalid class noun '\(classNoun)': \(reason). Use what the subject is, in a word or two (for example --class dog)."
        case .unknownRun(let id):
            return "no training run with id \(id); `koalabooth runs list` shows the runs."
        case .photoNotFound(let subject, let query):
            return "subject \(subject) has no photo matching '\(query)'; `koalabooth subject show \(subject)` lists its photos with their hashes and file names."
        case .subjectBusy(let name, let attempted, let pid, let runID):
            return "cannot \(attempted) \(name): it is being trained by \(StoreError.trainer(pid: pid, runID: runID)). Wait for the run to finish, or stop it (\(StoreError.stop(pid: pid)); it saves a checkpoint, and `koalabooth train \(name) --resume` continues it later)."
        case .invalidName, .invalidToken, .ambiguousPhoto, .fileUnreadable, .fileOperationFailed, .outsideHome:
            return e.description
        }
    }

    static func text(_ e: SubjectError) -> String {
        switch e {
        case .tokenInClassNoun(let token, let classNoun):
            return "the token '\(token)' is part of the class noun '\(classNoun)': prompts would read \"\(token) \(classNoun)\" and the token could not mean this particular \(classNoun). Choose a rare word as --token (the default 'sks' works)."
        case .commonWordToken(let token):
            return "the token '\(token)' is a common English word; the model already has a meaning for it, and training would fight that and change every prompt using it. Choose a rare word as --token (the default 'sks' works), or pass --force to use '\(token)' anyway."
        case .removalBelowMinimum(let subject, let remaining):
            return "removing it would leave \(subject) with \(remaining) photo\(remaining == 1 ? "" : "s"), fewer than the \(PhotoLimits.minimum) training needs. Add photos first (`koalabooth subject add-photos \(subject) ...`), or pass --force."
        case .tooFewPhotos, .tooFewDistinctPhotos, .unusablePhotos:
            return e.description
        }
    }

    static func flag(_ field: GenerationRequest.Field) -> String {
        switch field {
        case .guidance: return "--guidance"
        case .guidanceRescale: return "--guidance-rescale"
        case .loraScale: return "--lora-scale"
        case .width: return "--width"
        case .height: return "--height"
        }
    }

    static func text(_ e: GenerationRequestError) -> String {
        switch e {
        case .notFinite(let field, let value): return "\(flag(field)) must be a finite number, got \(value)"
        case .karrasWithDDIM: return "--karras does not apply to ddim (DDIM steps through the training timesteps); use it with dpm-solver++ or euler"
        case .tooFewSteps: return "--steps must be at least 1"
        case .tooFewImages: return "--count must be at least 1"
        case .tooManyImages(let n): return "--count \(n) is over the limit of \(GenerationLimits.maxCount) images per command; run generate several times (with different --seed) for more"
        case .guidanceRescaleOutOfRange: return "--guidance-rescale must be between 0 and 1"
        case .loraScaleWithoutLoRA: return "--lora-scale needs --lora FILE or --subject"
        case .noModel: return "give --model DIR (or --subject NAME to use a trained subject)"
        case .runWithoutSubject: return "--run needs --subject"
        case .loraWithSubject: return "--lora and --subject cannot be combined: a subject brings its own weights"
        case .jpegQualityOutOfRange: return "--jpeg-quality must be between 1 and 100"
        case .sideNotMultipleOf8(let field, let v): return "\(flag(field)) must be a positive multiple of 8, got \(v) (try \(max(8, v / 8 * 8)))"
        case .sideOverLimit(let field, let v): return "\(flag(field)) \(v) is over the limit of \(GenerationLimits.maxSide) pixels (SDXL-family models draw 1024 natively)"
        case .noDataDirectory(let subject, let home): return "no subject named \(subject): the data directory \(home) has no database yet; create one with `koalabooth subject create`"
        case .unknownRun(let subject, let runID): return "subject \(subject) has no training run \(runID); `koalabooth runs list --subject \(subject)` shows its runs"
        case .noFinishedCheckpoint(let subject): return "subject \(subject) has no finished training run with a checkpoint; train it first (`koalabooth train \(subject) …`), or pick a run with --run"
        case .checkpointMissing(let path): return "checkpoint \(path) is missing; `koalabooth doctor` checks the data directory"
        case .modelMissing(let path): return "model folder \(path) does not exist; pass a diffusers folder, or make a test one with `koalabooth model init --preset tiny --out DIR`"
        case .loraMissing(let path): return "--lora \(path) does not exist"
        case .notEnoughDiskSpace(let count, let width, let height, let bytes, let folder, let free):
            return "\(GenerationRequestError.images(count, width, height)) can take up to \(GenerationRequestError.gib(bytes)), but \(folder) has \(GenerationRequestError.gib(free)) free; draw fewer images (--count) or write them elsewhere (--output)"
        case .latentsMissing(let path): return "--latents \(path) does not exist"
        case .latentsUnreadable(let path, let reason): return "--latents \(path) is not a readable safetensors file: \(reason)"
        case .latentsTensorMissing(let path, let found): return "--latents \(path) has no tensor named 'latents' (found: \(found.joined(separator: ", ")))"
        case .latentsShape(let path, let found, let expected):
            let fmt = { (s: [Int]) in s.map(String.init).joined(separator: "x") }
            return "--latents \(path) holds \(fmt(found)) latents, but this size and --count need \(fmt(expected)) (batch x 4 x height/8 x width/8)"
        case .latentsNotFinite(let path, let value, let index): return "--latents \(path) holds \(value) at element \(index): starting latents must be finite numbers (NaN or infinity would draw a black picture)"
        case .runHasNoCheckpoint, .checkpointMismatch, .noOutput, .outputFolderMissing:
            return e.description
        }
    }

    static func text(_ e: DistillationError) -> String {
        switch e {
        case .outputExists(let path): "--out \(path) already exists; choose a new folder or remove it"
        case .nothingToResume(let dir): "\(dir) holds no distillation run to resume; start one without --resume"
        case .runExists(let dir): "\(dir) holds a started distillation run: continue it with --resume, or remove the folder to start over"
        case .teacherMissing(let path): "--teacher \(path) is not a diffusers pipeline folder (no model_index.json)"
        case .holdoutTooLarge(let n, let images): "--holdout \(n) leaves none of the \(images) images to train on; hold out fewer"
        }
    }

    static func text(_ e: DoctorError) -> String {
        switch e {
        case .noDataDirectory:
            return "\(e.description). Check --home / KOALABOOTH_HOME; `koalabooth subject create` makes one."
        }
    }
}
