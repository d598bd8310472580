import Foundation
import XCTest
import KoalaTestSupport
@testable import KoalaModels

/// Tokenizer folders as transformers 5 saves them (`tokenizer.json` + `tokenizer_config.json`,
/// no vocab.json/merges.txt): Tests/Fixtures/hf-folder, written by diffusers 0.42
/// `StableDiffusionXLPipeline.save_pretrained`, and the ids transformers gives for the
/// prompts of Tests/Fixtures/tokenizer.json (tools/reference/fixtures_hf_folder.py).
final class CLIPTokenizerFileTests: XCTestCase {
    struct Expected {
        var padTokenID: Int
        var vocabularySize: Int
        var files: [String]
        var mergesForm: String
        var ids: [[Int]]
        var inputIDs: [[Int]]
    }

    static let folder = Fixtures.directory.appendingPathComponent("hf-folder")

    static func expected() throws -> (prompts: [String], tokenizers: [String: Expected]) {
        let prompts = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.directory.appendingPathComponent("tokenizer.json")))
            as? [String: Any])["prompts"] as? [String]
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.directory.appendingPathComponent("hf_folder.json")))
            as? [String: Any])
        XCTAssertEqual(root["prompt_count"] as? Int, prompts?.count, "hf_folder.json was made from these prompts")
        var out: [String: Expected] = [:]
        for (name, raw) in try XCTUnwrap(root["tokenizers"] as? [String: [String: Any]]) {
            out[name] = Expected(padTokenID: try XCTUnwrap(raw["pad_token_id"] as? Int),
                                 vocabularySize: try XCTUnwrap(raw["vocab_size"] as? Int),
                                 files: try XCTUnwrap(raw["files"] as? [String]),
                                 mergesForm: try XCTUnwrap(raw["merges_form"] as? String),
                                 ids: try XCTUnwrap(raw["ids"] as? [[Int]]),
                                 inputIDs: try XCTUnwrap(raw["input_ids"] as? [[Int]]))
        }
        return (try XCTUnwrap(prompts), out)
    }

    func temporaryCopy(of name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("koala-tokfile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let copy = dir.appendingPathComponent(name)
        try FileManager.default.copyItem(at: Self.folder.appendingPathComponent(name), to: copy)
        return copy
    }

    /// Every prompt's full ids and 77 input_ids, as transformers gives them.
    func assertMatches(_ tokenizer: CLIPTokenizer, _ expected: Expected, _ prompts: [String], _ label: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(tokenizer.padTokenID, expected.padTokenID, label, file: file, line: line)
        XCTAssertEqual(tokenizer.vocabularySize, expected.vocabularySize, label, file: file, line: line)
        XCTAssertEqual(tokenizer.maxLength, 77, label, file: file, line: line)
        var failures = 0
        for (i, prompt) in prompts.enumerated() where failures < 10 {
            let full = [tokenizer.bosTokenID] + tokenizer.encode(prompt) + [tokenizer.eosTokenID]
            if full != expected.ids[i] {
                failures += 1
                XCTFail("\(label): prompt \(i) \(prompt.debugDescription): got \(full), expected \(expected.ids[i])", file: file, line: line)
            }
            if tokenizer(prompt) != expected.inputIDs[i] {
                failures += 1
                XCTFail("\(label): input_ids of prompt \(i) \(prompt.debugDescription): got \(tokenizer(prompt)), expected \(expected.inputIDs[i])",
                        file: file, line: line)
            }
        }
    }

    func testFoldersSavedByTransformers5GiveTransformersIds() throws {
        let (prompts, expected) = try Self.expected()
        XCTAssertEqual(Set(expected.keys), ["tokenizer", "tokenizer_2"])
        for (name, e) in expected {
            let dir = Self.folder.appendingPathComponent(name)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), e.files)
            XCTAssertFalse(e.files.contains("vocab.json"), "the fixture is the new layout only")
            XCTAssertEqual(e.mergesForm, "pairs", "tokenizers 0.23 writes merges as pairs")
            assertMatches(try CLIPTokenizer(directory: dir), e, prompts, name)
        }
        // tokenizer_2 pads with "!" (id 0), taken from tokenizer_config.json.
        XCTAssertEqual(expected["tokenizer_2"]?.padTokenID, 0)
        XCTAssertNotEqual(expected["tokenizer"]?.padTokenID, 0)
    }

    /// tokenizers before 0.20 wrote each merge as one "a b" string.
    func testStringFormMergesGiveTheSameIds() throws {
        let (prompts, expected) = try Self.expected()
        let dir = try temporaryCopy(of: "tokenizer_2")
        let url = dir.appendingPathComponent("tokenizer.json")
        var root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var model = try XCTUnwrap(root["model"] as? [String: Any])
        let pairs = try XCTUnwrap(model["merges"] as? [[String]])
        model["merges"] = pairs.map { $0.joined(separator: " ") }
        root["model"] = model
        try JSONSerialization.data(withJSONObject: root).write(to: url)
        XCTAssertTrue(try String(contentsOf: url, encoding: .utf8).contains("\"i n\""))
        assertMatches(try CLIPTokenizer(directory: dir), try XCTUnwrap(expected["tokenizer_2"]), prompts, "string merges")
    }

    /// With both layouts in one folder, tokenizer.json is read (as transformers does): here
    /// vocab.json/merges.txt hold the full CLIP vocabulary, which gives other ids.
    func testTokenizerJSONWinsOverVocabAndMerges() throws {
        let (prompts, expected) = try Self.expected()
        let dir = try temporaryCopy(of: "tokenizer")
        let full = dir.deletingLastPathComponent().appendingPathComponent("full")
        try CLIPTokenizer.writeVocabulary(to: full, padToken: "<|endoftext|>")
        for file in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: full.appendingPathComponent(file), to: dir.appendingPathComponent(file))
        }
        let e = try XCTUnwrap(expected["tokenizer"])
        assertMatches(try CLIPTokenizer(directory: dir), e, prompts, "both layouts")
        // The old files alone would have given different ids: the choice is what made it match.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer.json"))
        let old = try CLIPTokenizer(directory: dir)
        XCTAssertEqual(old.vocabularySize, 49408)
        XCTAssertNotEqual(prompts.map { [old.bosTokenID] + old.encode($0) + [old.eosTokenID] }, e.ids)
    }

    func testBrokenTokenizerJSONNamesTheFileAndTheEntry() throws {
        let dir = try temporaryCopy(of: "tokenizer")
        let url = dir.appendingPathComponent("tokenizer.json")
        let original = try Data(contentsOf: url)
        func edit(_ change: (inout [String: Any]) -> Void) throws {
            var root = try XCTUnwrap(JSONSerialization.jsonObject(with: original) as? [String: Any])
            var model = try XCTUnwrap(root["model"] as? [String: Any])
            change(&model)
            root["model"] = model
            try JSONSerialization.data(withJSONObject: root).write(to: url)
        }
        func assertCorrupt(_ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try CLIPTokenizer(directory: dir), file: file, line: line) { error in
                guard case .corruptFile(let at, let reason) = error as? CLIPTokenizerError else {
                    return XCTFail("\(error)", file: file, line: line)
                }
                XCTAssertEqual(at, url, file: file, line: line)
                XCTAssertTrue(reason.contains(fragment), "'\(reason)' lacks '\(fragment)'", file: file, line: line)
            }
        }
        try edit { $0["type"] = "WordPiece" }
        assertCorrupt("\"BPE\"")
        try edit { $0["dropout"] = 0.1 }
        assertCorrupt("dropout")
        try edit { m in
            var merges = m["merges"] as! [Any]
            merges[3] = "one-symbol"
            m["merges"] = merges
        }
        assertCorrupt("model.merges[3]")
        try edit { m in
            var merges = m["merges"] as! [Any]
            merges[2] = ["zz", "qq"]
            m["merges"] = merges
        }
        assertCorrupt("model.merges[2] (zz qq) uses a symbol that the vocabulary lacks")
        try edit { $0["vocab"] = nil }
        assertCorrupt("model.vocab")
        try Data("{\"model\": ".utf8).write(to: url)
        assertCorrupt("not valid JSON")
    }

    func testMissingFolderMessageNamesBothLayouts() {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("koala-none-\(UUID().uuidString)")
        XCTAssertThrowsError(try CLIPTokenizer(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("tokenizer.json"), "\(error)")
            XCTAssertTrue("\(error)".contains("vocab.json and merges.txt"), "\(error)")
        }
    }
}
