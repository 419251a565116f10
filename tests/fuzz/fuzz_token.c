/* Access-token verification on arbitrary text: never a crash, and nothing but a token signed
 * with the key passes (a forged one would have to break HMAC-SHA256). */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "core/arena.h"
#include "core/http.h"
#include "core/token.h"

static dk_tokens *tokens;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const unsigned char key[] = "fuzzing-key-fuzzing-key-fuzzing-key-0123";
    tokens = dk_tokens_new(key, sizeof key - 1, 15 * 60 * 1000);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    dk_arena *a = dk_arena_new();
    dk_identity id;
    if (dk_tokens_verify(tokens, a, text, &id) == DK_OK) {
        /* only possible for a token this key signed: re-verifying must agree */
        if (!id.user_id || !id.session_id)
            abort();
    }
    /* the same text twice in a row (the verified-token cache) */
    (void)!dk_tokens_verify(tokens, a, text, &id);
    dk_arena_free(a);
    free(text);
    return 0;
}
