import Foundation
import XCTest
import KoalaTestSupport
@testable import KoalaModels

/// Tokenizing costs what the 77 ids use, not the length of the text: very long words
/// match transformers (Tests/Fixtures/tokenizer_long.json, from
/// tools/reference/fixtures_tokenizer_long.py) with a linear number of heap steps
/// (O(n log n) time; counted, not timed, so load cannot fail them), and a huge prompt is
/// encoded only as far as its first 75 ids.
final class CLIPTokenizerBoundsTests: XCTestCase {
    static func longWords() throws -> [String: (text: String, ids: [Int], inputIDs: [Int])] {
        let data = try Data(contentsOf: Fixtures.directory.appendingPathComponent("tokenizer_long.json"))
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        var out: [String: (String, [Int], [Int])] = [:]
        for (name, raw) in try XCTUnwrap(root["words"] as? [String: [String: Any]]) {
            out[name] = (try XCTUnwrap(raw["text"] as? String), try XCTUnwrap(raw["ids"] as? [Int]),
                         try XCTUnwrap(raw["input_ids"] as? [Int]))
        }
        return out
    }

    /// Heap steps BPE takes for `word`, which must stay below 3 per byte: the
    /// rescan-after-every-merge version it replaced did ~n²/2 pair lookups (39 s for
    /// 60,000 letters).
    func assertLinearWork(_ t: CLIPTokenizer, _ word: String, _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        var work = 0
        let bytes = Array(word.utf8)
        _ = t.bpe(bytes, work: &work)
        XCTAssertGreaterThan(work, 0, name, file: file, line: line)
        XCTAssertLessThan(work, 3 * bytes.count, "\(name): \(work) heap steps for \(bytes.count) bytes", file: file, line: line)
    }

    func testLongWordsMatchTransformersWithoutQuadraticWork() throws {
        let t = try CLIPTokenizer.bundled(padToken: "<|endoftext|>")
        let words = try Self.longWords()
        XCTAssertGreaterThanOrEqual(words.count, 5)
        for (name, word) in words.sorted(by: { $0.key < $1.key }) {
            let ids = [t.bosTokenID] + t.encode(word.text) + [t.eosTokenID]
            let input = t(word.text)
            XCTAssertEqual(ids.count, word.ids.count, name)
            if let i = zip(ids, word.ids).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                XCTFail("\(name): id \(i) is \(ids[i]), transformers gives \(word.ids[i])")
            }
            XCTAssertEqual(input, word.inputIDs, name)
            assertLinearWork(t, word.text, name)
        }
    }

    func testHugePromptIsEncodedOnlyAsFarAsTheIdsItKeeps() throws {
        let t = try CLIPTokenizer.bundled(padToken: "!")
        // 2 MB of distinct 1,000-letter words: each needs hundreds of merges, and the first
        // one alone fills the 75 ids.
        var generator = LCG(seed: 7)
        let word = { String((0..<1000).map { _ in Character(Unicode.Scalar(UInt8(97 + generator.next() % 26))) }) }
        let words = (0..<2000).map { _ in word() }
        let prompt = words.joined(separator: " ")
        XCTAssertGreaterThanOrEqual(prompt.utf8.count, 2_000_000)
        let ids = t(prompt)
        // Same ids as the first word alone: nothing after it can reach the truncated result.
        XCTAssertEqual(ids, t(words[0]))
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(t.encode(prompt, limit: 75).count, t.encode(words[0]).count, "encoded past the first word")

        // Short words: the limit stops within a few words, however long the prompt.
        let sentence = String(repeating: "a photo of sks dog on the beach, ", count: 60_000)
        XCTAssertEqual(t.encode(sentence, limit: 75).count, 75)
        XCTAssertEqual(t(sentence), t(String(repeating: "a photo of sks dog on the beach, ", count: 10)))
    }

    func testTwoMegabyteSingleWordTakesLinearWork() throws {
        let t = try CLIPTokenizer.bundled(padToken: "<|endoftext|>")
        var generator = LCG(seed: 11)
        let word = String((0..<2_000_000).map { _ in Character(Unicode.Scalar(UInt8(97 + generator.next() % 26))) })
        let ids = t(word)
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(ids[76], t.eosTokenID)
        assertLinearWork(t, word, "2 MB word")
    }
}

/// A small deterministic generator for test text.
private struct LCG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state >> 33
    }
}
