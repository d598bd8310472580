import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The process holding a subject's training lock.
public struct TrainingLockHolder: Sendable, Equatable {
    public var pid: Int32
    /// The run it trains, once it has one.
    public var runID: Int64?
}

/// An exclusive `flock` on `locks/subject-<id>.lock` in the data directory, held by
/// `koalabooth train` for as long as it trains the subject, so that deleting the
/// subject or training it a second time at once is refused while it runs. The kernel
/// drops the lock when the process ends however it ends, so a run left `running` by a
/// killed process blocks nothing. The file holds the holder's pid and run id, for
/// messages.
public final class TrainingLock: @unchecked Sendable {
    public let subjectID: Int64
    private let path: String
    private let lock = NSLock()
    private var fd: Int32

    private init(subjectID: Int64, path: String, fd: Int32) {
        self.subjectID = subjectID
        self.path = path
        self.fd = fd
    }

    deinit { release() }

    static func path(subjectID: Int64, in store: SubjectStore) -> String {
        store.home.appendingPathComponent("locks/subject-\(subjectID).lock").path
    }

    /// Takes the lock of `subject` without waiting. Throws `StoreError.subjectBusy`
    /// naming the process and run that holds it; `attempted` says what was refused
    /// ("train", "delete").
    public static func acquire(subject: Subject, in store: SubjectStore, attempted: String) throws -> TrainingLock {
        guard let id = subject.id else { preconditionFailure("TrainingLock needs a subject read from the store") }
        if store.isReadOnly { throw StoreError.readOnly(path: store.home.path) }
        let path = path(subjectID: id, in: store)
        let dir = (path as NSString).deletingLastPathComponent
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw StoreError.fileOperationFailed(path: dir, reason: "cannot create the directory: \(String(cString: strerror(errno)))")
        }
        while true {
            let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            if fd < 0 { throw StoreError.fileOperationFailed(path: path, reason: "cannot open the lock file: \(String(cString: strerror(errno)))") }
            var r: Int32
            repeat { r = flock(fd, LOCK_EX | LOCK_NB) } while r != 0 && errno == EINTR
            if r != 0 {
                let busy = errno == EWOULDBLOCK
                let reason = String(cString: strerror(errno))
                let holder = read(fd)
                close(fd)
                guard busy else { throw StoreError.fileOperationFailed(path: path, reason: "cannot lock it: \(reason)") }
                throw StoreError.subjectBusy(name: subject.name, attempted: attempted, pid: holder?.pid ?? 0, runID: holder?.runID)
            }
            // A subject delete removes the file while holding its lock: a lock taken on the
            // removed file meanwhile guards nothing, so take the new file's instead.
            var held = stat(), current = stat()
            if fstat(fd, &held) == 0 && stat(path, &current) == 0 && held.st_ino == current.st_ino && held.st_dev == current.st_dev {
                let lock = TrainingLock(subjectID: id, path: path, fd: fd)
                lock.write(TrainingLockHolder(pid: getpid(), runID: nil))
                return lock
            }
            close(fd)
        }
    }

    /// Records the run this process trains, for the messages of refused commands.
    public func setRun(_ runID: Int64) {
        write(TrainingLockHolder(pid: getpid(), runID: runID))
    }

    /// Who holds the subject's lock, or nil when nobody does.
    public static func holder(subjectID: Int64, in store: SubjectStore) -> TrainingLockHolder? {
        let fd = open(path(subjectID: subjectID, in: store), O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        return read(fd) ?? TrainingLockHolder(pid: 0, runID: nil)
    }

    /// Releases the lock (also done when the object goes away or the process ends).
    public func release() {
        lock.lock(); defer { lock.unlock() }
        guard fd >= 0 else { return }
        close(fd)  // drops the flock
        fd = -1
    }

    /// Releases the lock and removes its file (after the subject was deleted).
    func releaseAndRemove() {
        lock.lock(); defer { lock.unlock() }
        guard fd >= 0 else { return }
        unlink(path)  // while still locked, so no one takes a lock on the old file meanwhile
        close(fd)
        fd = -1
    }

    private func write(_ holder: TrainingLockHolder) {
        lock.lock(); defer { lock.unlock() }
        guard fd >= 0 else { return }
        let text = Array("\(holder.pid) \(holder.runID.map(String.init) ?? "-")\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    private static func read(_ fd: Int32) -> TrainingLockHolder? {
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        let words = String(decoding: buffer[0..<n], as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard let first = words.first, let pid = Int32(first) else { return nil }
        return TrainingLockHolder(pid: pid, runID: words.count > 1 ? Int64(words[1]) : nil)
    }
}
