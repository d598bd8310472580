// U-Net forward / training-step timing outside the package (KoalaBench links only
// KoalaTensor). Build and run from the repository root:
//   swift build -c release --target KoalaModels
//   B=.build/release; swiftc -O tools/bench/unet_bench.swift -I $B/Modules \
//     -Xcc -fmodule-map-file=Sources/COpenBLAS/module.modulemap -Xcc -fmodule-map-file=$B/CKernels.build/module.modulemap \
//     $B/KoalaTensor.build/*.o $B/KoalaModels.build/*.o $B/CKernels.build/math.c.o -lopenblas -o /tmp/unet_bench
//   /tmp/unet_bench PRESET LATENT REPS [forward|train|train-ckpt|frozen|frozen-ckpt]
// e.g. `/tmp/unet_bench koala-700m 64 3` times three 512 px forwards.
import Foundation
import KoalaTensor
import KoalaModels

let name = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "koala-700m"
let size = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2])! : 64
let reps = CommandLine.arguments.count > 3 ? Int(CommandLine.arguments[3])! : 3
let mode = CommandLine.arguments.count > 4 ? CommandLine.arguments[4] : "forward"
let cfg = try UNet2DConditionConfig.preset(name)
var t0 = Date()
let m = UNet2DConditionModel(config: cfg, init: ParameterInitializer(seed: 1))
print("built \(name) (\(m.parameterCount) params) in \(Date().timeIntervalSince(t0)) s")
guard case .one(let cross) = cfg.crossAttentionDim else { fatalError() }
var g = RandomGenerator(seed: 1)
let pooled = cfg.projectionClassEmbeddingsInputDim! - 6 * cfg.additionTimeEmbedDim!
let sample = Tensor.randn([1, 4, size, size], generator: &g)
let ehs = Tensor.randn([1, 77, cross], generator: &g)
let te = Tensor.randn([1, pooled], generator: &g)
let px = Float(size * 8)
let ids = Tensor(shape: [1, 6], values: [px, px, 0, 0, px, px])
func cpuSeconds() -> Double {
    var u = rusage(); getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
}
for r in 0..<reps {
    t0 = Date()
    let c0 = cpuSeconds()
    let out = noGrad { m(sample: sample, timestep: [500], encoderHiddenStates: ehs, textEmbeds: te, timeIds: ids) }
    print("forward \(r): \(String(format: "%.3f", Date().timeIntervalSince(t0))) s wall, \(String(format: "%.2f", cpuSeconds() - c0)) s cpu, out \(out.shape) mean|x| \(out.toArray().map(abs).reduce(0, +) / Float(out.count))")
}

func rssMiB() -> Int {
    let s = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = s.split(separator: "\n").first { $0.hasPrefix("VmHWM") } ?? ""
    return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
}
if mode != "forward" {
    m.gradientCheckpointing = mode.hasSuffix("ckpt")
    m.setRequiresGrad(!mode.hasPrefix("frozen"))
    sample.requiresGrad = mode.hasPrefix("frozen")
    print("peak RSS before training: \(rssMiB()) MiB")
    for r in 0..<reps {
        t0 = Date()
        let c0 = cpuSeconds()
        let out = m(sample: sample, timestep: [500], encoderHiddenStates: ehs, textEmbeds: te, timeIds: ids)
        let t1 = Date()
        out.mseLoss(Tensor.zeros(out.shape)).backward()
        print("\(mode) step \(r): forward \(String(format: "%.2f", t1.timeIntervalSince(t0))) s, total \(String(format: "%.2f", Date().timeIntervalSince(t0))) s wall, \(String(format: "%.2f", cpuSeconds() - c0)) s cpu, peak RSS \(rssMiB()) MiB")
        for (_, p) in m.namedParameters() { p.grad = nil }
    }
}
