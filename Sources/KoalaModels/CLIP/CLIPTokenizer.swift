import Foundation
import KoalaTensor

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
    struct AddedToken { var scalars: [Unicode.Scalar]; var id: Int; var normalized: Bool }

    let merges: [UInt64: Merge]
    let byteIDs: [Int32]      // byte -> id of its symbol inside a word
    let byteEndIDs: [Int32]   // byte -> id of its symbol + "</w>" at the end of a word
    let rawAdded: [AddedToken]
    let normalizedAdded: [AddedToken]
    private let cache = BPECache()

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
}
