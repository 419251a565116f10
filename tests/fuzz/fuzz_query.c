/* Task-list query parameters (a query string as a client sends it: k=v&k=v, %-escapes) through
 * tasks_query_parse, then the SQL built from what was accepted, and the full-text query. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "core/arena.h"
#include "core/http.h"
#include "services/tasks/tasks_query.h"

static const unsigned char key[32] = "cursor-key-for-fuzzing-0123456";

struct params {
    int n;
    char *k[32], *v[32];
};

static const char *get(void *ctx, const char *name)
{
    struct params *p = ctx;
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->k[i], name) == 0)
            return p->v[i];
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    struct params p = {0};
    for (char *save = NULL, *tok = strtok_r(text, "&", &save); tok && p.n < 32;
         tok = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = '\0';
        p.k[p.n] = tok;
        p.v[p.n] = eq ? eq + 1 : (char *)"";
        p.n++;
    }
    dk_arena *a = dk_arena_new();
    dk_errors errs;
    dk_errors_init(&errs);
    tasks_list_query q;
    if (tasks_query_parse(a, get, &p, "0190a1b2-0000-7000-8000-000000000000", key, &q, &errs) ==
        DK_OK) {
        tasks_sql sql;
        tasks_query_build(a, DK_DB_SQLITE, &q, &sql);
        tasks_query_build(a, DK_DB_POSTGRES, &q, &sql);
    }
    dk_errors_release(&errs);
    tasks_fts fts;
    const char *qv = get(&p, "q");
    (void)tasks_fts_query(a, qv ? qv : text, &fts);
    dk_arena_free(a);
    free(text);
    return 0;
}
