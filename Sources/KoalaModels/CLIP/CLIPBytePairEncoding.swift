import Foundation

extension CLIPTokenizer {
    /// Merges a word's byte symbols, lowest rank first and leftmost on ties, one merge at a
    /// time (as tokenizers' `Word::merge_all`). The candidate pairs sit in a min-heap keyed
    /// by (rank, first position) and symbols in a linked list, so a word of n bytes costs
    /// O(n log n), not the O(n²) of rescanning it after every merge; a heap entry whose
    /// pair has since changed is skipped when it comes up.
    func bpe(_ bytes: [UInt8]) -> [Int32] {
        var work = 0
        return bpe(bytes, work: &work)
    }

    /// `bpe(_:)`, counting in `work` the heap entries it takes out: at most the n − 1
    /// first candidates plus two per merge, so below 3n for any word (the tests hold it to that).
    func bpe(_ bytes: [UInt8], work: inout Int) -> [Int32] {
        let n = bytes.count
        var ids = bytes.indices.map { $0 == n - 1 ? byteEndIDs[Int(bytes[$0])] : byteIDs[Int(bytes[$0])] }
        guard n > 1 else { return ids }
        // next[i] == n: i is the last symbol; alive[i] false: merged into its left neighbour.
        var next = Array(1...n), prev = Array(-1..<(n - 1))
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        func candidate(_ i: Int) {
            let j = next[i]
            guard j < n, let m = merges[Self.pairKey(ids[i], ids[j])] else { return }
            heap.push(UInt64(UInt32(m.rank)) << 32 | UInt64(i))
        }
        for i in 0..<(n - 1) { candidate(i) }
        while let top = heap.pop() {
            work += 1
            let i = Int(top & 0xFFFF_FFFF), rank = Int32(top >> 32)
            guard alive[i], next[i] < n, let m = merges[Self.pairKey(ids[i], ids[next[i]])], m.rank == rank else { continue }
            let j = next[i]
            ids[i] = m.id
            alive[j] = false
            next[i] = next[j]
            if next[j] < n { prev[next[j]] = i }
            if prev[i] >= 0 { candidate(prev[i]) }
            candidate(i)
        }
        var out: [Int32] = []
        var i = 0
        while i < n { out.append(ids[i]); i = next[i] }
        return out
    }

    static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

    // MARK: Byte symbols

    /// GPT-2/CLIP byte-to-unicode table: printable Latin-1 bytes stand for themselves, the
    /// other 68 bytes map to U+0100 onwards, in byte order. Index = byte value.
    static let byteSymbols: [String] = {
        var table = [String](repeating: "", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            table[b] = String(Character(Unicode.Scalar(printable ? UInt32(b) : next)!))
            if !printable { next += 1 }
        }
        return table
    }()

    /// Symbols in CLIP's id order: the printable ranges first, then the remapped bytes.
    static let byteSymbolsInVocabOrder: [String] = {
        let printable = Array(33...126) + Array(161...172) + Array(174...255)
        let others = (0..<256).filter { !printable.contains($0) }
        return (printable + others).map { byteSymbols[$0] }
    }()
}

/// A binary min-heap of packed (rank, position) keys for `bpe`.
private struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ x: UInt64) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= x { break }
            items[i] = items[parent]
            i = parent
        }
        items[i] = x
    }

    mutating func pop() -> UInt64? {
        guard let last = items.popLast() else { return nil }
        guard !items.isEmpty else { return last }
        let top = items[0]
        let n = items.count
        var i = 0
        while true {
            var child = 2 * i + 1
            if child >= n { break }
            if child + 1 < n && items[child + 1] < items[child] { child += 1 }
            if last <= items[child] { break }
            items[i] = items[child]
            i = child
        }
        items[i] = last
        return top
    }
}

/// Word → BPE ids, shared by copies of a tokenizer. Bounded like tokenizers' cache.
final class BPECache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [[UInt8]: [Int32]] = [:]
    private let capacity = 10_000

    func get(_ key: [UInt8]) -> [Int32]? {
        lock.lock(); defer { lock.unlock() }
        return entries[key]
    }

    func set(_ key: [UInt8], _ value: [Int32]) {
        lock.lock(); defer { lock.unlock() }
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        entries[key] = value
    }
}
