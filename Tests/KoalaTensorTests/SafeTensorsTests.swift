import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class SafeTensorsTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws { dir = try scratchDirectory(self, prefix: "kb-st").path }

    func testRoundTripInEveryDType() throws {
        let t = Tensor(shape: [2, 3], values: [0, 1.5, -2, 3.25, 65504, -1e-3])
        for dtype in [SafeTensorsDType.F32, .F16, .BF16] {
            let path = "\(dir!)/t-\(dtype).safetensors"
            try SafeTensors.write(["a.weight": t, "b": Tensor.scalar(7)], to: path, dtype: dtype, metadata: ["format": "pt"])
            let f = try SafeTensorsFile(path: path)
            XCTAssertEqual(f.names, ["a.weight", "b"])
            XCTAssertEqual(f.metadata["format"], "pt")
            XCTAssertEqual(f.entries["a.weight"]?.dtype, dtype)
            let back = try f.tensor("a.weight")
            XCTAssertEqual(back.shape, [2, 3])
            let tol: Float = dtype == .F32 ? 0 : (dtype == .F16 ? 1e-3 : 1e-2)
            for (x, y) in zip(back.toArray(), t.toArray()) { XCTAssertEqual(x, y, accuracy: tol * max(1, abs(y))) }
            XCTAssertEqual(try f.tensor("b").item, 7)
        }
    }

    func testReadsTorchWrittenFilesInEveryDType() throws {
        let f = try Fixtures.open("safetensors_dtypes")
        let reference = try f.tensor("f32")
        assertClose(try f.tensor("f16"), try f.tensor("f16_as_f32"), atol: 0, rtol: 0, "f16")
        assertClose(try f.tensor("bf16"), try f.tensor("bf16_as_f32"), atol: 0, rtol: 0, "bf16")
        XCTAssertEqual(reference.shape, [3, 5])
    }

    func testBF16RoundingMatchesTorch() throws {
        let f = try Fixtures.open("safetensors_dtypes")
        let src = try f.tensor("f32").toArray()
        let expected = try f.tensor("bf16_as_f32").toArray()
        for (x, e) in zip(src, expected) { XCTAssertEqual(HalfPrecision.float(fromBF16: HalfPrecision.bf16(from: x)), e) }
    }

    private func expectError(_ bytes: [UInt8], contains needle: String, file: StaticString = #filePath, line: UInt = #line) {
        let path = "\(dir!)/bad.safetensors"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        XCTAssertThrowsError(try SafeTensorsFile(path: path), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(needle), "\(error) lacks '\(needle)'", file: file, line: line)
        }
    }

    private func file(header: String, data: Int) -> [UInt8] {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        return withUnsafeBytes(of: UInt64(h.count).littleEndian, Array.init) + h + [UInt8](repeating: 0, count: data)
    }

    func testClearErrorsForBrokenFiles() throws {
        expectError([1, 2, 3], contains: "truncated")
        expectError(withUnsafeBytes(of: UInt64(1000).littleEndian, Array.init) + [0x7b], contains: "truncated")
        expectError(file(header: "{not json", data: 0), contains: "bad header")
        expectError(file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: 4), contains: "out of range")
        expectError(file(header: #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, data: 2), contains: "dtype U8")
        expectError(file(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: 8), contains: "needs 12 bytes")
        XCTAssertThrowsError(try SafeTensorsFile(path: "\(dir!)/missing.safetensors")) { XCTAssertTrue("\($0)".contains("cannot open")) }
    }

    func testWriteIntoMissingDirectoryFailsWithoutLeavingFiles() {
        XCTAssertThrowsError(try SafeTensors.write(["a": Tensor.scalar(1)], to: "\(dir!)/nope/x.safetensors")) {
            XCTAssertTrue("\($0)".contains("does not exist"))
        }
    }
}
