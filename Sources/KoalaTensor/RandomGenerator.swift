import Foundation

/// The random source used wherever KoalaBooth draws random numbers.
///
/// A 32-bit Mersenne Twister (MT19937, the engine behind PyTorch's CPU generator),
/// seeded like `std::mt19937(seed)`. Uniform floats take the low 24 bits of one draw
/// (`u = (x & 0xFFFFFF) / 2^24`, in [0, 1)); normals use the Box–Muller transform
/// on two uniforms. A generator is a value: copying it snapshots its state, which is
/// how training saves and restores the RNG for resume.
public struct RandomGenerator: Sendable, Equatable {
    private var state: [UInt32]
    private var index: Int
    public private(set) var seed: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        state = [UInt32](repeating: 0, count: 624)
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            let prev = state[i - 1]
            state[i] = 1_812_433_253 &* (prev ^ (prev >> 30)) &+ UInt32(i)
        }
        index = 624
    }

    public mutating func nextUInt32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var v = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { v ^= 0x9908_B0DF }
            state[i] = v
        }
        index = 0
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Float {
        Float(nextUInt32() & 0xFF_FFFF) * (1.0 / 16_777_216.0)
    }

    /// Standard normal (Box–Muller).
    public mutating func normal() -> Float {
        let u1 = Double(uniform()), u2 = Double(uniform())
        let r = (-2.0 * log(1.0 - u1)).squareRoot()
        return Float(r * cos(2.0 * Double.pi * u2))
    }

    /// Uniform integer in `0..<bound`.
    public mutating func int(below bound: Int) -> Int {
        precondition(bound > 0)
        return Int(UInt64(nextUInt32()) % UInt64(bound))
    }
}

/// So the standard library's random APIs (and `inout some RandomNumberGenerator`
/// parameters such as random crops) draw from the same seeded stream.
extension RandomGenerator: RandomNumberGenerator {
    /// Two 32-bit draws, the first as the high half.
    public mutating func next() -> UInt64 {
        UInt64(nextUInt32()) << 32 | UInt64(nextUInt32())
    }
}

extension Tensor {
    public static func randn(_ shape: [Int], generator: inout RandomGenerator) -> Tensor {
        let t = Tensor(empty: shape)
        for i in 0..<t.count { t.data[i] = generator.normal() }
        return t
    }

    public static func rand(_ shape: [Int], generator: inout RandomGenerator) -> Tensor {
        let t = Tensor(empty: shape)
        for i in 0..<t.count { t.data[i] = generator.uniform() }
        return t
    }
}
