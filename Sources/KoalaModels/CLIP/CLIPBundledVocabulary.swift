import Foundation

extension CLIPTokenizer {
    /// The bundled merges file (merges.txt layout) and the vocabulary CLIP derives from it.
    static func bundledVocabulary() throws -> (tokens: [String], mergesText: String, url: URL) {
        guard let url = Bundle.module.url(forResource: "clip-merges", withExtension: "txt", subdirectory: "Resources")
            ?? Bundle.module.url(forResource: "clip-merges", withExtension: "txt") else {
            throw CLIPTokenizerError.missingResource("Resources/clip-merges.txt")
        }
        let text = try readBundledText(url)
        var tokens = byteSymbolsInVocabOrder + byteSymbolsInVocabOrder.map { $0 + "</w>" }
        tokens.reserveCapacity(49_408)
        for line in lines(text) where !line.isEmpty && !line.hasPrefix("#version") {
            var token = String.UnicodeScalarView()
            token.append(contentsOf: line.unicodeScalars.lazy.filter { $0 != " " })
            tokens.append(String(token))
        }
        tokens += [bosToken, eosToken]
        return (tokens, text, url)
    }

    private static func readBundledText(_ url: URL) throws -> String {
        guard let data = try? Data(contentsOf: url), let text = String(data: data, encoding: .utf8) else {
            throw CLIPTokenizerError.missingResource(url.lastPathComponent)
        }
        return text
    }

    /// tokenizer_config.json and special_tokens_map.json in the layout of the SDXL folders.
    static func sdxlConfigs(padToken: String, maxLength: Int, vocab: [String: Int]) throws -> ([String: Any], [String: Any]) {
        guard let padID = vocab[padToken] else {
            throw CLIPTokenizerError.invalidArgument("pad token \(padToken.debugDescription) is not in the CLIP vocabulary; use \"<|endoftext|>\" (tokenizer) or \"!\" (tokenizer_2)")
        }
        guard maxLength >= 2 else { throw CLIPTokenizerError.invalidArgument("maxLength \(maxLength) leaves no room for BOS and EOS") }
        func entry(_ content: String, normalized: Bool, special: Bool) -> [String: Any] {
            ["content": content, "lstrip": false, "normalized": normalized, "rstrip": false, "single_word": false, "special": special]
        }
        var decoder: [String: Any] = [
            String(vocab[bosToken]!): entry(bosToken, normalized: true, special: false),
            String(vocab[eosToken]!): entry(eosToken, normalized: false, special: false),
        ]
        if padToken != bosToken && padToken != eosToken {
            decoder[String(padID)] = entry(padToken, normalized: false, special: true)
        }
        let config: [String: Any] = [
            "add_prefix_space": false, "added_tokens_decoder": decoder,
            "bos_token": bosToken, "clean_up_tokenization_spaces": true, "do_lower_case": true,
            "eos_token": eosToken, "errors": "replace", "model_max_length": maxLength, "pad_token": padToken,
            "tokenizer_class": "CLIPTokenizer", "unk_token": eosToken,
        ]
        let map: [String: Any] = ["bos_token": bosToken, "eos_token": eosToken, "pad_token": padToken, "unk_token": eosToken]
        return (config, map)
    }

    /// Writes a tokenizer folder with the bundled OpenAI CLIP vocabulary — `vocab.json`,
    /// `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`, as the SDXL
    /// pipeline folders carry them — that transformers' `CLIPTokenizer.from_pretrained`
    /// and `CLIPTokenizer(directory:)` load. SDXL uses `padToken` `"<|endoftext|>"` for
    /// `tokenizer/` and `"!"` for `tokenizer_2/`.
    public static func writeVocabulary(to directory: URL, padToken: String, maxLength: Int = defaultMaxLength) throws {
        let (tokens, mergesText, _) = try bundledVocabulary()
        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { vocab[t] = i }
        let (config, map) = try sdxlConfigs(padToken: padToken, maxLength: maxLength, vocab: vocab)

        do {
            // vocab.json in id order like the published files (an encoded dictionary comes out
            // in hash order, which differs from run to run): one token at a time.
            let encoder = JSONEncoder()
            encoder.outputFormatting = .withoutEscapingSlashes
            var json = Data("{".utf8)
            json.reserveCapacity(1 << 20)
            for (i, token) in tokens.enumerated() {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                json.append(try encoder.encode(token))
                json.append(contentsOf: Array(":\(i)".utf8))
            }
            json.append(UInt8(ascii: "}"))
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try json.write(to: directory.appendingPathComponent("vocab.json"), options: .atomic)
            try Data(mergesText.utf8).write(to: directory.appendingPathComponent("merges.txt"), options: .atomic)
            for (name, object) in [("tokenizer_config.json", config), ("special_tokens_map.json", map)] {
                var data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                data.append(0x0A)
                try data.write(to: directory.appendingPathComponent(name), options: .atomic)
            }
        } catch {
            throw CLIPTokenizerError.invalidArgument("cannot write the tokenizer folder \(directory.path): \(error.localizedDescription)")
        }
    }
}
