/// Why a training run cannot start. The texts say what is wrong; the caller (CLI flag,
/// service field) says how to fix it.
public enum TrainingRunError: Error, Equatable, CustomStringConvertible {
    /// A resume was asked for, but every run of the subject finished (or it has none).
    case nothingToResume(subject: String)
    /// The subject has no photos to train on.
    case noPhotos(subject: String)
    /// The base model path is missing or not a folder.
    case modelFolderMissing(path: String)
    /// The base model folder has no `model_index.json`.
    case notADiffusersFolder(path: String)

    public var description: String {
        switch self {
        case .nothingToResume(let s): "subject \(s) has no unfinished training run to resume"
        case .noPhotos(let s): "subject \(s) has no photos"
        case .modelFolderMissing(let p): "the base model \(p) is not a folder"
        case .notADiffusersFolder(let p): "the base model \(p) has no model_index.json: it is not a diffusers model folder"
        }
    }
}
