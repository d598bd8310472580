import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

/// Whole-model cases: the KOALA-700M U-Net at 512 px (forward, frozen-base step, full
/// training step) and text-to-image with the tiny and KOALA-700M pipelines. Each runs
/// in a child process (peak RSS per case); tools/bench/torch_ops.py builds the same
/// models in diffusers.
enum ModelBench {
    /// KOALA-700M U-Net forward at 512 px (64×64 latent), batch 1, counted with torch's
    /// FlopCounterMode (/work/shared/REFERENCE.md).
    static let unetForwardFlops = 623e9

    static var cases: [BenchCase] {
        let unet = "unet koala-700m 512"
        return [
            BenchCase(name: "\(unet) forward", flops: unetForwardFlops, group: "unet", minTime: 0, maxRuns: 1,
                      isolated: true) {
                let (m, inputs) = unetAndInputs()
                return { _ = noGrad { m(inputs) } }
            },
            // Frozen base (DreamBooth with LoRA): the backward pass carries gradients
            // through every layer to the input but computes no weight gradients, about
            // one more forward's work.
            BenchCase(name: "\(unet) lora-step", flops: 2 * unetForwardFlops, group: "unet", minTime: 0, maxRuns: 1,
                      isolated: true) {
                let (m, inputs) = unetAndInputs()
                m.setRequiresGrad(false)
                inputs.sample.requiresGrad = true
                return {
                    inputs.sample.grad = nil
                    m(inputs).mseLoss(inputs.target).backward()
                    precondition(inputs.sample.grad != nil, "lora-step: no gradient reached the sample")
                }
            },
            fullStep("\(unet) full-step", checkpointing: false),
            fullStep("\(unet) full-step checkpointed", checkpointing: true),
            BenchCase(name: "generate tiny 64px 25 steps cfg", flops: nil, group: "tiny", isolated: true) {
                generate(preset: "tiny", dtype: .F32, size: 64)
            },
            // Minutes a run: one run, no warm-up.
            BenchCase(name: "generate koala-700m 512 25 steps cfg", flops: nil, group: "koala", warmup: false,
                      minTime: 0, maxRuns: 1, isolated: true) {
                generate(preset: "koala-700m", dtype: .F16, size: 512)
            },
        ]
    }

    /// All weights trainable: forward and backward with weight gradients (about 3× the
    /// forward). The checkpointed variant recomputes each block's forward during the
    /// backward; its GFLOP/s counts the same model work, so the recomputation shows as a
    /// lower rate.
    static func fullStep(_ name: String, checkpointing: Bool) -> BenchCase {
        BenchCase(name: name, flops: 3 * unetForwardFlops, group: "unet", minTime: 0, maxRuns: 1, isolated: true) {
            let (m, inputs) = unetAndInputs()
            m.gradientCheckpointing = checkpointing
            m.setRequiresGrad(true)
            let params = m.namedParameters().map(\.1)
            return {
                for p in params { p.grad = nil }
                m(inputs).mseLoss(inputs.target).backward()
                precondition(params.allSatisfy { $0.grad != nil }, "full-step: a weight got no gradient")
            }
        }
    }

    struct UNetInputs {
        let sample, encoderHiddenStates, textEmbeds, timeIds, target: Tensor
    }

    /// The KOALA-700M U-Net with placeholder weights and 512 px SDXL inputs.
    static func unetAndInputs() -> (UNet2DConditionModel, UNetInputs) {
        let config = UNet2DConditionConfig.koala700M
        let m = UNet2DConditionModel(config: config, init: .uninitialized())
        fillPlaceholderWeights(m)
        var g = RandomGenerator(seed: 0)
        let inputs = UNetInputs(sample: Tensor.randn([1, 4, 64, 64], generator: &g),
                                encoderHiddenStates: Tensor.randn([1, 77, 2048], generator: &g),
                                textEmbeds: Tensor.randn([1, 1280], generator: &g),
                                timeIds: Tensor(shape: [1, 6], values: [512, 512, 0, 0, 512, 512]),
                                target: Tensor.randn([1, 4, 64, 64], generator: &g))
        return (m, inputs)
    }

    /// Fills every parameter with a cheap hash pattern at PyTorch's default scale
    /// (uniform ±1/√fan_in; norm weights 1): seeded random initialisation of 782M
    /// parameters takes ~15 s on one core, and the values only need to keep activations
    /// finite and out of the denormal range.
    static func fillPlaceholderWeights(_ module: any Module) {
        for (k, (name, p)) in module.namedParameters().enumerated() {
            let ptr = p.data, n = p.count
            if p.rank == 1, name.contains("norm"), name.hasSuffix(".weight") {
                ptr.update(repeating: 1, count: n)
                continue
            }
            let scale = p.rank >= 2 ? 1 / Float(n / p.shape[0]).squareRoot() : 0.01
            let salt = UInt32(truncatingIfNeeded: k &* 0x9E37_79B9)
            Parallel.forEach(n, grain: 1 << 16) { range in
                for i in range {
                    var x = UInt32(truncatingIfNeeded: i) &* 0x85EB_CA6B ^ salt
                    x ^= x >> 13; x = x &* 0xC2B2_AE35; x ^= x >> 16
                    ptr[i] = (Float(x >> 8) * (2 / 16_777_216) - 1) * scale
                }
            }
        }
    }

    /// Folder of a pipeline written by `StableDiffusionXLPipeline.initialize` (seed 0),
    /// shared with torch_ops.py. Created on first use (slow for koala-700m) and reused.
    static func pipelineFolder(_ preset: String, dtype: SafeTensorsDType) -> String {
        repositoryRoot.appendingPathComponent(".build-bench/\(preset)\(dtype == .F16 ? "-fp16" : "")").path
    }

    static func generate(preset: String, dtype: SafeTensorsDType, size: Int) -> () -> Void {
        let path = pipelineFolder(preset, dtype: dtype)
        do {
            if !FileManager.default.fileExists(atPath: path) {
                FileHandle.standardError.write(Data("  creating the \(preset) pipeline at \(path) (once)\n".utf8))
                try FileManager.default.createDirectory(at: URL(fileURLWithPath: path).deletingLastPathComponent(),
                                                        withIntermediateDirectories: true)
                try StableDiffusionXLPipeline.initialize(preset: .named(preset), seed: 0, at: path, dtype: dtype)
            }
            let pipe = try StableDiffusionXLPipeline.load(from: path)
            var p = GenerationParameters(prompt: "a photo of a koala")
            p.steps = 25
            p.guidance = 7.5
            p.width = size
            p.height = size
            return { _ = try! pipe.generate(p) }
        } catch {
            FileHandle.standardError.write(Data("  \(preset) pipeline: \(error)\n".utf8))
            exit(1)
        }
    }
}

extension UNet2DConditionModel {
    fileprivate func callAsFunction(_ x: ModelBench.UNetInputs) -> Tensor {
        self(sample: x.sample, timestep: [500], encoderHiddenStates: x.encoderHiddenStates, textEmbeds: x.textEmbeds,
             timeIds: x.timeIds)
    }
}
