import Foundation

/// Problems loading or writing a CLIP tokenizer folder.
public enum CLIPTokenizerError: Error, CustomStringConvertible, Equatable {
    case missingFile(URL)
    case unreadableFile(URL, reason: String)
    case corruptFile(URL, reason: String)
    case missingResource(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .missingFile(let url):
            return "CLIP tokenizer: \(url.path) does not exist. A tokenizer folder needs tokenizer.json (as transformers 5 "
                + "saves it) or vocab.json and merges.txt (diffusers layout: <pipeline>/tokenizer and <pipeline>/tokenizer_2); check the path."
        case .unreadableFile(let url, let reason):
            return "CLIP tokenizer: cannot read \(url.path): \(reason)"
        case .corruptFile(let url, let reason):
            return "CLIP tokenizer: \(url.path) is corrupt: \(reason). Replace it with the file from the original model."
        case .missingResource(let name):
            return "CLIP tokenizer: the bundled resource \(name) is missing from the KoalaModels resources; reinstall."
        case .invalidArgument(let reason):
            return "CLIP tokenizer: \(reason)"
        }
    }
}
