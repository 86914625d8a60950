// libFuzzer's entry point for a program with its own main (compiler-rt, linked by
// -sanitize=fuzzer): it parses libFuzzer's flags from argv and calls `callback` per input.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
