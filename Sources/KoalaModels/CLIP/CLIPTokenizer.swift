import Foundation
import KoalaTensor

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

/// The CLIP byte-level BPE tokenizer, giving the same ids as transformers' `CLIPTokenizer`
/// (transformers 5, tokenizers-backed) for the SDXL `tokenizer` and `tokenizer_2` folders.
///
/// Pipeline, in the reference's order:
/// 1. Added tokens with `normalized: false` (by default BOS, EOS, UNK and PAD — so SDXL's
///    `tokenizer_2`, whose pad token is `"!"`, turns every `!` into its own id 0) are cut out
///    of the raw text.
/// 2. The rest is normalised: NFC, every run of Unicode white space becomes one space,
///    scalar-wise lower-casing. Added tokens with `normalized: true` are cut out next.
/// 3. Pre-tokenisation keeps `<|startoftext|>`, `<|endoftext|>`, the contractions
///    `'s 't 're 've 'm 'll 'd`, letter runs, single digits and runs of other non-space
///    symbols; white space is dropped.
/// 4. Each piece's UTF-8 bytes are mapped to byte symbols, the last one suffixed `</w>`,
///    and merged by merge rank.
public struct CLIPTokenizer: Sendable {
    /// Context length of every CLIP text encoder.
    public static let defaultMaxLength = 77
    public static let bosToken = "<|startoftext|>"
    public static let eosToken = "<|endoftext|>"

    /// Length of `tokenize(_:)`'s output (`model_max_length`).
    public let maxLength: Int
    public let bosTokenID: Int
    public let eosTokenID: Int
    public let padTokenID: Int
    public let unknownTokenID: Int?
    /// Number of entries in the vocabulary (49408 for CLIP).
    public let vocabularySize: Int

    struct Merge { var rank: Int32; var id: Int32 }
    private struct AddedToken { var scalars: [Unicode.Scalar]; var id: Int; var normalized: Bool }

    private let merges: [UInt64: Merge]
    private let byteIDs: [Int32]      // byte -> id of its symbol inside a word
    private let byteEndIDs: [Int32]   // byte -> id of its symbol + "</w>" at the end of a word
    private let rawAdded: [AddedToken]
    private let normalizedAdded: [AddedToken]
    private let cache = BPECache()

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

    // MARK: Encoding

    /// BPE ids of `text`, without BOS/EOS, padding or truncation.
    public func encode(_ text: String) -> [Int] { encode(text, limit: .max) }

    /// The ids of `encode(text)` up to at least its first `limit` (more when the piece that
    /// reaches `limit` has more). Pieces are encoded in order and each one's ids depend only
    /// on the piece, so stopping there leaves the first `limit` ids as they are: a truncated
    /// result costs the text it uses, not the whole text.
    func encode(_ text: String, limit: Int) -> [Int] {
        var ids: [Int] = []
        let scalars = Array(text.unicodeScalars)
        Self.split(scalars[...], on: rawAdded) { segment in
            switch segment {
            case .token(let id): ids.append(id)
            case .text(let raw):
                let normalized = Self.normalize(raw)
                Self.split(normalized[...], on: normalizedAdded) { inner in
                    switch inner {
                    case .token(let id): ids.append(id)
                    case .text(let text):
                        Self.preTokenize(text) { piece in
                            appendBPE(piece, to: &ids)
                            return ids.count < limit
                        }
                    }
                    return ids.count < limit
                }
            }
            return ids.count < limit
        }
        return ids
    }

    /// The `maxLength` ids the SDXL pipeline feeds a text encoder: BOS, the first
    /// `maxLength - 2` BPE ids, EOS, then the pad id (transformers' `padding="max_length",
    /// truncation=True`).
    public func tokenize(_ text: String) -> [Int] {
        let body = encode(text, limit: maxLength - 2).prefix(maxLength - 2)
        var ids = [bosTokenID]
        ids.reserveCapacity(maxLength)
        ids += body
        ids.append(eosTokenID)
        ids += repeatElement(padTokenID, count: maxLength - ids.count)
        return ids
    }

    /// Same as `tokenize(_:)`.
    public func callAsFunction(_ text: String) -> [Int] { tokenize(text) }

    /// Words up to this many bytes are cached (tokenizers' `MAX_LENGTH`): prompts repeat
    /// short words, and a cache of long ones would only hold memory.
    private static let cachedWordBytes = 256

    private func appendBPE(_ piece: ArraySlice<Unicode.Scalar>, to ids: inout [Int]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(piece.count)
        for s in piece { bytes.append(contentsOf: UTF8.encode(s)!) }
        let cacheable = bytes.count <= Self.cachedWordBytes
        if cacheable, let cached = cache.get(bytes) { ids += cached.lazy.map { Int($0) }; return }
        let symbols = bpe(bytes)
        if cacheable { cache.set(bytes, symbols) }
        ids += symbols.lazy.map { Int($0) }
    }

