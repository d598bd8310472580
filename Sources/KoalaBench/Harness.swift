import Foundation

/// One benchmark: `prepare` builds inputs once and returns the timed closure.
/// `flops` is the work of one run (nil where a FLOP count is not meaningful).
/// The name is the key shared with tools/bench/torch_ops.py.
struct BenchCase {
    let name: String
    let flops: Double?
    let prepare: () -> () -> Void
}

struct BenchResult: Codable {
    let name: String
    let seconds: Double
    let gflops: Double?
    let torchSeconds: Double?
    var ratio: Double? { torchSeconds.map { seconds / $0 } }
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}

enum Harness {
    /// Median of runs after one warm-up, running until `minTime` seconds or `maxRuns`.
    static func time(_ body: () -> Void, minTime: Double = 1.0, maxRuns: Int = 10) -> Double {
        body()
        var samples: [Double] = []
        let start = DispatchTime.now().uptimeNanoseconds
        repeat {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        } while samples.count < maxRuns && Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < minTime
        samples.sort()
        return samples[samples.count / 2]
    }

    /// Times the same cases in PyTorch (tools/bench/torch_ops.py), or explains why not.
    static func torchTimes(_ names: [String]) -> [String: Double] {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("tools/bench/torch_ops.py").path
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["KB_PYTHON"], env["HOME"].map { "\($0)/.cache/koalabooth-refenv/bin/python" }, "/usr/bin/python3"]
        guard let python = candidates.compactMap({ $0 }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("PyTorch comparison skipped: no python found (set KB_PYTHON)")
            return [:]
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [script] + names
        let out = Pipe()
        p.standardOutput = out
        do { try p.run() } catch {
            print("PyTorch comparison skipped: cannot run \(python): \(error)")
            return [:]
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let json = try? JSONSerialization.jsonObject(with: data) as? [String: Double] else {
            print("PyTorch comparison skipped: \(python) has no torch (install it: just fixtures makes the reference environment)")
            return [:]
        }
        return json
    }

    static func run(_ cases: [BenchCase], filter: String?, json: Bool) {
        let selected = cases.filter { c in filter.map { c.name.contains($0) } ?? true }
        var results: [BenchResult] = []
        for c in selected {
            let body = c.prepare()
            let s = time(body)
            results.append(BenchResult(name: c.name, seconds: s, gflops: c.flops.map { $0 / s / 1e9 }, torchSeconds: nil))
            if !json { print("  " + pad(c.name, 44) + String(format: "%9.4f s", s)) }
        }
        let torch = torchTimes(selected.map(\.name))
        results = results.map { BenchResult(name: $0.name, seconds: $0.seconds, gflops: $0.gflops, torchSeconds: torch[$0.name]) }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try! enc.encode(results), as: UTF8.self))
            return
        }
        print("")
        print(pad("benchmark", 44) + ["KoalaBooth", "GFLOP/s", "PyTorch", "GFLOP/s", "ratio"].map { pad($0, 11, right: true) }.joined())
        for r in results {
            let cflops = selected.first { $0.name == r.name }?.flops
            var tg = "-"
            if let t = r.torchSeconds, let f = cflops { tg = String(format: "%.1f", f / t / 1e9) }
            let cells = [String(format: "%.4fs", r.seconds), r.gflops.map { String(format: "%.1f", $0) } ?? "-",
                         r.torchSeconds.map { String(format: "%.4fs", $0) } ?? "-", tg,
                         r.ratio.map { String(format: "%.2fx", $0) } ?? "-"]
            print(pad(r.name, 44) + cells.map { pad($0, 11, right: true) }.joined())
        }
        print("ratio = KoalaBooth time / PyTorch time (lower is better; < 1 means KoalaBooth is faster)")
    }
}
