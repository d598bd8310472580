import Foundation
import XCTest
import KoalaTestSupport
@testable import KoalaModels

/// Ids from transformers' CLIPTokenizer (tools/reference/fixtures_tokenizer.py).
final class CLIPTokenizerTests: XCTestCase {
    struct Variant {
        var config: [String: Any]
        var specialMap: [String: Any]?
        var padTokenID: Int
        /// Prompt indices covered (all when the fixture gives none).
        var indices: [Int]?
        var ids: [[Int]]
        var inputIDs: [[Int]]?
        /// added_tokens.json contents, when the variant has one.
        var addedTokens: [String: Any]?
    }

    struct Fixture {
        var prompts: [String]
        var maxLength: Int
        var vocab: [String: Any]
        var variants: [String: Variant]
    }

    nonisolated(unsafe) static var cached: Fixture?

    static func fixture() throws -> Fixture {
        if let cached { return cached }
        let data = try Data(contentsOf: Fixtures.directory.appendingPathComponent("tokenizer.json"))
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        var variants: [String: Variant] = [:]
        for (name, raw) in try XCTUnwrap(root["tokenizers"] as? [String: [String: Any]]) {
            variants[name] = Variant(
                config: try XCTUnwrap(raw["tokenizer_config"] as? [String: Any]),
                specialMap: raw["special_tokens_map"] as? [String: Any],
                padTokenID: try XCTUnwrap(raw["pad_token_id"] as? Int),
                indices: raw["indices"] as? [Int],
                ids: try XCTUnwrap(raw["ids"] as? [[Int]]),
                inputIDs: raw["input_ids"] as? [[Int]],
                addedTokens: raw["added_tokens"] as? [String: Any])
        }
        let fixture = Fixture(prompts: try XCTUnwrap(root["prompts"] as? [String]),
                              maxLength: try XCTUnwrap(root["max_length"] as? Int),
                              vocab: try XCTUnwrap(root["vocab"] as? [String: Any]),
                              variants: variants)
        cached = fixture
        return fixture
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("koala-tokenizer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func writeJSON(_ object: Any, to url: URL) throws {
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted]).write(to: url)
    }

    /// The bundled vocabulary with the variant's own tokenizer_config.json / special_tokens_map.json.
    func folder(for variant: Variant) throws -> URL {
        let dir = try temporaryDirectory()
        try CLIPTokenizer.writeVocabulary(to: dir, padToken: "!")
        try writeJSON(variant.config, to: dir.appendingPathComponent("tokenizer_config.json"))
        let mapURL = dir.appendingPathComponent("special_tokens_map.json")
        if let map = variant.specialMap {
            try writeJSON(map, to: mapURL)
        } else {
            try FileManager.default.removeItem(at: mapURL)
        }
        if let added = variant.addedTokens {
            try writeJSON(added, to: dir.appendingPathComponent("added_tokens.json"))
        }
        return dir
    }

    func assertMatches(_ tokenizer: CLIPTokenizer, _ variant: Variant, _ fixture: Fixture, _ label: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(tokenizer.padTokenID, variant.padTokenID, label, file: file, line: line)
        var failures = 0
        for (i, promptIndex) in (variant.indices ?? Array(fixture.prompts.indices)).enumerated() where failures < 10 {
            let prompt = fixture.prompts[promptIndex]
            let full = [tokenizer.bosTokenID] + tokenizer.encode(prompt) + [tokenizer.eosTokenID]
            if full != variant.ids[i] {
                failures += 1
                XCTFail("\(label): prompt \(promptIndex) \(prompt.debugDescription): got \(full), expected \(variant.ids[i])", file: file, line: line)
            }
            if let expected = variant.inputIDs?[i], tokenizer(prompt) != expected {
                failures += 1
                XCTFail("\(label): input_ids of prompt \(promptIndex) \(prompt.debugDescription): got \(tokenizer(prompt)), expected \(expected)", file: file, line: line)
            }
        }
    }

    func testFixtureCoversEnoughPrompts() throws {
        let fixture = try Self.fixture()
        XCTAssertGreaterThanOrEqual(fixture.prompts.count, 250)
        XCTAssertTrue(Set(fixture.variants.keys).isSuperset(of: ["tokenizer", "tokenizer_2", "legacy"]))
        XCTAssertEqual(fixture.variants["tokenizer"]?.ids.count, fixture.prompts.count)
        XCTAssertEqual(fixture.maxLength, 77)
    }

    func testSDXLTokenizerMatchesTransformers() throws {
        let fixture = try Self.fixture()
        let variant = try XCTUnwrap(fixture.variants["tokenizer"])
        let tokenizer = try CLIPTokenizer(directory: folder(for: variant))
        XCTAssertEqual(tokenizer.bosTokenID, 49406)
        XCTAssertEqual(tokenizer.eosTokenID, 49407)
        XCTAssertEqual(tokenizer.padTokenID, 49407)
        XCTAssertEqual(tokenizer.maxLength, 77)
        assertMatches(tokenizer, variant, fixture, "tokenizer")
    }

    func testSDXLTokenizer2MatchesTransformers() throws {
        let fixture = try Self.fixture()
        let variant = try XCTUnwrap(fixture.variants["tokenizer_2"])
        let tokenizer = try CLIPTokenizer(directory: folder(for: variant))
        XCTAssertEqual(tokenizer.padTokenID, 0)
        assertMatches(tokenizer, variant, fixture, "tokenizer_2")
        // The pad token "!" is an added token: every "!" becomes id 0, not the BPE "!</w>".
        XCTAssertEqual(tokenizer.encode("wow!!"), [tokenizer.encode("wow")[0], 0, 0])
    }

    func testLegacyAddedTokenConfigMatchesTransformers() throws {
        let fixture = try Self.fixture()
        let variant = try XCTUnwrap(fixture.variants["legacy"])
        assertMatches(try CLIPTokenizer(directory: folder(for: variant)), variant, fixture, "legacy")
    }

    /// Which `normalized` flag wins when tokenizer_config.json, special_tokens_map.json and
    /// added_tokens_decoder name the same token differently.
    func testSpecialTokenFlagResolutionMatchesTransformers() throws {
        let fixture = try Self.fixture()
        let names = fixture.variants.keys.filter { $0.hasPrefix("flags_") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 5)
        for name in names {
            let variant = fixture.variants[name]!
            assertMatches(try CLIPTokenizer(directory: folder(for: variant)), variant, fixture, name)
        }
    }

    func testWrittenFolderRoundTrip() throws {
        let fixture = try Self.fixture()
        for (name, pad) in [("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")] {
            let dir = try temporaryDirectory()
            try CLIPTokenizer.writeVocabulary(to: dir, padToken: pad)
            let variant = try XCTUnwrap(fixture.variants[name])
            assertMatches(try CLIPTokenizer(directory: dir), variant, fixture, "written \(name)")
            assertMatches(try CLIPTokenizer.bundled(padToken: pad), variant, fixture, "bundled \(name)")
        }
    }

    func testWrittenVocabularyIsCLIPs() throws {
        let fixture = try Self.fixture()
        let dir = try temporaryDirectory()
        try CLIPTokenizer.writeVocabulary(to: dir, padToken: "!")
        for name in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(name).path), name)
        }
        let vocab = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("vocab.json"))) as? [String: Int])
        XCTAssertEqual(vocab.count, fixture.vocab["count"] as? Int)
        var tokens = [String](repeating: "", count: vocab.count)
        for (token, id) in vocab { tokens[id] = token }
        XCTAssertEqual(fnv1a64(tokens.joined(separator: "\n")), fixture.vocab["tokens_fnv1a64"] as? String)
        let merges = try Data(contentsOf: dir.appendingPathComponent("merges.txt"))
        XCTAssertEqual(fnv1a64(merges), fixture.vocab["merges_fnv1a64"] as? String)
        for pair in try XCTUnwrap(fixture.vocab["sample"] as? [[Any]]) {
            let token = try XCTUnwrap(pair[0] as? String), id = try XCTUnwrap(pair[1] as? Int)
            XCTAssertEqual(vocab[token], id, token)
        }
    }

    func testTruncationKeepsEOSAndPadding() throws {
        let fixture = try Self.fixture()
        let t1 = try CLIPTokenizer.bundled(padToken: "<|endoftext|>")
        let t2 = try CLIPTokenizer.bundled(padToken: "!")
        let long = String(repeating: "a photo of a koala ", count: 30)
        for t in [t1, t2] {
            let ids = t(long)
            XCTAssertEqual(ids.count, 77)
            XCTAssertEqual(ids[0], 49406)
            XCTAssertEqual(ids[76], 49407)
            XCTAssertEqual(Array(ids[1..<76]), Array(t.encode(long).prefix(75)))
            XCTAssertFalse(ids[1..<76].contains(49407))
        }
        // Padding: BOS, body, EOS, then the pad id of each SDXL tokenizer.
        let short1 = t1("a sks dog"), short2 = t2("a sks dog")
        XCTAssertEqual(Array(short1[0..<5]), [49406, 320, 48136, 1929, 49407])
        XCTAssertEqual(Array(short2[0..<5]), [49406, 320, 48136, 1929, 49407])
        XCTAssertTrue(short1[5...].allSatisfy { $0 == 49407 })
        XCTAssertTrue(short2[5...].allSatisfy { $0 == 0 })
        XCTAssertEqual(t1(""), [49406] + [Int](repeating: 49407, count: 76))
        // Exactly 75 body tokens fit; 76 lose the last one.
        let word = fixture.prompts.firstIndex(of: String(repeating: "word ", count: 75))!
        XCTAssertEqual(t1.encode(fixture.prompts[word]).count, 75)
        XCTAssertEqual(t1(fixture.prompts[word]), fixture.variants["tokenizer"]!.inputIDs![word])
    }

    func testModelMaxLengthFromConfig() throws {
        let dir = try temporaryDirectory()
        try CLIPTokenizer.writeVocabulary(to: dir, padToken: "!", maxLength: 8)
        let t = try CLIPTokenizer(directory: dir)
        XCTAssertEqual(t.maxLength, 8)
        let ids = t("one two three four five six seven eight")
        XCTAssertEqual(ids.count, 8)
        XCTAssertEqual(ids.first, 49406)
        XCTAssertEqual(ids.last, 49407)
        XCTAssertEqual(t("cat"), [49406, t.encode("cat")[0], 49407, 0, 0, 0, 0, 0])
    }

    func testWindowsLineEndingsInMergesLoadTheSame() throws {
        let fixture = try Self.fixture()
        let variant = try XCTUnwrap(fixture.variants["tokenizer_2"])
        let dir = try folder(for: variant)
        let mergesURL = dir.appendingPathComponent("merges.txt")
        let text = try String(contentsOf: mergesURL, encoding: .utf8)
        try Data(text.replacingOccurrences(of: "\n", with: "\r\n").utf8).write(to: mergesURL)
        assertMatches(try CLIPTokenizer(directory: dir), variant, fixture, "CRLF merges")
    }

    func testMissingAndCorruptFilesNameTheFile() throws {
        let dir = try temporaryDirectory()
        try CLIPTokenizer.writeVocabulary(to: dir, padToken: "!")
        let vocabURL = dir.appendingPathComponent("vocab.json")
        let vocabData = try Data(contentsOf: vocabURL)
        try FileManager.default.removeItem(at: vocabURL)
        XCTAssertThrowsError(try CLIPTokenizer(directory: dir)) { error in
            XCTAssertEqual(error as? CLIPTokenizerError, .missingFile(vocabURL))
            XCTAssertTrue("\(error)".contains("vocab.json"), "\(error)")
        }
        try Data("{\"a\": ".utf8).write(to: vocabURL)
        XCTAssertThrowsError(try CLIPTokenizer(directory: dir)) { error in
            guard case .corruptFile(let url, _) = error as? CLIPTokenizerError else { return XCTFail("\(error)") }
            XCTAssertEqual(url, vocabURL)
        }
        try vocabData.write(to: vocabURL)
        let mergesURL = dir.appendingPathComponent("merges.txt")
        try Data("#version: 0.2\ni n\nbroken\n".utf8).write(to: mergesURL)
        XCTAssertThrowsError(try CLIPTokenizer(directory: dir)) { error in
            guard case .corruptFile(let url, let reason) = error as? CLIPTokenizerError else { return XCTFail("\(error)") }
            XCTAssertEqual(url, mergesURL)
            XCTAssertTrue(reason.contains("line 3"), reason)
        }
        try FileManager.default.removeItem(at: mergesURL)
        XCTAssertThrowsError(try CLIPTokenizer(directory: dir)) { error in
            XCTAssertEqual(error as? CLIPTokenizerError, .missingFile(mergesURL))
        }
        XCTAssertThrowsError(try CLIPTokenizer.writeVocabulary(to: dir, padToken: "<pad>")) { error in
            XCTAssertTrue("\(error)".contains("<pad>"), "\(error)")
        }
    }

    func testEncodeIsThreadSafe() throws {
        let fixture = try Self.fixture()
        let t = try CLIPTokenizer.bundled(padToken: "!")
        let expected = fixture.variants["tokenizer_2"]!.inputIDs!
        let prompts = fixture.prompts
        let mismatches = LockedCounter()
        DispatchQueue.concurrentPerform(iterations: 4) { k in
            for i in stride(from: k, to: prompts.count, by: 4) where t(prompts[i]) != expected[i] { mismatches.increment() }
        }
        XCTAssertEqual(mismatches.value, 0)
    }
}

private final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
    func increment() { lock.lock(); count += 1; lock.unlock() }
}

private func fnv1a64<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

private func fnv1a64(_ text: String) -> String { fnv1a64(text.utf8) }
