import CFuzzer
import Glibc

// `make fuzz` (scripts/fuzz.sh): one libFuzzer run per target, CRM_FUZZ_TARGET naming it;
// the arguments are libFuzzer's (corpus directories, -max_total_time=N, ...).
let name = getenv("CRM_FUZZ_TARGET").map { String(cString: $0) } ?? ""
guard let target = FuzzTarget(rawValue: name) else {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    printError("crm-fuzz: set CRM_FUZZ_TARGET to one of: \(names)")
    exit(2)
}
FuzzTarget.selected = target

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    FuzzTarget.selected.run(UnsafeBufferPointer(start: data, count: size))
    return 0
})
