import Foundation
import KoalaDiffusion
import KoalaStore
import KoalaTensor

/// The `parameters` PNG text chunk in the form AUTOMATIC1111's web UI writes it (its
/// "infotext"), which A1111's PNG Info tab, ComfyUI loaders, Civitai and image browsers
/// read:
///
/// ```
/// a photo of sks dog on the beach <lora:dog:0.8>
/// Negative prompt: blurry
/// Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 1024x1024, Model: koala-700m, RNG: CPU, Lora hashes: "dog: 3f2a9c0d1e4b"
/// ```
///
/// The prompt line comes first (with a `<lora:NAME:SCALE>` tag per applied LoRA, as an A1111
/// prompt names it), the negative prompt only when there is one, then one line of
/// `Key: value` fields; a value holding `,`, `:` or a line break is written as a JSON string,
/// as A1111's `infotext_utils.quote` does. Every PNG `koalabooth` writes gets its chunk here.
public struct Infotext {
    /// A LoRA merged into the weights, as A1111 names it: file name without extension,
    /// the strength, and A1111's short hash of the file.
    public struct LoRA: Equatable, Sendable {
        public var name: String
        public var scale: Float
        /// 12 hex digits (nil when the file could not be read).
        public var hash: String?

        public init(name: String, scale: Float, hash: String?) {
            self.name = name
            self.scale = scale
            self.hash = hash
        }

        /// Names and hashes the LoRA file at `path` as A1111's Lora extension does.
        public static func file(_ path: String, scale: Float) -> LoRA {
            let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            return LoRA(name: stem, scale: scale, hash: Infotext.shortHash(ofLoRA: path))
        }
    }

    public var parameters: GenerationParameters
    /// The scheduler config the image was drawn with (`GenerationParameters.schedulerConfig`).
    public var schedulerConfig: SchedulerConfig
    public var width: Int
    public var height: Int
    /// The model folder; A1111 writes the checkpoint's name, here the folder's name.
    public var modelPath: String
    /// false when the image started from given latents, which no seed reproduces.
    public var seeded = true
    public var loras: [LoRA] = []

    /// The chunk's text.
    public var text: String {
        let p = parameters
        let prompt = ([p.prompt] + loras.map { "<lora:\(Self.bare($0.name)):\(Self.number($0.scale))>" }).joined(separator: " ")
        var fields: [(String, String)] = [
            ("Steps", "\(p.steps)"),
            ("Sampler", Self.samplerName(p.scheduler, schedulerConfig)),
            ("Schedule type", Self.scheduleType(schedulerConfig)),
            ("CFG scale", "\(p.guidance)"),
        ]
        if seeded { fields.append(("Seed", "\(p.seed)")) }
        fields.append(("Size", "\(width)x\(height)"))
        fields.append(("Model", URL(fileURLWithPath: modelPath).standardizedFileURL.lastPathComponent))
        // A1111's "CPU" source is torch's CPU generator seeded with the seed: the noise `--rng torch` draws.
        if p.rng == .torch && seeded { fields.append(("RNG", "CPU")) }
        if p.guidanceRescale > 0 { fields.append(("Guidance rescale", "\(p.guidanceRescale)")) }
        let hashed = loras.compactMap { l in l.hash.map { "\(Self.bare(l.name)): \($0)" } }
        if !hashed.isEmpty { fields.append(("Lora hashes", hashed.joined(separator: ", "))) }
        fields.append(("Version", "\(Product.name) \(Product.version)"))

        var text = prompt
        if let negative = p.negativePrompt, !negative.isEmpty { text += "\nNegative prompt: \(negative)" }
        text += "\n" + fields.map { "\($0.0): \(Self.quote($0.1))" }.joined(separator: ", ")
        return text
    }

    /// A1111's sampler name for a KoalaBooth sampler: diffusers' DPM-Solver++ multistep of
    /// order 2 is A1111's "DPM++ 2M" (k-diffusion `sample_dpmpp_2m`), Euler without churn is
    /// "Euler", DDIM is "DDIM". Orders 1 and 3 have no A1111 sampler; they are named alike.
    static func samplerName(_ kind: SchedulerKind, _ config: SchedulerConfig) -> String {
        switch kind {
        case .dpmSolverPlusPlus: return "DPM++ \(config.solverOrder)M"
        case .euler: return "Euler"
        case .ddim: return "DDIM"
        }
    }

    /// A1111's schedule type for the timesteps diffusers draws: Karras sigmas are "Karras";
    /// `trailing` (t = 999, 999 − 1000/n, …) is A1111's and ComfyUI's "SGM Uniform";
    /// `linspace` (t evenly from 999 to 0) is "Uniform"; `leading` (every 1000/n-th timestep
    /// from 0, plus `steps_offset`) is A1111's "DDIM" schedule (ComfyUI's `ddim_uniform`).
    static func scheduleType(_ config: SchedulerConfig) -> String {
        if config.useKarrasSigmas { return "Karras" }
        switch config.timestepSpacing {
        case .trailing: return "SGM Uniform"
        case .linspace: return "Uniform"
        case .leading: return "DDIM"
        }
    }

    /// A value as A1111's `quote` writes it: unchanged unless it holds `,`, `:` or a line
    /// break, else a JSON string as Python's `json.dumps(ensure_ascii=False)` writes it
    /// (non-ASCII characters kept; JSONEncoder escapes the same characters the same way,
    /// once `/` is left alone).
    static func quote(_ value: String) -> String {
        guard value.contains(where: { $0 == "," || $0 == ":" || $0 == "\n" }) else { return value }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        // Encoding a String cannot fail.
        return String(decoding: try! encoder.encode(value), as: UTF8.self)
    }

    /// A name without the characters that would break a `<lora:…>` tag or a `Lora hashes`
    /// entry (A1111 drops `:` and `,` from the names it hashes).
    static func bare(_ name: String) -> String {
        String(name.filter { !":,<>".contains($0) })
    }

    /// A strength as a prompt writes it: 1, 0.8.
    static func number(_ x: Float) -> String {
        x == x.rounded() && abs(x) < 1e7 ? "\(Int(x))" : "\(x)"
    }

    /// A1111's short hash of a LoRA file: the `sshs_model_hash` its trainer stored in the
    /// safetensors metadata when there is one, else the SHA-256 of the tensor data after the
    /// header (kohya's "addnet" hash, which metadata edits do not change); 12 hex digits.
    static func shortHash(ofLoRA path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        if let stored = (try? SafeTensorsFile(path: path))?.metadata["sshs_model_hash"], stored.count >= 12 {
            return String(stored.prefix(12)).lowercased()
        }
        guard let head = try? handle.read(upToCount: 8), head.count == 8 else { return nil }
        let headerLength = head.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        guard headerLength < UInt64(Int.max - 8), (try? handle.seek(toOffset: 8 + headerLength)) != nil else { return nil }
        var sha = SHA256()
        while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty { sha.update(chunk) }
        return String(sha.finalize().prefix(6).map { String(format: "%02x", $0) }.joined())
    }
}
