import Foundation

/// A request to stop a training run, checked at every step boundary: the run then saves
/// a checkpoint of that step, is marked `interrupted` and can be resumed. Set from any
/// thread (the CLI's SIGINT handler, a service's cancel endpoint).
public final class TrainingCancellation: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    public init() {}

    public func cancel() {
        lock.lock()
        cancelled = true
        lock.unlock()
    }

    public var isCancelled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return cancelled
    }
}
