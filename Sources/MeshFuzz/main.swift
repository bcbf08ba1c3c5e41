// `meshd-fuzz`: in a fuzzing build (scripts/fuzz: address sanitizer, coverage instrumentation,
// MESHD_FUZZING defined, libFuzzer linked without its own `main`), libFuzzer drives the target
// named by MESHD_FUZZ_TARGET; in a normal build, the same targets replay saved inputs:
// `meshd-fuzz replay TARGET FILE_OR_DIR...` (scripts/test runs every corpus and regression input
// this way).

#if canImport(Glibc)
import Glibc
#endif
import Foundation

#if MESHD_FUZZING
/// libFuzzer's entry for programs that have a `main` of their own (LLVM ≥ 11).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

nonisolated(unsafe) var selectedTarget: FuzzTarget?

guard let name = ProcessInfo.processInfo.environment["MESHD_FUZZ_TARGET"], let target = FuzzTarget(rawValue: name) else {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    FileHandle.standardError.write(Data("set MESHD_FUZZ_TARGET to one of: \(names)\n".utf8))
    exit(2)
}
selectedTarget = target
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    selectedTarget?.run(bytes)
    return 0
})
#else
Replay.main(CommandLine.arguments)
#endif
