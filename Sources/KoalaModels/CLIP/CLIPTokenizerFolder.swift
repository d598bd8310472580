import Foundation
import KoalaTensor

extension CLIPTokenizer {
    // MARK: Loading

    /// Loads a tokenizer folder as transformers writes it: `tokenizer.json` (the Hugging
    /// Face `tokenizers` file transformers 5 saves, with the vocabulary, merges and added
    /// tokens) plus `tokenizer_config.json`, or the older `vocab.json` + `merges.txt` with
    /// optional `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json`.
    /// When a folder has both, `tokenizer.json` is read, as transformers does. Special and
    /// added tokens are resolved as transformers 5 resolves them; `model_max_length` is 77
    /// when absent.
    public init(directory: URL) throws {
        let tokenizerURL = directory.appendingPathComponent(TokenizerFile.fileName)
        if FileManager.default.fileExists(atPath: tokenizerURL.path) {
            try self.init(tokenizerFile: tokenizerURL)
            return
        }
        let vocabURL = directory.appendingPathComponent("vocab.json")
        let mergesURL = directory.appendingPathComponent("merges.txt")
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let mapURL = directory.appendingPathComponent("special_tokens_map.json")

        guard let vocabObject = try Self.readJSON(vocabURL, required: true) as? [String: Any] else {
            throw CLIPTokenizerError.corruptFile(vocabURL, reason: "expected a JSON object mapping tokens to ids")
        }
        let vocab = try Self.vocabulary(vocabObject, url: vocabURL, what: "token")
        let mergesText = try Self.readText(mergesURL)
        let config = try Self.readJSONObject(configURL) ?? [:]
        let specialMap = try Self.readJSONObject(mapURL) ?? [:]
        let addedURL = directory.appendingPathComponent("added_tokens.json")
        let addedTokens = try Self.readJSONObject(addedURL) ?? [:]
        try self.init(vocab: vocab, merges: try Self.mergeRules(mergesText, url: mergesURL), config: config,
                      specialMap: specialMap, addedTokens: addedTokens, configURL: configURL, addedTokensURL: addedURL)
    }

    /// The OpenAI CLIP vocabulary bundled with KoalaModels, configured like SDXL's
    /// `tokenizer` (`padToken` `<|endoftext|>`) or `tokenizer_2` (`padToken` `"!"`).
    public static func bundled(padToken: String = eosToken, maxLength: Int = defaultMaxLength) throws -> CLIPTokenizer {
        let (tokens, mergesText, mergesURL) = try bundledVocabulary()
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() { vocab[t] = i }
        let (config, map) = try sdxlConfigs(padToken: padToken, maxLength: maxLength, vocab: vocab)
        return try CLIPTokenizer(vocab: vocab, merges: try mergeRules(mergesText, url: mergesURL),
                                 config: config, specialMap: map, configURL: mergesURL)
    }

    /// Merge rules in rank order: each pair of symbols, and where it was read for errors.
    struct MergeRules {
        var pairs: [(left: String, right: String)]
        /// The file, and how to name entry `i` in it ("line 3", "model.merges[2]").
        var url: URL
        var location: (Int) -> String
    }

