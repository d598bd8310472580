import Foundation
import KoalaTensor

let usage = """
    usage: KoalaBench [--json] [FILTER]     (`just bench [--json] [FILTER]`)

    Times KoalaBooth (release build) beside the same work in PyTorch/diffusers on this
    CPU with the same thread count, in the same run, and prints the ratio.

    FILTER:
      (none)   tensor kernels (sgemm, conv2d, attention) and the tiny-pipeline generate
      unet     KOALA-700M U-Net at 512 px, batch 1: forward; LoRA training step (rank 8 on
               the attention projections, AdamW, as recipes/koala-700m-lora-cpu.toml);
               full training step with 8-bit Adam, with and without gradient
               checkpointing (tens of seconds each, up to ~10 GB)
      koala    text-to-image with the KOALA-700M pipeline, 512 px, 25 steps (minutes; the
               first run writes a ~3 GB fp16 pipeline to .build-bench/koala-700m-fp16)
      koala1024  full training step at 1024 px, 8-bit Adam, gradient checkpointing (minutes
               and ~10-20 GB per side: run it on a quiet machine)
      vae      the SDXL/KOALA VAE decoding one 1024 px image whole and in 512 px tiles
               (random weights; tens of seconds each)
      vae2048  the same at 2048 px (minutes and, whole, ~15 GB: only on request; a decode
               the available memory cannot hold is skipped)
      optimizer  one 8-bit Adam step over KOALA-700M's 782.8M parameters (~8 GB)
      gemm     the U-Net's GEMM shape classes, each through OpenBLAS and oneDNN
      kernels, tiny   that group
      all      every case but koala1024 and vae2048
      TEXT     any case whose name contains TEXT, e.g. "full-step", "sgemm" (koala1024
               and vae2048 only by their group or full name)

    Model cases run in a child process each (KoalaBench --case NAME, and
    tools/bench/torch_ops.py --isolated NAME), so the reported peak RSS is that case's
    process: weights, activations and, for PyTorch, the torch runtime.
    Set KB_PYTHON to choose the Python that has torch and diffusers (and peft and
    bitsandbytes for the training steps). --json prints {threads, loadBefore, loadAfter,
    results: [{name, seconds, gflops, peakRSSMiB, torchSeconds, torchGflops,
    torchPeakRSSMiB, ratio}]}.
    """

var args = Array(CommandLine.arguments.dropFirst())
if args.contains("--help") || args.contains("-h") {
    print(usage)
    exit(0)
}
let cases = GemmBench.cases + ConvBench.cases + AttentionBench.cases + ModelBench.cases
    + OptimizerBench.cases + VAEBench.cases
if let i = args.firstIndex(of: "--case"), i + 1 < args.count {
    Harness.runChild(cases, name: args[i + 1])
    exit(0)
}
let json = args.contains("--json")
args.removeAll { $0 == "--json" }
if !json {
    FileHandle.standardOutput.write(Data("""
        KoalaBooth benchmarks — \(Parallel.threads) threads (Dispatch; GEMMs split over them, each library single-threaded)
        ISA: \(CPUFeatures.current)
        GEMM: \(BLAS.description)

        """.utf8))
}
Harness.run(cases, filter: args.first, json: json)
