/* fuzz.h — the libFuzzer entry points every target in tests/fuzz defines. Built two ways:
 * with clang's libFuzzer for `make fuzz` (DOCKET_FUZZ=ON), and with replay.c as a plain
 * program that runs the committed corpus (tests/fuzz/corpus/<target>/) in `make test`. */
#ifndef DK_FUZZ_H
#define DK_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A NUL-terminated copy of the input (free() it). */
char *fuzz_cstr(const uint8_t *data, size_t size);

#endif