    /// Merges a word's byte symbols, lowest rank first and leftmost on ties, one merge at a
    /// time (as tokenizers' `Word::merge_all`). The candidate pairs sit in a min-heap keyed
    /// by (rank, first position) and symbols in a linked list, so a word of n bytes costs
    /// O(n log n), not the O(n²) of rescanning it after every merge; a heap entry whose
    /// pair has since changed is skipped when it comes up.
    private func bpe(_ bytes: [UInt8]) -> [Int32] {
        var work = 0
        return bpe(bytes, work: &work)
    }

    /// `bpe(_:)`, counting in `work` the heap entries it takes out: at most the n − 1
    /// first candidates plus two per merge, so below 3n for any word (the tests hold it to that).
    func bpe(_ bytes: [UInt8], work: inout Int) -> [Int32] {
        let n = bytes.count
        var ids = bytes.indices.map { $0 == n - 1 ? byteEndIDs[Int(bytes[$0])] : byteIDs[Int(bytes[$0])] }
        guard n > 1 else { return ids }
        // next[i] == n: i is the last symbol; alive[i] false: merged into its left neighbour.
        var next = Array(1...n), prev = Array(-1..<(n - 1))
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        func candidate(_ i: Int) {
            let j = next[i]
            guard j < n, let m = merges[Self.pairKey(ids[i], ids[j])] else { return }
            heap.push(UInt64(UInt32(m.rank)) << 32 | UInt64(i))
        }
        for i in 0..<(n - 1) { candidate(i) }
        while let top = heap.pop() {
            work += 1
            let i = Int(top & 0xFFFF_FFFF), rank = Int32(top >> 32)
            guard alive[i], next[i] < n, let m = merges[Self.pairKey(ids[i], ids[next[i]])], m.rank == rank else { continue }
            let j = next[i]
            ids[i] = m.id
            alive[j] = false
            next[i] = next[j]
            if next[j] < n { prev[next[j]] = i }
            if prev[i] >= 0 { candidate(prev[i]) }
            candidate(i)
        }
        var out: [Int32] = []
        var i = 0
        while i < n { out.append(ids[i]); i = next[i] }
        return out
    }

    private static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

    // MARK: Text processing

    private enum Segment { case text(ArraySlice<Unicode.Scalar>), token(Int) }

    /// Cuts added tokens out of `text`, leftmost match first, longest on ties; stops when
    /// `body` returns false.
    private static func split(_ text: ArraySlice<Unicode.Scalar>, on tokens: [AddedToken], _ body: (Segment) -> Bool) {
        guard !tokens.isEmpty else { if !text.isEmpty { _ = body(.text(text)) }; return }
        var start = text.startIndex, i = text.startIndex
        while i < text.endIndex {
            var match: AddedToken?
            for t in tokens where !t.scalars.isEmpty && t.scalars.count > (match?.scalars.count ?? 0)
                && text.endIndex - i >= t.scalars.count && text[i..<(i + t.scalars.count)].elementsEqual(t.scalars) {
                match = t
            }
            if let match {
                if start < i, !body(.text(text[start..<i])) { return }
                if !body(.token(match.id)) { return }
                i += match.scalars.count
                start = i
            } else {
                i += 1
            }
        }
        if start < text.endIndex { _ = body(.text(text[start..<text.endIndex])) }
    }

