import Foundation
import KoalaTensor

/// One benchmark: `prepare` builds inputs once and returns the timed closure.
/// `flops` is the work of one run (nil where a FLOP count is not meaningful).
/// The name is the key shared with tools/bench/torch_ops.py.
struct BenchCase {
    let name: String
    let flops: Double?
    /// Selection group (see main.swift's usage): a filter equal to a group name runs
    /// that group; cases outside `Harness.defaultGroups` run only when asked for.
    var group = "kernels"
    /// One untimed run first (page faults, allocator growth, lazy set-up).
    var warmup = true
    /// Timed runs continue until `minTime` seconds have passed or `maxRuns` are done;
    /// the median is reported. Model cases take seconds to minutes a run: one run.
    var minTime = 1.0
    var maxRuns = 10
    /// Run in a child process of its own, so its peak RSS (ru_maxrss) is the case's and
    /// a model's memory is returned before the next case.
    var isolated = false
    let prepare: () -> () -> Void

    init(name: String, flops: Double?, group: String = "kernels", warmup: Bool = true, minTime: Double = 1.0,
         maxRuns: Int = 10, isolated: Bool = false, prepare: @escaping () -> () -> Void) {
        self.name = name; self.flops = flops; self.group = group; self.warmup = warmup
        self.minTime = minTime; self.maxRuns = maxRuns; self.isolated = isolated; self.prepare = prepare
    }
}

struct BenchResult: Encodable {
    let name: String
    let seconds: Double
    let gflops: Double?
    /// Peak resident memory of the process that ran the case (isolated cases only).
    var peakRSSMiB: Double?
    var torchSeconds: Double? { didSet { ratio = torchSeconds.map { seconds / $0 } } }
    var torchGflops: Double?
    var torchPeakRSSMiB: Double?
    /// KoalaBooth's time over PyTorch's (stored, so that the JSON carries it).
    private(set) var ratio: Double?
}

/// `--json` output: the machine's state around the run and the results.
struct BenchReport: Encodable {
    let threads: Int
    /// /proc/loadavg's 1, 5 and 15 minute averages before the first case and after the
    /// last: other work on the machine inflates every time, both sides alike.
    let loadBefore: [Double]
    let loadAfter: [Double]
    let results: [BenchResult]
}

/// The 1, 5 and 15 minute load averages (empty where /proc/loadavg is missing).
func loadAverage() -> [Double] {
    guard let s = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return [] }
    return s.split(separator: " ").prefix(3).compactMap { Double($0) }
}

/// What a child process (`KoalaBench --case NAME`, `torch_ops.py --isolated NAME`)
/// prints: one case's time and its process's peak RSS.
struct IsolatedResult: Codable {
    let seconds: Double
    let peakRSSMiB: Double
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}

/// ru_maxrss of this process in MiB (Linux reports KiB).
func peakRSSMiB() -> Double {
    var u = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    return Double(u.ru_maxrss) / 1024
}

/// The repository root (for tools/bench and the .build-bench cache), from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

enum Harness {
    /// Groups that run when no filter is given.
    static let defaultGroups: Set<String> = ["kernels", "tiny"]
    /// Groups too heavy for a shared machine: they run only when the filter is the group
    /// name or the case's full name, never through `all` or a partial name.
    static let onRequestGroups: Set<String> = ["koala1024", "vae2048"]

    /// The cases a command-line filter selects: none → the default groups; a group name
    /// → that group; `all` → every case outside `onRequestGroups`; anything else → every
    /// case whose name contains it (on-request cases only by their full name).
    static func select(_ cases: [BenchCase], filter: String?) -> [BenchCase] {
        guard let filter else { return cases.filter { defaultGroups.contains($0.group) } }
        if cases.contains(where: { $0.group == filter }) { return cases.filter { $0.group == filter } }
        if filter == "all" { return cases.filter { !onRequestGroups.contains($0.group) } }
        return cases.filter { $0.name == filter || (!onRequestGroups.contains($0.group) && $0.name.contains(filter)) }
    }