    /// The rules of a merges.txt text: one "left right" pair per line after the `#version` header.
    static func mergeRules(_ text: String, url: URL) throws -> MergeRules {
        var pairs: [(left: String, right: String)] = []
        var lineNumbers: [Int] = []
        pairs.reserveCapacity(50_000)
        lineNumbers.reserveCapacity(50_000)
        var lineNumber = 0
        for line in lines(text) {
            lineNumber += 1
            if line.isEmpty || line.hasPrefix("#version") { continue }
            let parts = line.unicodeScalars.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw CLIPTokenizerError.corruptFile(url, reason: "line \(lineNumber) is not two symbols separated by one space")
            }
            pairs.append((String(Substring(parts[0])), String(Substring(parts[1]))))
            lineNumbers.append(lineNumber)
        }
        return MergeRules(pairs: pairs, url: url, location: { "line \(lineNumbers[$0])" })
    }

    /// token → id from a JSON object (vocab.json, or `model.vocab` of tokenizer.json).
    static func vocabulary(_ object: [String: Any], url: URL, what: String) throws -> [String: Int] {
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(object.count)
        for (token, value) in object {
            guard let id = intValue(value), id >= 0 else {
                throw CLIPTokenizerError.corruptFile(url, reason: "the id of \(what) \(token.debugDescription) is not a non-negative integer")
            }
            vocab[token] = id
        }
        return vocab
    }

    init(vocab: [String: Int], merges rules: MergeRules, config: [String: Any],
         specialMap: [String: Any], addedTokens: [String: Any] = [:], configURL: URL, addedTokensURL: URL? = nil,
         vocabURL: URL? = nil) throws {
        let addedTokensURL = addedTokensURL ?? configURL
        let vocabURL = vocabURL ?? configURL.deletingLastPathComponent().appendingPathComponent("vocab.json")
        let vocabName = vocabURL.lastPathComponent
        vocabularySize = vocab.count

        // Merge ranks keyed by the pair of symbol ids; the merged symbol must be in the vocabulary.
        var merges: [UInt64: Merge] = [:]
        // Twice the rules: a half-full table keeps the BPE loop's lookups short.
        merges.reserveCapacity(2 * rules.pairs.count)
        for (rank, pair) in rules.pairs.enumerated() {
            guard let a = vocab[pair.left], let b = vocab[pair.right], let merged = vocab[pair.left + pair.right] else {
                throw CLIPTokenizerError.corruptFile(rules.url, reason: "\(rules.location(rank)) (\(pair.left) \(pair.right)) uses a symbol that the vocabulary lacks")
            }
            let key = Self.pairKey(Int32(a), Int32(b))
            if merges[key] == nil { merges[key] = Merge(rank: Int32(rank), id: Int32(merged)) }
        }
        self.merges = merges

        // Added tokens, resolved the way transformers 5 does: with `added_tokens_decoder` in
        // tokenizer_config.json that list is the source (special_tokens_map.json and
        // added_tokens.json are then not read) and a special token named there takes its
        // flags; without it, special_tokens_map.json overrides tokenizer_config.json and
        // added_tokens.json adds tokens (normalised unless special). Tokens are registered
        // in the order added tokens, bos, eos, unk, sep, pad, cls, mask, extra specials;
        // when one text appears twice, the last `normalized` flag wins.
        let decoderRaw = config["added_tokens_decoder"]
        let source = decoderRaw == nil ? config.merging(specialMap) { _, new in new } : config
        var declared: [(content: String, id: Int, normalized: Bool)] = []
        if let decoderRaw {
            guard let decoder = decoderRaw as? [String: Any] else {
                throw CLIPTokenizerError.corruptFile(configURL, reason: "added_tokens_decoder is not an object")
            }
            for (key, entry) in decoder {
                guard let id = Int(key), let entry = entry as? [String: Any], let content = entry["content"] as? String else {
                    throw CLIPTokenizerError.corruptFile(configURL, reason: "added_tokens_decoder entry \(key) needs an integer id and a content string")
                }
                try Self.checkSupported(entry, token: content, url: configURL)
                declared.append((content, id, (entry["normalized"] as? Bool) ?? false))
            }
        }

        func spec(_ key: String, default value: String?) throws -> (content: String, normalized: Bool)? {
            guard let raw = source[key] else { return value.map { ($0, false) } }
            if raw is NSNull { return nil }
            return try Self.tokenSpec(raw, key: key, url: configURL)
        }
        let keys: [(String, String?)] = [("bos_token", Self.bosToken), ("eos_token", Self.eosToken), ("unk_token", Self.eosToken),
                                         ("sep_token", nil), ("pad_token", Self.eosToken), ("cls_token", nil), ("mask_token", nil)]
        var specials: [String: (content: String, normalized: Bool)] = [:]
        var specialOrder: [(content: String, normalized: Bool)] = []
        for (key, value) in keys {
            guard let token = try spec(key, default: value) else { continue }
            specials[key] = token
            specialOrder.append(token)
        }
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            guard let list = source[key], !(list is NSNull) else { continue }
            guard let list = list as? [Any] else {
                throw CLIPTokenizerError.corruptFile(configURL, reason: "\(key) is not a list")
            }
            specialOrder += try list.map { try Self.tokenSpec($0, key: key, url: configURL) }
        }
        if decoderRaw == nil, !addedTokens.isEmpty {
            // transformers counts only specials written as plain strings here (it compares
            // against str() of the raw config values), so AddedToken objects stay normalised.
            let stringValued = (keys.map(\.0) + ["additional_special_tokens", "extra_special_tokens"]).flatMap { key -> [String] in
                if let s = source[key] as? String { return [s] }
                return (source[key] as? [Any])?.compactMap { $0 as? String } ?? []
            }
            let specialContents = Set(stringValued)
            for (content, value) in addedTokens {
                guard let id = Self.intValue(value) else {
                    throw CLIPTokenizerError.corruptFile(addedTokensURL, reason: "the id of \(content.debugDescription) is not an integer")
                }
                declared.append((content, id, !specialContents.contains(content)))
            }
        }
        declared.sort { $0.id < $1.id }
        // A special token that is also declared takes the declared flags.
        let declaredFlags = Dictionary(declared.map { ($0.content, $0.normalized) }, uniquingKeysWith: { _, last in last })
        specialOrder = specialOrder.map { ($0.content, declaredFlags[$0.content] ?? $0.normalized) }

        var added: [AddedToken] = []
        var index: [[Unicode.Scalar]: Int] = [:]
        func register(_ content: String, id: Int?, normalized: Bool) throws {
            let scalars = Array(content.unicodeScalars)
            if let i = index[scalars] { added[i].normalized = normalized; return }
            guard let id = id ?? vocab[content] else {
                throw CLIPTokenizerError.corruptFile(configURL, reason: "special token \(content.debugDescription) is not in \(vocabName)")
            }
            index[scalars] = added.count
            added.append(AddedToken(scalars: scalars, id: id, normalized: normalized))
        }
        for token in declared { try register(token.content, id: token.id, normalized: token.normalized) }
        for token in specialOrder { try register(token.content, id: nil, normalized: token.normalized) }

        func id(of key: String) throws -> Int {
            guard let token = specials[key], let i = index[Array(token.content.unicodeScalars)] else {
                throw CLIPTokenizerError.corruptFile(configURL, reason: "\(key) is null; CLIP needs it")
            }
            return added[i].id
        }
        bosTokenID = try id(of: "bos_token")
        eosTokenID = try id(of: "eos_token")
        padTokenID = try id(of: "pad_token")
        unknownTokenID = try? id(of: "unk_token")
        rawAdded = added.filter { !$0.normalized }
        // Normalised added tokens are matched in normalised text, so their content is normalised too.
        normalizedAdded = added.filter(\.normalized).map {
            AddedToken(scalars: Self.normalize($0.scalars[...]), id: $0.id, normalized: true)
        }

        // model_max_length; transformers' "unbounded" default makes no sense for CLIP.
        if let raw = config["model_max_length"] {
            guard let value = (raw as? NSNumber)?.doubleValue, value >= 2, value <= 4096, value == value.rounded() else {
                throw CLIPTokenizerError.corruptFile(configURL, reason: "model_max_length \(raw) is not a CLIP context length (77)")
            }
            maxLength = Int(value)
        } else {
            maxLength = Self.defaultMaxLength
        }

        var byteIDs = [Int32](repeating: -1, count: 256), byteEndIDs = [Int32](repeating: -1, count: 256)
        for (b, symbol) in Self.byteSymbols.enumerated() {
            for (table, token) in [(0, symbol), (1, symbol + "</w>")] {
                guard let id = vocab[token] ?? unknownTokenID else {
                    throw CLIPTokenizerError.corruptFile(vocabURL, reason: "byte symbol \(token.debugDescription) is missing and there is no unk_token")
                }
                if table == 0 { byteIDs[b] = Int32(id) } else { byteEndIDs[b] = Int32(id) }
            }
        }
        self.byteIDs = byteIDs
        self.byteEndIDs = byteEndIDs
    }

    // MARK: File helpers

    private static func readData(_ url: URL, required: Bool) throws -> Data? {
        guard FileManager.default.fileExists(atPath: url.path) else {
            if required { throw CLIPTokenizerError.missingFile(url) }
            return nil
        }
        do { return try BoundedFile.read(url.path, limit: BoundedFile.textLimit) } catch {
            throw CLIPTokenizerError.unreadableFile(url, reason: error.localizedDescription)
        }
    }

    static func readJSON(_ url: URL, required: Bool) throws -> Any? {
        guard let data = try readData(url, required: required) else { return nil }
        do { return try JSONSerialization.jsonObject(with: data) } catch {
            throw CLIPTokenizerError.corruptFile(url, reason: "not valid JSON")
        }
    }

    /// An optional JSON file holding an object.
    static func readJSONObject(_ url: URL) throws -> [String: Any]? {
        guard let any = try readJSON(url, required: false) else { return nil }
        guard let object = any as? [String: Any] else {
            throw CLIPTokenizerError.corruptFile(url, reason: "expected a JSON object")
        }
        return object
    }

    /// Lines split on "\n" by scalar ("\r\n" is one Character), without a trailing "\r".
    static func lines(_ text: String) -> [Substring] {
        text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            let line = Substring(line)
            return line.unicodeScalars.last == "\r" ? Substring(line.unicodeScalars.dropLast()) : line
        }
    }

    private static func readText(_ url: URL) throws -> String {
        guard let data = try readData(url, required: true) else { throw CLIPTokenizerError.missingFile(url) }
        guard let text = String(data: data, encoding: .utf8) else {
            throw CLIPTokenizerError.corruptFile(url, reason: "not UTF-8 text")
        }
        return text
    }

    static func intValue(_ value: Any) -> Int? {
        guard let n = value as? NSNumber else { return nil }
        let d = n.doubleValue
        return d == d.rounded() && abs(d) < 1e15 ? Int(d) : nil
    }

    /// A special-token entry: a string, or an AddedToken object with `content`.
    private static func tokenSpec(_ raw: Any, key: String, url: URL) throws -> (content: String, normalized: Bool) {
        if let s = raw as? String { return (s, false) }
        if let object = raw as? [String: Any], let content = object["content"] as? String {
            try checkSupported(object, token: content, url: url)
            return (content, (object["normalized"] as? Bool) ?? false)
        }
        throw CLIPTokenizerError.corruptFile(url, reason: "\(key) is neither a string nor an object with \"content\"")
    }

    static func checkSupported(_ entry: [String: Any], token: String, url: URL) throws {
        for flag in ["lstrip", "rstrip", "single_word"] where (entry[flag] as? Bool) == true {
            throw CLIPTokenizerError.corruptFile(url, reason: "added token \(token.debugDescription) sets \(flag), which KoalaBooth does not support (CLIP folders never do)")
        }
    }
}
