import Foundation
import KoalaModels
import KoalaTensor

/// KOALA's student initialisation (paper Sec. 4.2): a compressed U-Net (KOALA-700M,
/// KOALA-1B, or any config with fewer layers) built from an SDXL-structured teacher,
/// every parameter copied from the teacher's parameter "at the same block location".
///
/// The rule, per student parameter key (diffusers names):
/// - `down_blocks.i.resnets.j` / `down_blocks.i.attentions.j` ← the teacher's same `j`:
///   BK-SDM (Sec. 3.1), whose block removal KOALA follows, keeps the *first*
///   resnet/attention pair of each down stage, the one that sees the stage's new
///   resolution.
/// - `up_blocks.i.resnets.j` / `up_blocks.i.attentions.j` (teacher 3 per up block,
///   student 2): the student's first `k-1` pairs ← the teacher's first `k-1`, the
///   student's *last* ← the teacher's *last*, so a 2-pair student gets the teacher's
///   pairs 0 and 2. BK-SDM keeps the first and the third pair of each up stage (its
///   paper, and its released `copy_weight_from_teacher`: student `resnets.1` ← teacher
///   `resnets.2`); and in
///   diffusers only an up block's last resnet takes the skip coming from the stage's
///   input (`res_skip_channels = in_channels`), so only the teacher's last resnet has
///   the shape of the student's last.
/// - `…transformer_blocks.l` ← the teacher's `l` for `l` below the student's depth:
///   "SA-bottom", from the first (paper Fig. 7 / Table 3c), in down, mid and up blocks.
/// - `mid_block.*` (when the student has one) ← the teacher's mid block.
/// - everything else — `conv_in`, `time_embedding`, `add_embedding`, down/upsamplers,
///   `conv_norm_out`, `conv_out`, and each attention's `norm`/`proj_in`/`proj_out` —
///   ← the same key.
///
/// Every student key comes from exactly one teacher key of the same shape, or the
/// initialisation fails naming the key; nothing is copied before every key is checked.
public enum StudentInitialization {
    /// The config keys a student may set differently from its teacher: the layer
    /// counts. Everything else (block types, widths, heads, embeddings) must match, or
    /// the teacher's weights cannot fill the student.
    static let layerKeys: Set<String> = [
        "layers_per_block", "transformer_layers_per_block", "reverse_transformer_layers_per_block", "mid_block_type",
        "sample_size", "_class_name", "_diffusers_version",
    ]

    /// The student presets: KOALA's published U-Nets.
    public static let presets = ["koala-700m", "koala-1b"]

    /// A student named by a preset or by the path of a U-Net config.json.
    public static func config(named name: String) throws -> UNet2DConditionConfig {
        if presets.contains(name) { return try UNet2DConditionConfig.preset(name) }
        guard name.hasSuffix(".json") || FileManager.default.fileExists(atPath: name) else {
            throw StudentInitializationError("unknown student '\(name)'; choose \(presets.joined(separator: ", ")) or give a U-Net config.json")
        }
        guard FileManager.default.fileExists(atPath: name) else {
            throw StudentInitializationError("student config \(name) does not exist; give \(presets.joined(separator: ", ")) or a U-Net config.json")
        }
        let data = try readJSONFile(URL(fileURLWithPath: name))
        do { return try JSONDecoder().decode(UNet2DConditionConfig.self, from: data) } catch {
            throw StudentInitializationError("student config \(name) is not a U-Net config KoalaBooth can read: \(error)")
        }
    }

    /// Builds `student` from a teacher given as its config, its parameters' shapes by
    /// key and a reader of one parameter (a checkpoint read one tensor at a time, so a
    /// full-size teacher is never held in memory). Throws a `StudentInitializationError`
    /// naming the config key or parameter that the teacher cannot supply.
    public static func student(_ student: UNet2DConditionConfig, teacher: UNet2DConditionConfig,
                               teacherShapes: [String: [Int]],
                               teacherTensor: (String) throws -> Tensor) throws -> UNet2DConditionModel {
        try checkConfigs(student: student, teacher: teacher)
        let model = UNet2DConditionModel(config: student, init: .uninitialized())
        let params = model.namedParameters()
        let mapping = try teacherKeys(for: params.map { ($0.0, $0.1.shape) }, teacherShapes: teacherShapes)
        try noGrad {
            for (key, p) in params { p.assign(try teacherTensor(mapping[key]!)) }
        }
        return model
    }