    /// Median of the timed runs (see `BenchCase` for warm-up, `minTime`, `maxRuns`).
    static func time(_ body: () -> Void, warmup: Bool = true, minTime: Double = 1.0, maxRuns: Int = 10) -> Double {
        if warmup { body() }
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

    static func time(_ c: BenchCase) -> Double {
        time(c.prepare(), warmup: c.warmup, minTime: c.minTime, maxRuns: c.maxRuns)
    }

    /// Runs `executable arguments`, returning its standard output (stderr passes through
    /// so progress shows) or nil with a reason when it fails.
    static func capture(_ executable: String, _ arguments: [String]) -> (Data?, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        do { try p.run() } catch { return (nil, "cannot run \(executable): \(error)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            return (nil, "\(executable) \(arguments.joined(separator: " ")) exited with status \(p.terminationStatus)")
        }
        return (data, "")
    }

    /// This case in a child KoalaBench (`--case NAME`), so ru_maxrss is per case.
    static func runIsolated(_ c: BenchCase) -> BenchResult? {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let (data, why) = capture(me, ["--case", c.name])
        guard let data, let r = try? JSONDecoder().decode(IsolatedResult.self, from: data) else {
            FileHandle.standardError.write(Data("  \(c.name): failed (\(why))\n".utf8))
            return nil
        }
        return BenchResult(name: c.name, seconds: r.seconds, gflops: c.flops.map { $0 / r.seconds / 1e9 }, peakRSSMiB: r.peakRSSMiB)
    }

    /// Child side of `runIsolated`: times one case and prints an `IsolatedResult`.
    static func runChild(_ cases: [BenchCase], name: String) {
        guard let c = cases.first(where: { $0.name == name }) else {
            FileHandle.standardError.write(Data("no benchmark named \"\(name)\"\n".utf8))
            exit(2)
        }
        let s = time(c)
        print(String(decoding: try! JSONEncoder().encode(IsolatedResult(seconds: s, peakRSSMiB: peakRSSMiB())), as: UTF8.self))
    }

    static var python: String? {
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["KB_PYTHON"], env["HOME"].map { "\($0)/.cache/koalabooth-refenv/bin/python" }, "/usr/bin/python3"]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static let torchScript = repositoryRoot.appendingPathComponent("tools/bench/torch_ops.py").path

    /// Times the shared (non-isolated) cases in PyTorch in one process, or explains why not.
    static func torchTimes(_ names: [String]) -> [String: Double] {
        guard !names.isEmpty else { return [:] }
        guard let python else {
            print("PyTorch comparison skipped: no python found (set KB_PYTHON)")
            return [:]
        }
        let (data, why) = capture(python, [torchScript] + names)
        guard let data, let json = try? JSONSerialization.jsonObject(with: data) as? [String: Double] else {
            print("PyTorch comparison skipped: \(why.isEmpty ? "\(python) has no torch (install it: just fixtures makes the reference environment)" : why)")
            return [:]
        }
        return json
    }

    /// One isolated case in its own PyTorch process, with the same run settings.
    static func torchIsolated(_ c: BenchCase) -> IsolatedResult? {
        guard let python else { return nil }
        let (data, why) = capture(python, [torchScript, "--isolated", "--warmup", c.warmup ? "1" : "0",
                                           "--min-time", "\(c.minTime)", "--max-runs", "\(c.maxRuns)", c.name])
        guard let data else {
            FileHandle.standardError.write(Data("  PyTorch \(c.name): failed (\(why))\n".utf8))
            return nil
        }
        return try? JSONDecoder().decode(IsolatedResult.self, from: data)
    }

    static func run(_ cases: [BenchCase], filter: String?, json: Bool) {
        let selected = select(cases, filter: filter)
        let loadBefore = loadAverage()
        if selected.isEmpty { print("no benchmark matches \"\(filter ?? "")\" (try --help)") }
        var results: [BenchResult] = []
        func show(_ who: String, _ name: String, _ s: Double, _ rss: Double?) {
            guard !json else { return }
            // Unbuffered: model cases take minutes, so show each line as it comes.
            let line = "  " + pad(who, 11) + pad(name, 44) + String(format: "%9.4f s", s)
                + (rss.map { String(format: "  peak RSS %.0f MiB", $0) } ?? "")
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
        }
        for c in selected.filter({ !$0.isolated }) {
            let s = time(c)
            results.append(BenchResult(name: c.name, seconds: s, gflops: c.flops.map { $0 / s / 1e9 }))
            show("KoalaBooth", c.name, s, nil)
        }
        let torch = torchTimes(selected.filter { !$0.isolated }.map(\.name))
        for i in results.indices { results[i].torchSeconds = torch[results[i].name] }
        func torchGflops(_ name: String, _ seconds: Double?) -> Double? {
            guard let seconds, let f = selected.first(where: { $0.name == name })?.flops else { return nil }
            return f / seconds / 1e9
        }
        // Model cases: KoalaBooth then PyTorch, each in a fresh process, one case at a time
        // (so the two never compete for the cores or memory).
        for c in selected where c.isolated {
            guard var r = runIsolated(c) else { continue }
            show("KoalaBooth", c.name, r.seconds, r.peakRSSMiB)
            if let t = torchIsolated(c) {
                r.torchSeconds = t.seconds
                r.torchPeakRSSMiB = t.peakRSSMiB
                show("PyTorch", c.name, t.seconds, t.peakRSSMiB)
            }
            results.append(r)
        }
        for i in results.indices { results[i].torchGflops = torchGflops(results[i].name, results[i].torchSeconds) }
        let loadAfter = loadAverage()
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            let report = BenchReport(threads: Parallel.threads, loadBefore: loadBefore, loadAfter: loadAfter, results: results)
            print(String(decoding: try! enc.encode(report), as: UTF8.self))
            return
        }
        print("")
        let headers = ["KoalaBooth", "GFLOP/s", "PyTorch", "GFLOP/s", "ratio", "RSS MiB", "torch RSS"]
        print(pad("benchmark", 44) + headers.map { pad($0, 11, right: true) }.joined())
        for r in results {
            let cells = [String(format: "%.4fs", r.seconds), r.gflops.map { String(format: "%.1f", $0) } ?? "-",
                         r.torchSeconds.map { String(format: "%.4fs", $0) } ?? "-",
                         r.torchGflops.map { String(format: "%.1f", $0) } ?? "-",
                         r.ratio.map { String(format: "%.2fx", $0) } ?? "-",
                         r.peakRSSMiB.map { String(format: "%.0f", $0) } ?? "-",
                         r.torchPeakRSSMiB.map { String(format: "%.0f", $0) } ?? "-"]
            print(pad(r.name, 44) + cells.map { pad($0, 11, right: true) }.joined())
        }
        print("ratio = KoalaBooth time / PyTorch time (lower is better; < 1 means KoalaBooth is faster)")
        let fmt = { (l: [Double]) in l.map { String(format: "%.2f", $0) }.joined(separator: " ") }
        print("load average (1/5/15 min): \(fmt(loadBefore)) before, \(fmt(loadAfter)) after")
        if results.contains(where: { $0.peakRSSMiB != nil }) {
            print("RSS = peak resident memory of the child process that ran the case (model and inputs included)")
        }
    }
}
