import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTraining

/// Whole-model cases: the KOALA-700M U-Net at 512 px (forward, LoRA training step, full
/// training step with 8-bit Adam, with and without gradient checkpointing; the
/// checkpointed full step also at 1024 px) and text-to-image with the tiny and KOALA-700M pipelines. Each runs
/// in a child process (peak RSS per case); tools/bench/torch_ops.py builds the same
/// models in diffusers.
enum ModelBench {
    /// KOALA-700M U-Net forward at 512 px (64×64 latent), batch 1, counted with torch's
    /// FlopCounterMode (/work/shared/REFERENCE.md).
    static let unetForwardFlops = 623e9

    static var cases: [BenchCase] {
        let unet = "unet koala-700m 512"
        return [
            // Median of 3 runs: one run of a 5-10 s case varied by 10-15% on this VM.
            BenchCase(name: "\(unet) forward", flops: unetForwardFlops, group: "unet", minTime: 60, maxRuns: 3,
                      isolated: true) {
                let (m, inputs) = unetAndInputs()
                return { _ = noGrad { m(inputs) } }
            },
            loraStep("\(unet) lora-step"),
            fullStep("\(unet) full-step", size: 512, checkpointing: false),
            fullStep("\(unet) full-step checkpointed", size: 512, checkpointing: true),
            // ~10 GB+ and minutes a step: only on request (`just bench koala1024`), no warm-up.
            fullStep("unet koala-700m 1024 full-step checkpointed", size: 1024, checkpointing: true, group: "koala1024",
                     warmup: false),
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

    /// KOALA-700M U-Net forward at 1024 px (128×128 latent), batch 1 (REFERENCE.md).
    static let unetForwardFlops1024 = 2702e9

    /// What recipes/koala-700m-lora-cpu.toml trains, one step: LoRA rank 8, alpha 8 on
    /// the attention projections (to_q/k/v/out.0), forward + MSE + backward (input
    /// gradients through the frozen layers after the first adapter, adapter weight
    /// gradients), gradient clipping at norm 1 and a float32 AdamW step (lr 1e-4, weight
    /// decay 1e-4) on the adapters. Counted as 2× the forward: the adapters add < 1%.
    static func loraStep(_ name: String) -> BenchCase {
        BenchCase(name: name, flops: 2 * unetForwardFlops, group: "unet", minTime: 60, maxRuns: 3, isolated: true) {
            let (m, inputs) = unetAndInputs(size: 512)
            let lora = try! LoRANetwork(attachingTo: m, component: "unet",
                                        config: LoRAConfig(rank: 8, alpha: 8, targetModules: LoRAConfig.attentionTargets), seed: 0)
            let params = lora.parameters
            let optimizer = AdamW(learningRate: 1e-4, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 1e-4)
            return {
                trainingStep(m, inputs, params, "lora-step") {
                    GradientClipping.clipGradNorm(params, maxNorm: 1)
                    optimizer.step(params)
                    optimizer.zeroGrad(params)
                }
            }
        }
    }

    /// Full fine-tuning as the KOALA paper's DreamBooth recipe: every weight trainable,
    /// forward + MSE + backward with weight gradients, then a bitsandbytes-style 8-bit
    /// Adam step (lr 5e-5) over all 782M parameters. Counted as 3× the forward (the
    /// optimizer's few FLOPs per weight are left out); the checkpointed variant
    /// recomputes each block's forward during the backward, which shows as a lower rate.
    static func fullStep(_ name: String, size: Int, checkpointing: Bool, group: String = "unet",
                         warmup: Bool = true) -> BenchCase {
        let forward = size == 1024 ? unetForwardFlops1024 : unetForwardFlops
        precondition(size == 512 || size == 1024, "fullStep: FLOPs are known for 512 and 1024 px only")
        return BenchCase(name: name, flops: 3 * forward, group: group, warmup: warmup, minTime: 0, maxRuns: 1,
                         isolated: true) {
            let (m, inputs) = unetAndInputs(size: size)
            m.gradientCheckpointing = checkpointing
            m.setRequiresGrad(true)
            let params = m.namedParameters().map(\.1)
            let optimizer = Adam8bit(learningRate: 5e-5)
            return {
                trainingStep(m, inputs, params, "full-step") {
                    optimizer.step(params)
                    optimizer.zeroGrad(params)
                }
            }
        }
    }

    /// One training step: forward, MSE, backward (asserting a finite loss and a gradient
    /// on every trained tensor), then `update`. Tells where its time went on stderr, so
    /// it shows beside the results.
    static func trainingStep(_ m: UNet2DConditionModel, _ inputs: UNetInputs, _ params: [Tensor], _ name: String,
                             update: () -> Void) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let loss = m(inputs).mseLoss(inputs.target)
        loss.backward()
        precondition(loss.item.isFinite && params.allSatisfy { $0.grad != nil }, "\(name): no finite loss or no gradient")
        let t1 = DispatchTime.now().uptimeNanoseconds
        update()
        let t2 = DispatchTime.now().uptimeNanoseconds
        FileHandle.standardError.write(Data(String(format: "    (forward+backward %.2f s, optimizer %.2f s)\n",
                                                   Double(t1 - t0) / 1e9, Double(t2 - t1) / 1e9).utf8))
    }

    struct UNetInputs {
        let sample, encoderHiddenStates, textEmbeds, timeIds, target: Tensor
    }

    /// The KOALA-700M U-Net with placeholder weights and SDXL inputs for a `size` px
    /// square image (latent `size / 8`).
    static func unetAndInputs(size: Int = 512) -> (UNet2DConditionModel, UNetInputs) {
        let config = UNet2DConditionConfig.koala700M
        let m = UNet2DConditionModel(config: config, init: .uninitialized())
        fillPlaceholderWeights(m)
        var g = RandomGenerator(seed: 0)
        let l = size / 8, s = Float(size)
        let inputs = UNetInputs(sample: Tensor.randn([1, 4, l, l], generator: &g),
                                encoderHiddenStates: Tensor.randn([1, 77, 2048], generator: &g),
                                textEmbeds: Tensor.randn([1, 1280], generator: &g),
                                timeIds: Tensor(shape: [1, 6], values: [s, s, 0, 0, s, s]),
                                target: Tensor.randn([1, 4, l, l], generator: &g))
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
