/* testutil.h — shared helpers for the cmocka unit tests (one test file per module). */
#ifndef DK_TESTUTIL_H
#define DK_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* A fresh empty directory under DOCKET_TEST_TMP (or /tmp) for this test; the caller frees
 * the returned path with free(). */
char *dk_test_tmpdir(const char *name);
/* Sleeps ms milliseconds. */
void dk_test_sleep_ms(int ms);
/* Value of an environment variable, or NULL when unset or empty. */
const char *dk_test_env(const char *name);

#endif
