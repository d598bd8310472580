/// A check on an op's arguments (shapes, ranks, ranges) that stays active at every
/// optimisation level: a shape that does not fit would otherwise index past a buffer and
/// give garbage or a segfault far from the cause. Unlike `precondition`, which
/// -Ounchecked removes, `fatalError` always runs, so the guarantee does not depend on
/// build flags (Package.swift). Costs one branch per op call, not per element.
@inline(__always)
func boundaryCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                   file: StaticString = #fileID, line: UInt = #line) {
    if _slowPath(!condition()) { fatalError(message(), file: file, line: line) }
}