    /// Builds `student` from a teacher already in memory.
    public static func student(_ student: UNet2DConditionConfig, from teacher: UNet2DConditionModel) throws -> UNet2DConditionModel {
        let named = Dictionary(uniqueKeysWithValues: teacher.namedParameters())
        return try self.student(student, teacher: teacher.config, teacherShapes: named.mapValues(\.shape)) { named[$0]! }
    }

    /// The teacher key each student key is copied from (the rule above), after checking
    /// that every one exists with the student's shape and none is used twice.
    public static func teacherKeys(for student: [(key: String, shape: [Int])],
                                   teacherShapes: [String: [Int]]) throws -> [String: String] {
        let studentCounts = childCounts(student.map(\.key)), teacherCounts = childCounts(Array(teacherShapes.keys))
        var mapping: [String: String] = [:], used: [String: String] = [:]
        for (key, shape) in student {
            var parts = key.split(separator: ".").map(String.init)
            if parts.count > 3, parts[0] == "up_blocks", parts[2] == "resnets" || parts[2] == "attentions", let j = Int(parts[3]) {
                let pairs = "up_blocks.\(parts[1]).resnets"
                let k = studentCounts[pairs] ?? 0, m = teacherCounts[pairs] ?? 0
                guard k <= m else {
                    throw StudentInitializationError("the student's \(pairs) has \(k) resnets, the teacher's only \(m): the teacher cannot supply \(key). Choose a student with fewer layers_per_block (or a larger teacher).")
                }
                if j == k - 1 { parts[3] = String(m - 1) }
            }
            let source = parts.joined(separator: ".")
            guard let found = teacherShapes[source] else {
                throw StudentInitializationError("the teacher has no \(source) for the student's \(key): "
                    + shortfall(source, teacherCounts, studentCounts))
            }
            guard found == shape else {
                throw StudentInitializationError("the student's \(key) has shape \(shape), the teacher's \(source) \(found): the teacher is not the student's architecture at a larger depth (is it SDXL-structured?)")
            }
            if let other = used[source] {
                throw StudentInitializationError("the student's \(key) and \(other) would both come from the teacher's \(source)")
            }
            used[source] = key
            mapping[key] = source
        }
        return mapping
    }

    /// Why a teacher key is missing: the first numbered list in it that the teacher has
    /// fewer entries of than the student wants.
    private static func shortfall(_ key: String, _ teacher: [String: Int], _ student: [String: Int]) -> String {
        let parts = key.split(separator: ".").map(String.init)
        for (n, part) in parts.enumerated() {
            guard let index = Int(part), n > 0 else { continue }
            let prefix = parts[..<n].joined(separator: ".")
            if let t = teacher[prefix], index >= t {
                return "the student's \(prefix) has \(student[prefix] ?? index + 1) \(parts[n - 1]), the teacher's only \(t). Choose a student with shallower stacks or fewer layers (or a larger teacher)."
            }
            if teacher[prefix] == nil {
                return "the teacher has no \(prefix) at all; it does not have the student's block structure (is it SDXL-structured?)."
            }
        }
        return "the teacher does not have the student's block structure (is it SDXL-structured?)."
    }

    /// For each numbered list in `keys` (`up_blocks.0.resnets`, `…transformer_blocks`),
    /// how many entries it has.
    private static func childCounts(_ keys: [String]) -> [String: Int] {
        var counts: [String: Int] = [:]
        for key in keys {
            let parts = key.split(separator: ".")
            for (n, part) in parts.enumerated() where n > 0 {
                guard let index = Int(part) else { continue }
                let prefix = parts[..<n].joined(separator: ".")
                counts[prefix] = max(counts[prefix] ?? 0, index + 1)
            }
        }
        return counts
    }

    /// The configs agree on everything but the layer counts, and a student mid block
    /// has a teacher mid block to come from.
    static func checkConfigs(student: UNet2DConditionConfig, teacher: UNet2DConditionConfig) throws {
        let s = try configValues(student), t = try configValues(teacher)
        for key in Set(s.keys).union(t.keys).subtracting(layerKeys).sorted() where s[key] != t[key] {
            throw StudentInitializationError("the student config's \(key) is \(s[key] ?? "absent"), the teacher's \(t[key] ?? "absent"): a student initialised from a teacher keeps the teacher's block types, widths, heads and embeddings, only layers_per_block, transformer_layers_per_block and mid_block_type may differ. Is the teacher an SDXL-structured U-Net of the student's family?")
        }
        if student.midBlockType != nil, teacher.midBlockType == nil {
            throw StudentInitializationError("the student has a mid block (\(student.midBlockType!)) and the teacher none: the teacher cannot supply mid_block.*. Choose a student with mid_block_type null (koala-700m).")
        }
    }

