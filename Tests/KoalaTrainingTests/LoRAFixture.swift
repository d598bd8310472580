import Foundation
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import XCTest

/// A LoRA parity fixture (`tools/reference/fixtures_loratrain.py`, `fixtures_telora.py`):
/// the safetensors file and the JSON object its script stored in the metadata entry
/// "fixture" (model configs, PEFT's LoraConfig per case, exported keys).
struct LoRAFixture {
    let file: SafeTensorsFile
    let meta: [String: Any]

    init(_ name: String) throws {
        file = try Fixtures.open(name)
        meta = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try XCTUnwrap(file.metadata["fixture"]).utf8)) as? [String: Any])
    }

    /// The names of the tensors under `prefix`, without it.
    func keys(under prefix: String) -> Set<String> {
        Set(file.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
    }

    /// A PEFT LoraConfig as the scripts store it (`r`, `lora_alpha`, `target_modules`).
    static func peftConfig(_ peft: Any?) throws -> LoRAConfig {
        let c = try XCTUnwrap(peft as? [String: Any])
        return LoRAConfig(rank: try XCTUnwrap(c["r"] as? Int), alpha: Float(try XCTUnwrap(c["lora_alpha"] as? Double)),
                          targetModules: try XCTUnwrap(c["target_modules"] as? [String]))
    }
}
