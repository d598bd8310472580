import Crypto
import Foundation

/// SHA-256 as the store uses it: swift-crypto's digest (BoringSSL) with the lowercase
/// hex form and the chunked file hash that name stored photos and checkpoints by
/// content. Named like Crypto's so call sites read the same; qualify it
/// (`KoalaStore.SHA256`) in a file that imports Crypto too.
public struct SHA256: Sendable {
    private var inner = Crypto.SHA256()

    public init() {}

    /// Feeds more bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        inner.update(bufferPointer: bytes)
    }

    public mutating func update<D: ContiguousBytes>(_ data: D) {
        data.withUnsafeBytes { update($0) }
    }

    /// The 32-byte digest.
    public func finalize() -> [UInt8] { Array(inner.finalize()) }

    /// The lowercase hex digest of `data`.
    public static func hex<D: ContiguousBytes>(_ data: D) -> String {
        var h = SHA256()
        h.update(data)
        return hexString(h.finalize())
    }

    /// The lowercase hex digest and byte count of a file, read in 1 MiB chunks.
    public static func hexOfFile(atPath path: String) throws -> (hex: String, size: Int) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw StoreError.fileUnreadable(path: path, reason: FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")
        }
        defer { try? handle.close() }
        var h = SHA256(), size = 0
        do {
            while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                h.update(chunk)
                size += chunk.count
            }
        } catch {
            throw StoreError.fileUnreadable(path: path, reason: error.localizedDescription)
        }
        return (hexString(h.finalize()), size)
    }

    static func hexString(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
