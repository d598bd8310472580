/// A check on an op's arguments (shapes, ranks, ranges) that stays active in the release
/// build. KoalaTensor is compiled with -Ounchecked for its per-element kernels, which
/// removes every `precondition`; a shape that does not fit would then index past a
/// buffer and give garbage or a segfault far from the cause. `fatalError` is never
/// removed, so a bad call stops at the op with this message. Costs one branch per op
/// call, not per element.
@inline(__always)
func boundaryCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                   file: StaticString = #fileID, line: UInt = #line) {
    if _slowPath(!condition()) { fatalError(message(), file: file, line: line) }
}
