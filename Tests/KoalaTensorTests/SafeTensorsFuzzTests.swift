import XCTest
import KoalaTestSupport
@testable import KoalaTensor

/// Crafted and mutated safetensors files through the public API: each must open and
/// load correctly or be refused with a `SafeTensorsError` naming the file, never trap.
/// (Tests/KoalaCLITests/CraftedFileCLITests runs the worst of them through the
/// executable, where a signal shows as a failed exit status instead of ending the
/// test process.)
final class SafeTensorsFuzzTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws { dir = try scratchDirectory(self, prefix: "kb-stfuzz").path }

    // MARK: The reported cases, one by one

    func testHeaderLengthOf2To63OrMoreIsAnError() throws {
        for length: UInt64 in [1 << 63, UInt64.max, (1 << 63) + 8] {
            let path = write(SafeTensorsCraft.bytes(headerLength: length, rest: Array("{}".utf8)))
            assertRefused(path, "header length field says \(length) bytes")
        }
    }

    func testShapeWhoseByteCountOverflowsIsAnError() throws {
        // 2^32 · 2^32 · 4 elements · 4 bytes wraps to 0 in Int arithmetic.
        let header = #"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}}"#
        assertRefused(write(SafeTensorsCraft.file(header: header, data: 0)), "would need more than")
        // Wraps to 16: a plausible byte count for the 16 bytes present.
        let wraps = #"{"x":{"dtype":"F32","shape":[4611686018427387905,4],"data_offsets":[0,16]}}"#
        assertRefused(write(SafeTensorsCraft.file(header: wraps, data: 16)), "would need more than")
    }

    func testOverlappingOrGappedOffsetsAreAnError() throws {
        let overlap = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        assertRefused(write(SafeTensorsCraft.file(header: overlap, data: 12)), "overlaps")
        let same = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        assertRefused(write(SafeTensorsCraft.file(header: same, data: 8)), "overlaps")
        let gap = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        assertRefused(write(SafeTensorsCraft.file(header: gap, data: 8)), "gap")
        let trailing = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        assertRefused(write(SafeTensorsCraft.file(header: trailing, data: 8)), "data section holds 8 bytes")
    }

    func testNonIntegerShapesAndOffsetsAreErrors() throws {
        for shape in ["[1.5]", "[1e30]", "[99999999999999999999]", "[\"2\"]", "2", "[-1]"] {
            let header = #"{"x":{"dtype":"F32","shape":"# + shape + #","data_offsets":[0,8]}}"#
            assertRefused(write(SafeTensorsCraft.file(header: header, data: 8)), "shape")
        }
        for offsets in ["[0]", "[0,8,9]", "[0.5,8]", "[-8,0]", "[0,18446744073709551616]"] {
            let header = #"{"x":{"dtype":"F32","shape":[2],"data_offsets":"# + offsets + "}}"
            assertRefused(write(SafeTensorsCraft.file(header: header, data: 8)), "offsets")
        }
    }

    func testFIFOAndDeviceAreRefusedWithoutBlocking() throws {
        let fifo = "\(dir!)/pipe.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        // Code that opens the FIFO for reading blocks until a writer comes: this writer
        // comes after a few seconds, so such code fails the assertion instead of hanging.
        let unblock = FIFOUnblocker(path: fifo)
        defer { unblock.stop() }
        assertRefused(fifo, "FIFO")
        XCTAssertThrowsError(try BoundedFile.read("/dev/zero", limit: 1 << 20)) {
            XCTAssertTrue("\($0)".contains("character device"), "\($0)")
        }
        assertRefused(dir!, "directory")
    }

    func testBoundedReadRefusesFilesOverItsLimit() throws {
        let path = write([UInt8](repeating: 0x20, count: 5000))
        XCTAssertEqual(try BoundedFile.read(path, limit: 5000).count, 5000)
        XCTAssertThrowsError(try BoundedFile.read(path, limit: 4999)) { XCTAssertTrue("\($0)".contains("5000 bytes, more than the 4999"), "\($0)") }
        XCTAssertThrowsError(try SafeTensorsFile(path: path, maxBytes: 4999)) { XCTAssertTrue("\($0)".contains("more than the 4999"), "\($0)") }
    }

    // MARK: Seeded mutations

    /// 400 mutations of a valid file (seeded, so every run tries the same files): each
    /// opens and loads consistently, or is refused with a SafeTensorsError.
    func testSeededMutationsLoadCorrectlyOrFailCleanly() throws {
        var rng = SplitMix64(seed: 0x5AFE_7E45)
        var refused = 0, loaded = 0
        var kinds: [SafeTensorsCraft.Mutation: Int] = [:]
        for i in 0..<400 {
            let kind = SafeTensorsCraft.Mutation.allCases[i % SafeTensorsCraft.Mutation.allCases.count]
            let bytes = SafeTensorsCraft.mutated(kind, rng: &rng)
            let path = write(bytes, name: "m\(i).safetensors")
            kinds[kind, default: 0] += 1
            do {
                let f = try SafeTensorsFile(path: path)
                try checkConsistent(f, fileSize: bytes.count, "case \(i) (\(kind))")
                loaded += 1
            } catch let e as SafeTensorsError {
                XCTAssertTrue(e.description.contains(path), "case \(i) (\(kind)): error does not name the file: \(e)")
                refused += 1
            }
        }
        XCTAssertEqual(refused + loaded, 400)
        // The mutations are meant to break files; a few (a truncation inside trailing
        // header padding, a dtype swapped for one of the same size) still load.
        XCTAssertGreaterThan(refused, 300, "loaded \(loaded)")
        XCTAssertEqual(kinds.count, SafeTensorsCraft.Mutation.allCases.count)
    }

    /// What a load must satisfy: every tensor inside the data section, spanning its
    /// shape's bytes, and readable with that shape.
    private func checkConsistent(_ f: SafeTensorsFile, fileSize: Int, _ label: String) throws {
        var spans: [(Int, Int)] = []
        for name in f.names {
            let e = f.entries[name]!
            let count = e.shape.reduce(1, *)
            XCTAssertEqual(e.end - e.begin, count * e.dtype.byteSize, label)
            XCTAssertLessThanOrEqual(e.end, fileSize, label)
            spans.append((e.begin, e.end))
            let t = try f.tensor(name)
            XCTAssertEqual(t.shape, e.shape, label)
        }
        spans.sort { $0 < $1 }
        for (a, b) in zip(spans, spans.dropFirst()) { XCTAssertLessThanOrEqual(a.1, b.0, "\(label): overlapping tensors") }
    }

    // MARK: helpers

    private func write(_ bytes: [UInt8], name: String = "crafted.safetensors") -> String {
        let path = "\(dir!)/\(name)"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    private func assertRefused(_ path: String, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafeTensorsFile(path: path), file: file, line: line) { error in
            XCTAssertTrue(error is SafeTensorsError, "\(type(of: error))", file: file, line: line)
            XCTAssertTrue("\(error)".contains(needle), "\(error) lacks '\(needle)'", file: file, line: line)
            XCTAssertTrue("\(error)".contains(path), "\(error) does not name \(path)", file: file, line: line)
        }
    }
}