    /// Each config key's value as compact JSON text.
    private static func configValues(_ c: UNet2DConditionConfig) throws -> [String: String] {
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)) as! [String: Any]
        return json.mapValues { v in
            (try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .fragmentsAllowed]))
                .map { String(decoding: $0, as: UTF8.self) } ?? "\(v)"
        }
    }

    // MARK: folders

    /// A teacher U-Net on disk: its config and its weights, read one tensor at a time.
    public struct TeacherFolder {
        public let config: UNet2DConditionConfig
        public let weights: StateDict
        /// Where the U-Net's `config.json` is (for messages).
        public let unetDirectory: URL

        public var shapes: [String: [Int]] {
            var out: [String: [Int]] = [:]
            for f in weights.files { for (k, e) in f.entries { out[k] = e.shape } }
            return out
        }

        /// `path` is a diffusers pipeline folder (its `unet/` is used) or a U-Net folder
        /// (`config.json` + `diffusion_pytorch_model.safetensors`).
        public init(path: String) throws {
            let fm = FileManager.default
            var root = URL(fileURLWithPath: path)
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
                throw StudentInitializationError("teacher folder \(path) does not exist; the teacher is an SDXL diffusers folder (holding model_index.json) or its unet/ folder")
            }
            if fm.fileExists(atPath: root.appendingPathComponent("model_index.json").path) {
                root = try PipelineFolder(path: path).directory("unet")
            }
            let configURL = root.appendingPathComponent("config.json")
            guard fm.fileExists(atPath: configURL.path) else {
                throw StudentInitializationError("\(path) is neither a diffusers pipeline folder (no model_index.json) nor a U-Net folder (no config.json); the teacher is an SDXL diffusers folder or its unet/ folder")
            }
            let data = try readJSONFile(configURL)
            if let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
               let cls = json["_class_name"] as? String, cls != "UNet2DConditionModel" {
                throw StudentInitializationError("\(configURL.path) describes a \(cls), not a UNet2DConditionModel; the teacher is an SDXL diffusers folder or its unet/ folder")
            }
            do { config = try JSONDecoder().decode(UNet2DConditionConfig.self, from: data) } catch {
                throw StudentInitializationError("\(configURL.path) is not a U-Net config KoalaBooth can read: \(error)")
            }
            weights = try StateDict.load(directory: root, weightName: "diffusion_pytorch_model", variant: nil)
            unetDirectory = root
        }
    }

    /// Initialises `student` from the teacher at `teacherPath` and writes it to `out` as
    /// a diffusers U-Net folder (`config.json` + float32 `diffusion_pytorch_model.safetensors`,
    /// what `UNet2DConditionModel.from_pretrained` and full fine-tuning checkpoints use).
    /// The folder is built under a temporary name and renamed into place
    /// (`DurableWrite.file`): a failure leaves no folder at `out`.
    @discardableResult
    public static func write(_ student: UNet2DConditionConfig, fromTeacher teacherPath: String, to out: String) throws -> UNet2DConditionModel {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: out)
        guard !fm.fileExists(atPath: url.path) else {
            throw StudentInitializationError("\(out) already exists; choose a new folder for the student or remove it first")
        }
        guard fm.fileExists(atPath: url.deletingLastPathComponent().path) else {
            throw StudentInitializationError("cannot create \(out): the folder \(url.deletingLastPathComponent().path) does not exist")
        }
        let teacher = try TeacherFolder(path: teacherPath)
        let model: UNet2DConditionModel
        do {
            model = try self.student(student, teacher: teacher.config, teacherShapes: teacher.shapes, teacherTensor: teacher.weights.tensor)
        } catch let e as StudentInitializationError {
            throw StudentInitializationError("cannot initialise the student from \(teacher.unetDirectory.path): \(e.description)")
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let config = try enc.encode(student)
        try DurableWrite.file(url) { tmp in
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
            try config.write(to: tmp.appendingPathComponent("config.json"))
            try SafeTensors.write(Dictionary(uniqueKeysWithValues: model.namedParameters()),
                                  to: tmp.appendingPathComponent(FullUNetWeights.weightsFile).path, metadata: ["format": "pt"])
        }
        return model
    }
}

/// A student the teacher cannot initialise, naming the config key or parameter.
public struct StudentInitializationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
