import Foundation

/// Reading the Hugging Face `tokenizers` file (`tokenizer.json`), which transformers 5's
/// `CLIPTokenizer.save_pretrained` writes in place of `vocab.json` and `merges.txt`.
///
/// Used from it: `model.vocab` (token → id), `model.merges` in rank order (the string form
/// `"a b"` of tokenizers before 0.20 or the pair form `["a", "b"]` after), and
/// `added_tokens` (ids and `normalized` flags). The special tokens (`bos_token`, `pad_token`,
/// …) and `model_max_length` come from `tokenizer_config.json` beside it. The normaliser,
/// pre-tokeniser and post-processor entries are CLIP's in every CLIP folder and are
/// implemented by `CLIPTokenizer` itself; the model must be CLIP's BPE (`end_of_word_suffix`
/// `</w>`, no dropout).
extension CLIPTokenizer {
    enum TokenizerFile {
        static let fileName = "tokenizer.json"
    }

    init(tokenizerFile url: URL) throws {
        let directory = url.deletingLastPathComponent()
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        func corrupt(_ reason: String) -> CLIPTokenizerError { .corruptFile(url, reason: reason) }

        guard let root = try Self.readJSON(url, required: true) as? [String: Any] else {
            throw corrupt("expected a JSON object")
        }
        guard let model = root["model"] as? [String: Any] else { throw corrupt("it has no \"model\" object") }
        if let type = model["type"] as? String, type != "BPE" {
            throw corrupt("model.type is \(type.debugDescription), but CLIP's tokenizer is \"BPE\"")
        }
        if let suffix = model["end_of_word_suffix"] as? String, suffix != "</w>" {
            throw corrupt("model.end_of_word_suffix is \(suffix.debugDescription), but CLIP's BPE ends words with \"</w>\"")
        }
        if let dropout = model["dropout"], !(dropout is NSNull) {
            throw corrupt("model.dropout is \(dropout): BPE dropout samples different ids on each call, which KoalaBooth does not support; set it to null")
        }
        guard let vocabObject = model["vocab"] as? [String: Any] else {
            throw corrupt("model.vocab is missing or not an object mapping tokens to ids")
        }
        let vocab = try Self.vocabulary(vocabObject, url: url, what: "model.vocab token")
        guard let rawMerges = model["merges"] as? [Any] else { throw corrupt("model.merges is missing or not a list") }
        var pairs: [(left: String, right: String)] = []
        pairs.reserveCapacity(rawMerges.count)
        for (i, entry) in rawMerges.enumerated() {
            if let text = entry as? String {
                let parts = text.unicodeScalars.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw corrupt("model.merges[\(i)] \(text.debugDescription) is not two symbols separated by one space") }
                pairs.append((String(Substring(parts[0])), String(Substring(parts[1]))))
            } else if let pair = entry as? [Any], pair.count == 2, let left = pair[0] as? String, let right = pair[1] as? String {
                pairs.append((left, right))
            } else {
                throw corrupt("model.merges[\(i)] is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }
        let rules = MergeRules(pairs: pairs, url: url, location: { "model.merges[\($0)]" })

        // The file's added tokens are what its tokenizer holds, so they stand in for
        // tokenizer_config.json's `added_tokens_decoder` (same entries, same flags).
        var config = try Self.readJSONObject(configURL) ?? [:]
        if let raw = root["added_tokens"], !(raw is NSNull) {
            guard let list = raw as? [Any] else { throw corrupt("added_tokens is not a list") }
            var decoder: [String: Any] = [:]
            for (i, item) in list.enumerated() {
                guard let entry = item as? [String: Any], let id = entry["id"].flatMap(Self.intValue), id >= 0,
                      entry["content"] is String else {
                    throw corrupt("added_tokens[\(i)] needs a non-negative integer id and a content string")
                }
                decoder[String(id)] = entry
            }
            config["added_tokens_decoder"] = decoder
        }
        try self.init(vocab: vocab, merges: rules, config: config, specialMap: [:], configURL: configURL, vocabURL: url)
    }
}
