import Foundation

extension CLIPTokenizer {
    // MARK: Text processing

    enum Segment { case text(ArraySlice<Unicode.Scalar>), token(Int) }

    /// Cuts added tokens out of `text`, leftmost match first, longest on ties; stops when
    /// `body` returns false.
    static func split(_ text: ArraySlice<Unicode.Scalar>, on tokens: [AddedToken], _ body: (Segment) -> Bool) {
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
}
