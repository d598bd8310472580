import Foundation
import KoalaTensor

// `just bench [--json] [FILTER]`: times tensor-engine kernels (release build) beside
// the same work in PyTorch on this machine.
var args = Array(CommandLine.arguments.dropFirst())
let json = args.contains("--json")
args.removeAll { $0 == "--json" }
if !json { print("KoalaBooth benchmarks — \(Parallel.threads) threads, OpenBLAS \(BLAS.threads) threads") }
Harness.run(GemmBench.cases + ConvBench.cases + AttentionBench.cases, filter: args.first, json: json)
