import CKernels
import Foundation

/// The vector instruction sets this process may use, detected once at start (cpuid for
/// the CPU, xgetbv for what the OS saves, Linux's AMX permission) and lowered, never
/// raised, by `KOALABOOTH_ISA` for tests and A/B comparisons.
public struct CPUFeatures: Sendable, Equatable, CustomStringConvertible {
    /// Kernel levels, each including the ones below it.
    public enum ISA: Int, Comparable, CaseIterable, Sendable, CustomStringConvertible {
        /// Below AVX2+FMA: nothing KoalaBooth tunes for (its C kernels assume AVX2).
        case generic
        case avx2
        /// AVX-512 F/CD/BW/DQ/VL: oneDNN's `avx512_core`.
        case avx512
        /// AVX-512 plus the bf16 dot product `vdpbf16ps`.
        case avx512_bf16
        /// AMX tiles with bf16 (Intel Sapphire Rapids and later).
        case amx

        public static func < (a: ISA, b: ISA) -> Bool { a.rawValue < b.rawValue }
        public var description: String { Self.names[rawValue] }
        static let names = ["generic", "avx2", "avx512", "avx512_bf16", "amx"]
        /// Parses a `KOALABOOTH_ISA` value.
        public init?(name: String) {
            guard let i = Self.names.firstIndex(of: name.lowercased()) else { return nil }
            self.init(rawValue: i)
        }
    }

    /// The environment variable that lowers the ISA.
    public static let environmentKey = "KOALABOOTH_ISA"

    /// The highest level the CPU and OS support.
    public let hardware: ISA
    /// The level kernels use: `hardware`, or lower when `KOALABOOTH_ISA` asks.
    public let isa: ISA
    /// Extensions beside the levels (for reports): `avx512_vnni`, `avx512_fp16`, ...
    public let extras: [String]
    /// Set when `KOALABOOTH_ISA` asked for more than the hardware has (it was ignored above `hardware`).
    public let note: String?

    public var hasAVX512: Bool { isa >= .avx512 }
    public var hasBF16: Bool { isa >= .avx512_bf16 }

    /// What this process uses. An invalid `KOALABOOTH_ISA` stops the program with a
    /// message naming the accepted values: silently ignoring it would make an A/B
    /// comparison measure the same thing twice.
    public static let current: CPUFeatures = {
        do {
            return try CPUFeatures(bits: kb_cpu_features(), environment: ProcessInfo.processInfo.environment)
        } catch {
            Diagnostics.logger.critical("\(error)")
            exit(2)
        }
    }()

    public struct InvalidISA: Error, CustomStringConvertible {
        public let value: String
        public var description: String {
            "\(CPUFeatures.environmentKey)=\(value) is not one of \(ISA.names.dropFirst().joined(separator: ", ")); set one of them or unset it"
        }
    }

    /// From `kb_cpu_features()` bits and an environment (tests pass their own).
    public init(bits: UInt32, environment: [String: String]) throws {
        func has(_ flag: Int) -> Bool { bits & UInt32(flag) != 0 }
        var hw = ISA.generic
        if has(KB_CPU_AVX2) { hw = .avx2 }
        if hw == .avx2 && has(KB_CPU_AVX512) { hw = .avx512 }
        if hw == .avx512 && has(KB_CPU_AVX512_BF16) { hw = .avx512_bf16 }
        if hw == .avx512_bf16 && has(KB_CPU_AMX_BF16) { hw = .amx }
        hardware = hw
        var extras: [String] = []
        if has(KB_CPU_AVX512_VNNI) { extras.append("avx512_vnni") }
        if has(KB_CPU_AVX512_FP16) { extras.append("avx512_fp16") }
        if has(KB_CPU_AMX_DENIED) { extras.append("amx (refused by the OS: ARCH_REQ_XCOMP_PERM)") }
        self.extras = extras
        if let raw = environment[Self.environmentKey], !raw.isEmpty {
            guard let asked = ISA(name: raw), asked != .generic else { throw InvalidISA(value: raw) }
            isa = min(asked, hw)
            note = asked > hw ? "\(Self.environmentKey)=\(raw) asks for more than this CPU has" : nil
        } else {
            isa = hw
            note = nil
        }
    }

    /// One line, e.g. `avx512_bf16 (cpu: avx512_bf16 + avx512_vnni, avx512_fp16)` or, lowered,
    /// `avx2 (cpu: avx512_bf16 ...; lowered by KOALABOOTH_ISA)`.
    public var description: String {
        var cpu = hardware.description
        if !extras.isEmpty { cpu += " + " + extras.joined(separator: ", ") }
        var s = "\(isa) (cpu: \(cpu)"
        if isa < hardware { s += "; lowered by \(Self.environmentKey)" }
        if let note { s += "; \(note)" }
        return s + ")"
    }
}