    /// NFC, white-space runs to one space, scalar-wise lower-casing (Rust's `char::to_lowercase`).
    static func normalize(_ text: ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar] {
        var composed: [Unicode.Scalar]
        // Scalars below U+0300 are all NFC-stable and never compose with each other.
        if text.allSatisfy({ $0.value < 0x300 }) {
            composed = Array(text)
        } else {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: text)
            composed = Array(String(view).precomposedStringWithCanonicalMapping.unicodeScalars)
        }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(composed.count)
        var inSpace = false
        for s in composed {
            if isSpace(s) {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            if s.isASCII {
                out.append(s.value >= 65 && s.value <= 90 ? Unicode.Scalar(s.value + 32)! : s)
            } else {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return out
    }

    /// CLIP's split: `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`
    /// (matches kept, the rest dropped), each match then split again by the byte-level
    /// pre-tokeniser's GPT-2 pattern, which only changes the two literal special tokens.
    /// Stops when `body` returns false.
    static func preTokenize(_ text: ArraySlice<Unicode.Scalar>, _ body: (ArraySlice<Unicode.Scalar>) -> Bool) {
        let end = text.endIndex
        var i = text.startIndex
        while i < end {
            let s = text[i]
            if s == "<", let n = [bosLiteral, eosLiteral].first(where: { text[i...].starts(with: $0) })?.count {
                if !gpt2Split(text[i..<(i + n)], body) { return }
                i += n
            } else if s == "'", let n = contractionLength(text[i...]) {
                if !body(text[i..<(i + n)]) { return }
                i += n
            } else if isLetter(s) {
                var j = i + 1
                while j < end && isLetter(text[j]) { j += 1 }
                if !body(text[i..<j]) { return }
                i = j
            } else if isNumber(s) {
                if !body(text[i...i]) { return }
                i += 1
            } else if isSpace(s) {
                i += 1
            } else {
                var j = i + 1
                while j < end && isSymbol(text[j]) { j += 1 }
                if !body(text[i..<j]) { return }
                i = j
            }
        }
    }

    /// GPT-2's `'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+` on text without spaces.
    /// Returns false when `body` did (stop).
    private static func gpt2Split(_ text: ArraySlice<Unicode.Scalar>, _ body: (ArraySlice<Unicode.Scalar>) -> Bool) -> Bool {
        var i = text.startIndex
        while i < text.endIndex {
            if text[i] == "'", let n = contractionLength(text[i...]) {
                if !body(text[i..<(i + n)]) { return false }
                i += n
                continue
            }
            let kind = scalarClass(text[i])
            var j = i + 1
            while j < text.endIndex && scalarClass(text[j]) == kind { j += 1 }
            if !body(text[i..<j]) { return false }
            i = j
        }
        return true
    }

    private static let bosLiteral = Array(bosToken.unicodeScalars)
    private static let eosLiteral = Array(eosToken.unicodeScalars)
    private static let contractions: [[Unicode.Scalar]] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

    private static func contractionLength(_ text: ArraySlice<Unicode.Scalar>) -> Int? {
        contractions.first { text.starts(with: $0) }?.count
    }

    private static func isLetter(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return (s.value | 0x20) >= 97 && (s.value | 0x20) <= 122 }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    private static func isNumber(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return s.value >= 48 && s.value <= 57 }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// Oniguruma's `\s` for Unicode text: the White_Space property.
    private static func isSpace(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return s.value == 32 || (s.value >= 9 && s.value <= 13) }
        return s.properties.isWhitespace
    }

    private static func isSymbol(_ s: Unicode.Scalar) -> Bool { !isLetter(s) && !isNumber(s) && !isSpace(s) }

    /// 0 letter, 1 number, 2 space, 3 other.
    private static func scalarClass(_ s: Unicode.Scalar) -> Int {
        isLetter(s) ? 0 : isNumber(s) ? 1 : isSpace(s) ? 2 : 3
    }

    // MARK: Byte symbols

    /// GPT-2/CLIP byte-to-unicode table: printable Latin-1 bytes stand for themselves, the
    /// other 68 bytes map to U+0100 onwards, in byte order. Index = byte value.
    static let byteSymbols: [String] = {
        var table = [String](repeating: "", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            table[b] = String(Character(Unicode.Scalar(printable ? UInt32(b) : next)!))
            if !printable { next += 1 }
        }
        return table
    }()

    /// Symbols in CLIP's id order: the printable ranges first, then the remapped bytes.
    static let byteSymbolsInVocabOrder: [String] = {
        let printable = Array(33...126) + Array(161...172) + Array(174...255)
        let others = (0..<256).filter { !printable.contains($0) }
        return (printable + others).map { byteSymbols[$0] }
    }()

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

/// A binary min-heap of packed (rank, position) keys for `bpe`.
private struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ x: UInt64) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= x { break }
            items[i] = items[parent]
            i = parent
        }
        items[i] = x
    }

    mutating func pop() -> UInt64? {
        guard let last = items.popLast() else { return nil }
        guard !items.isEmpty else { return last }
        let top = items[0]
        let n = items.count
        var i = 0
        while true {
            var child = 2 * i + 1
            if child >= n { break }
            if child + 1 < n && items[child + 1] < items[child] { child += 1 }
            if last <= items[child] { break }
            items[i] = items[child]
            i = child
        }
        items[i] = last
        return top
    }
}

/// Word → BPE ids, shared by copies of a tokenizer. Bounded like tokenizers' cache.
private final class BPECache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [[UInt8]: [Int32]] = [:]
    private let capacity = 10_000

    func get(_ key: [UInt8]) -> [Int32]? {
        lock.lock(); defer { lock.unlock() }
        return entries[key]
    }

    func set(_ key: [UInt8], _ value: [Int32]) {
        lock.lock(); defer { lock.unlock() }
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        entries[key] = value
    }
}

// MARK: - Bundled vocabulary and folder writing

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

        // vocab.json by hand, in id order like the published files (JSONSerialization would reorder).
        var json = "{"
        json.reserveCapacity(1 << 20)
        for (i, token) in tokens.enumerated() {
            if i > 0 { json += "," }
            json += jsonString(token) + ":" + String(i)
        }
        json += "}"

        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data(json.utf8).write(to: directory.appendingPathComponent("vocab.json"), options: .atomic)
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

    private static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
