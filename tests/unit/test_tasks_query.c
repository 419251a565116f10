/* test_tasks_query.c — the list query of the tasks service: parameter parsing and its errors,
 * search text → FTS5, the SQL the builder emits for both engines (values only ever as
 * parameters), and the statements run for real against SQLite through tasks_repo. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/migrate.h"
#include "core/sql.h"
#include "services/tasks/tasks_model.h"
#include "services/tasks/tasks_query.h"
#include "services/tasks/tasks_repo.h"
#include "adapters/db.h"
#include "core/banned.h"

#define ME    "01936d5e-0000-7000-8000-000000000001"
#define OTHER "01936d5e-0000-7000-8000-000000000002"
#define THIRD "01936d5e-0000-7000-8000-000000000003"

static unsigned char key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

typedef struct kv {
    const char *names[16];
    const char *values[16];
    int n;
} kv;

static const char *kv_get(void *ctx, const char *name)
{
    kv *p = ctx;
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->names[i], name) == 0)
            return p->values[i];
    return NULL;
}

static void kv_set(kv *p, const char *name, const char *value)
{
    for (int i = 0; i < p->n; i++) {
        if (strcmp(p->names[i], name) == 0) {
            p->values[i] = value;
            return;
        }
    }
    p->names[p->n] = name;
    p->values[p->n] = value;
    p->n++;
}

static dk_status parse_as(dk_arena *a, kv *p, const char *caller, tasks_list_query *q,
                          dk_errors *errs)
{
    dk_errors_init(errs);
    return tasks_query_parse(a, kv_get, p, caller, key, q, errs);
}

/* Parses one name=value pair; asserts success. */
static tasks_list_query parse1(dk_arena *a, const char *name, const char *value)
{
    kv p = {.n = 0};
    if (name)
        kv_set(&p, name, value);
    tasks_list_query q;
    dk_errors errs;
    dk_status st = parse_as(a, &p, ME, &q, &errs);
    if (st != DK_OK)
        fail_msg("%s=%s refused", name, value);
    assert_null(errs.list);
    return q;
}

static bool errors_name(dk_errors *e, const char *field)
{
    for (size_t i = 0; e->list && i < json_array_size(e->list); i++) {
        json_t *item = json_array_get(e->list, i);
        if (strcmp(json_string_value(json_object_get(item, "field")), field) == 0) {
            const char *msg = json_string_value(json_object_get(item, "message"));
            return msg && *msg;
        }
    }
    return false;
}

/* ---------- parsing ---------- */

static void test_defaults(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    tasks_list_query q = parse1(a, NULL, NULL);
    assert_int_equal(q.sort, TASKS_SORT_CREATED_AT);
    assert_true(q.desc);
    assert_int_equal(q.limit, 20);
    assert_null(q.status);
    assert_int_equal(q.priority, -1);
    assert_null(q.label);
    assert_null(q.owner);
    assert_null(q.assignee);
    assert_false(q.has_due_before);
    assert_false(q.has_due_after);
    assert_null(q.q);
    assert_false(q.has_cursor);
    assert_string_equal(q.caller, ME);
    dk_arena_free(a);
}

static void test_valid_values(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    assert_string_equal(parse1(a, "status", "in_progress").status, "in_progress");
    assert_int_equal(parse1(a, "priority", "urgent").priority, TASKS_PRIORITY_URGENT);
    assert_int_equal(parse1(a, "priority", "low").priority, TASKS_PRIORITY_LOW);
    assert_string_equal(parse1(a, "label", "x' OR '1'='1").label, "x' OR '1'='1");
    assert_string_equal(parse1(a, "owner", "me").owner, ME);
    assert_string_equal(parse1(a, "owner", OTHER).owner, OTHER);
    assert_string_equal(parse1(a, "assignee", "me").assignee, ME);
    tasks_list_query q = parse1(a, "due_before", "2030-01-02T03:04:05Z");
    assert_true(q.has_due_before);
    assert_true(q.due_before == 1893553445000LL);
    q = parse1(a, "due_after", "2030-01-02T04:04:05.5+01:00");
    assert_true(q.has_due_after);
    assert_true(q.due_after == 1893553445500LL);
    assert_int_equal(parse1(a, "limit", "1").limit, 1);
    assert_int_equal(parse1(a, "limit", "100").limit, 100);
    const char *sorts[][3] = {{"created_at", "0", "0"}, {"-created_at", "0", "1"},
                              {"due_at", "1", "0"},     {"-due_at", "1", "1"},
                              {"priority", "2", "0"},   {"-priority", "2", "1"},
                              {"updated_at", "3", "0"}, {"-updated_at", "3", "1"}};
    for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++) {
        q = parse1(a, "sort", sorts[i][0]);
        assert_int_equal((int)q.sort, sorts[i][1][0] - '0');
        assert_int_equal(q.desc, sorts[i][2][0] == '1');
    }
    /* a search sorts by relevance unless a sort is given; a blank search is no search */
    q = parse1(a, "q", "milk");
    assert_int_equal(q.sort, TASKS_SORT_RELEVANCE);
    assert_true(q.desc);
    assert_string_equal(q.q, "milk");
    q = parse1(a, "q", "   ");
    assert_null(q.q);
    assert_int_equal(q.sort, TASKS_SORT_CREATED_AT);
    kv p = {.n = 0};
    kv_set(&p, "q", "milk");
    kv_set(&p, "sort", "priority");
    dk_errors errs;
    assert_int_equal(parse_as(a, &p, ME, &q, &errs), DK_OK);
    assert_int_equal(q.sort, TASKS_SORT_PRIORITY);
    assert_false(q.desc);
    /* an empty cursor is the first page */
    assert_false(parse1(a, "cursor", "").has_cursor);
    dk_arena_free(a);
}

static void test_invalid_values(void **state)
{
    (void)state;
    static const char *cases[][2] = {
        {"status", "open"},
        {"status", ""},
        {"status", "TODO"},
        {"status", "todo' OR 1=1 --"},
        {"priority", "critical"},
        {"priority", "1"},
        {"label", ""},
        {"label", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}, /* 51 */
        {"owner", "someone"},
        {"owner", ""},
        {"owner", "ME"},
        {"assignee", "1; DROP TABLE tasks"},
        {"due_before", "tomorrow"},
        {"due_before", "2030-01-01"},
        {"due_before", "2030-02-30T00:00:00Z"},
        {"due_after", "2030-01-01T00:00:00"},
        {"due_after", ""},
        {"sort", "title"},
        {"sort", ""},
        {"sort", "-"},
        {"sort", "+created_at"},
        {"sort", "created_at;DROP TABLE tasks"},
        {"sort", "created_at,priority"},
        {"sort", "--created_at"},
        {"sort", "relevance"},
        {"limit", "0"},
        {"limit", "101"},
        {"limit", "-1"},
        {"limit", "abc"},
        {"limit", "1.5"},
        {"limit", ""},
        {"limit", " 5"},
        {"limit", "99999999999999999999999"},
        {"cursor", "garbage"},
        {"cursor", "AQHy0GHD15vJaXxAvBHaHZgtAaIn4XnodbuTey8hsSEAmgAAAaIn4XnoQky7e7NxEAYNGl6jSgWD"},
        {"q", "\xff\xfe"},
    };
    dk_arena *a = dk_arena_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv p = {.n = 0};
        kv_set(&p, cases[i][0], cases[i][1]);
        tasks_list_query q;
        dk_errors errs;
        if (parse_as(a, &p, ME, &q, &errs) != DK_E_BAD_REQUEST)
            fail_msg("%s=%s accepted", cases[i][0], cases[i][1]);
        if (!errors_name(&errs, cases[i][0]))
            fail_msg("%s=%s: errors do not name it", cases[i][0], cases[i][1]);
        assert_int_equal(json_array_size(errs.list), 1);
        dk_errors_release(&errs);
    }
    /* a search text over the limit */
    char *longq = dk_arena_alloc(a, TASKS_Q_MAX + 2);
    memset(longq, 'a', TASKS_Q_MAX + 1);
    kv p = {.n = 0};
    kv_set(&p, "q", longq);
    tasks_list_query q;
    dk_errors errs;
    assert_int_equal(parse_as(a, &p, ME, &q, &errs), DK_E_BAD_REQUEST);
    assert_true(errors_name(&errs, "q"));
    dk_errors_release(&errs);
    longq[TASKS_Q_MAX] = '\0';
    assert_int_equal(parse_as(a, &p, ME, &q, &errs), DK_OK);

    /* every bad parameter is named at once */
    kv many = {.n = 0};
    kv_set(&many, "status", "x");
    kv_set(&many, "priority", "x");
    kv_set(&many, "sort", "x");
    kv_set(&many, "limit", "x");
    kv_set(&many, "due_after", "x");
    kv_set(&many, "cursor", "x");
    assert_int_equal(parse_as(a, &many, ME, &q, &errs), DK_E_BAD_REQUEST);
    assert_int_equal(json_array_size(errs.list), 6);
    const char *names[] = {"status", "priority", "sort", "limit", "due_after", "cursor"};
    for (size_t i = 0; i < 6; i++)
        assert_true(errors_name(&errs, names[i]));
    dk_errors_release(&errs);
    dk_arena_free(a);
}

/* ---------- search text → FTS5 ---------- */

static void test_fts_query(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    tasks_fts f;
    assert_true(tasks_fts_query(a, "running shoes", &f));
    assert_string_equal(f.match, "\"running\" AND \"shoes\"");
    assert_null(f.exclude);
    /* an arm's MATCH: the caller's scope token, then the words in the title or description */
    assert_string_equal(tasks_fts_scoped(a, &f, 'o', ME),
                        "{scope} : \"o01936d5e000070008000000000000001x\" AND "
                        "{title description} : (\"running\" AND \"shoes\")");
    assert_string_equal(tasks_fts_scoped(a, &f, 0, NULL),
                        "{title description} : (\"running\" AND \"shoes\")");

    assert_true(tasks_fts_query(a, "\"fat rat\" or cat -dog", &f));
    assert_string_equal(f.match, "(\"fat rat\" OR \"cat\") NOT (\"dog\")");
    assert_string_equal(f.exclude, "\"dog\"");

    assert_true(tasks_fts_query(a, "a OR b Or c", &f));
    assert_string_equal(f.match, "\"a\" OR \"b\" OR \"c\"");
    /* a leading, trailing or doubled `or` is a no-op */
    assert_true(tasks_fts_query(a, "or a or or b or", &f));
    assert_string_equal(f.match, "\"a\" OR \"b\"");

    /* FTS5 and SQL syntax in the text is only ever text inside quotes */
    assert_true(tasks_fts_query(a, "title:x NEAR(a b) c* ^d AND 'e' \"f\"\"g", &f));
    assert_string_equal(f.match, "\"title:x\" AND \"NEAR(a\" AND \"b)\" AND \"c*\" AND \"^d\" "
                                 "AND \"AND\" AND \"'e'\" AND \"f\" AND \"g\"");
    assert_true(tasks_fts_query(a, "x\"y", &f));
    assert_string_equal(f.match, "\"x\"\"y\"");
    assert_true(tasks_fts_query(a, "'; DROP TABLE tasks; --", &f));
    assert_string_equal(f.match, "\"DROP\" AND \"TABLE\" AND \"tasks;\"");

    /* negations only: nothing positive to match, only what to exclude */
    assert_true(tasks_fts_query(a, "-milk -\"sour cream\"", &f));
    assert_null(f.match);
    assert_string_equal(f.exclude, "\"milk\" OR \"sour cream\"");
    assert_string_equal(tasks_fts_scoped(a, &f, 'p', OTHER),
                        "{scope} : \"p01936d5e000070008000000000000002x\" NOT "
                        "{title description} : (\"milk\" OR \"sour cream\")");
    assert_null(tasks_fts_scoped(a, &f, 0, NULL)); /* FTS5 has no bare NOT */

    /* an unterminated phrase runs to the end; non-ASCII words count */
    assert_true(tasks_fts_query(a, "\"buy milk", &f));
    assert_string_equal(f.match, "\"buy milk\"");
    assert_true(tasks_fts_query(a, "café", &f));
    assert_string_equal(f.match, "\"café\"");

    /* nothing searchable */
    assert_false(tasks_fts_query(a, "", &f));
    assert_false(tasks_fts_query(a, "   ", &f));
    assert_false(tasks_fts_query(a, "-- ; ' - or OR", &f));
    assert_false(tasks_fts_query(a, "\"\"", &f));
    assert_false(tasks_fts_query(a, "\" \" -\"...\"", &f));
    assert_false(tasks_fts_query(a, "*", &f));
    dk_arena_free(a);
}

/* ---------- the SQL ---------- */

static tasks_sql build(dk_arena *a, dk_db_engine engine, kv *p, const char *caller)
{
    tasks_list_query q;
    dk_errors errs;
    assert_int_equal(parse_as(a, p, caller, &q, &errs), DK_OK);
    tasks_sql s;
    tasks_query_build(a, engine, &q, &s);
    return s;
}

/* Every $k for k in 1..nparams appears, none beyond; no parameter value is in the text. */
static void assert_params_sound(const tasks_sql *s)
{
    assert_false(s->nothing);
    for (int k = 1; k <= s->nparams; k++) {
        char tok[16];
        snprintf(tok, sizeof tok, "$%d", k);
        const char *at = strstr(s->sql, tok);
        bool found = false;
        while (at) {
            char next = at[strlen(tok)];
            if (!(next >= '0' && next <= '9'))
                found = true;
            at = strstr(at + 1, tok);
        }
        if (!found)
            fail_msg("$%d missing from %s", k, s->sql);
        assert_non_null(s->params[k - 1]);
    }
    char tok[16];
    snprintf(tok, sizeof tok, "$%d", s->nparams + 1);
    assert_null(strstr(s->sql, tok));
    for (int k = 0; k < s->nparams; k++) {
        /* short values (numbers) can legitimately look like SQL; hostile ones must not show */
        if (strlen(s->params[k]) >= 6 && strstr(s->sql, s->params[k]))
            fail_msg("parameter %d (%s) inlined into %s", k + 1, s->params[k], s->sql);
    }
}

static void test_sql_default_shape(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    for (int e = 0; e < 2; e++) {
        dk_db_engine engine = e ? DK_DB_POSTGRES : DK_DB_SQLITE;
        kv p = {.n = 0};
        tasks_sql s = build(a, engine, &p, ME);
        assert_params_sound(&s);
        /* own personal tasks and personal tasks assigned to me: index-led arms merged in page
         * order (and on PostgreSQL the caller's projects, one page each) */
        assert_non_null(strstr(s.sql, "WHERE t.owner_id = $1 AND t.project_id IS NULL ORDER BY "
                                      "t.created_at DESC, t.id DESC LIMIT CAST($2 AS INTEGER)"));
        assert_non_null(strstr(s.sql,
                               "WHERE t.assignee_id = $1 AND t.owner_id <> $1 AND "
                               "t.project_id IS NULL ORDER BY t.created_at DESC, t.id DESC"));
        assert_non_null(strstr(s.sql, "UNION ALL"));
        assert_non_null(strstr(s.sql, "ORDER BY sk DESC, id DESC LIMIT CAST($2 AS INTEGER)"));
        if (e)
            assert_non_null(strstr(s.sql, "FROM tasks_project_members m CROSS JOIN LATERAL ("
                                          "SELECT"));
        else
            assert_null(strstr(s.sql, "tasks_project_members")); /* a member of no project */
        assert_int_equal(s.nparams, 2);
        assert_string_equal(s.params[0], ME);
        assert_string_equal(s.params[1], "21");
        assert_non_null(strstr(s.sql, e ? "to_json(t.labels)" : "t.labels"));
    }
    dk_arena_free(a);
}

static void test_sql_arms(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    struct {
        const char *owner, *assignee, *want;
        bool nothing;
    } cases[] = {
        {"me", NULL, "WHERE t.owner_id = $1 AND t.project_id IS NULL ORDER BY", false},
        {ME, NULL, "WHERE t.owner_id = $1 AND t.project_id IS NULL ORDER BY", false},
        {OTHER, NULL,
         "WHERE t.assignee_id = $1 AND t.owner_id = $2 AND t.project_id IS NULL ORDER BY", false},
        {NULL, "me", "WHERE t.assignee_id = $1 AND t.project_id IS NULL ORDER BY", false},
        {NULL, OTHER,
         "WHERE t.owner_id = $1 AND t.project_id IS NULL AND t.assignee_id = $2 ORDER BY", false},
        {"me", "me",
         "WHERE t.owner_id = $1 AND t.project_id IS NULL AND t.assignee_id = $1 ORDER BY", false},
        {"me", OTHER,
         "WHERE t.owner_id = $1 AND t.project_id IS NULL AND t.assignee_id = $2 ORDER BY", false},
        {OTHER, "me",
         "WHERE t.assignee_id = $1 AND t.owner_id = $2 AND t.project_id IS NULL ORDER BY", false},
        {OTHER, THIRD, NULL, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv p = {.n = 0};
        if (cases[i].owner)
            kv_set(&p, "owner", cases[i].owner);
        if (cases[i].assignee)
            kv_set(&p, "assignee", cases[i].assignee);
        tasks_sql s = build(a, DK_DB_SQLITE, &p, ME);
        assert_int_equal(s.nothing, cases[i].nothing);
        if (cases[i].nothing)
            continue;
        assert_params_sound(&s);
        if (!strstr(s.sql, cases[i].want))
            fail_msg("case %zu: %s not in %s", i, cases[i].want, s.sql);
        assert_null(strstr(s.sql, "UNION"));
        /* PostgreSQL adds the projects' arm, with the same owner/assignee conditions */
        s = build(a, DK_DB_POSTGRES, &p, ME);
        assert_params_sound(&s);
        assert_non_null(strstr(s.sql, "CROSS JOIN LATERAL"));
        assert_non_null(strstr(s.sql, "WHERE m.user_id = $1"));
        if (cases[i].owner)
            assert_non_null(strstr(s.sql, "t.project_id = m.project_id AND t.owner_id = $"));
    }
    dk_arena_free(a);
}

/* SQLite: an arm per project of the caller, each re-checking the membership; a member of
 * more projects than arms gets one IN arm; ?project_id= one arm that checks the membership. */
static void test_sql_project_arms(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    kv p = {.n = 0};
    tasks_list_query q;
    dk_errors errs;
    assert_int_equal(parse_as(a, &p, ME, &q, &errs), DK_OK);
    const char *projects[] = {"01936d5e-0000-7000-8000-00000000000a",
                              "01936d5e-0000-7000-8000-00000000000b"};
    q.member_projects = projects;
    q.nmember_projects = 2;
    tasks_sql s;
    tasks_query_build(a, DK_DB_SQLITE, &q, &s);
    assert_params_sound(&s);
    assert_non_null(strstr(s.sql, "WHERE t.project_id = $2 AND EXISTS (SELECT 1 FROM "
                                  "tasks_project_members m WHERE m.project_id = t.project_id AND "
                                  "m.user_id = $1) ORDER BY t.created_at DESC, t.id DESC"));
    assert_non_null(strstr(s.sql, "WHERE t.project_id = $3 AND EXISTS"));
    assert_string_equal(s.params[1], projects[0]);
    assert_string_equal(s.params[2], projects[1]);
    q.many_projects = true;
    q.nmember_projects = 0;
    tasks_query_build(a, DK_DB_SQLITE, &q, &s);
    assert_params_sound(&s);
    assert_non_null(strstr(s.sql, "t.project_id IN (SELECT m.project_id FROM "
                                  "tasks_project_members m WHERE m.user_id = $1)"));
    for (int e = 0; e < 2; e++) {
        kv_set(&p, "project_id", projects[1]);
        assert_int_equal(parse_as(a, &p, ME, &q, &errs), DK_OK);
        assert_string_equal(q.project_id, projects[1]);
        tasks_query_build(a, e ? DK_DB_POSTGRES : DK_DB_SQLITE, &q, &s);
        assert_params_sound(&s);
        assert_non_null(strstr(s.sql, "WHERE t.project_id = $2 AND EXISTS (SELECT 1 FROM "
                                      "tasks_project_members m WHERE m.project_id = $2 AND "
                                      "m.user_id = $1) ORDER BY"));
        assert_null(strstr(s.sql, "UNION"));
        assert_null(strstr(s.sql, "project_id IS NULL"));
    }
    /* the project is part of what a cursor is bound to */
    tasks_list_query q2;
    kv p2 = {.n = 0};
    assert_int_equal(parse_as(a, &p2, ME, &q2, &errs), DK_OK);
    assert_memory_not_equal(q.filter_hash, q2.filter_hash, TASKS_FILTER_HASH_LEN);
    kv_set(&p2, "project_id", "not-a-uuid");
    assert_int_equal(parse_as(a, &p2, ME, &q2, &errs), DK_E_BAD_REQUEST);
    dk_errors_release(&errs);
    dk_arena_free(a);
}

static void test_sql_filters_both_engines(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    const char *hostile_label = "x' OR '1'='1'; DROP TABLE tasks; --";
    const char *hostile_q = "milk' OR 'a'='a'; DELETE FROM tasks; --";
    for (int e = 0; e < 2; e++) {
        dk_db_engine engine = e ? DK_DB_POSTGRES : DK_DB_SQLITE;
        kv p = {.n = 0};
        kv_set(&p, "status", "done");
        kv_set(&p, "priority", "high");
        kv_set(&p, "label", hostile_label);
        kv_set(&p, "due_before", "2030-01-01T00:00:00Z");
        kv_set(&p, "due_after", "2020-01-01T00:00:00Z");
        kv_set(&p, "q", hostile_q);
        kv_set(&p, "sort", "-due_at");
        tasks_sql s = build(a, engine, &p, ME);
        assert_params_sound(&s);
        assert_null(strstr(s.sql, "DROP"));
        assert_null(strstr(s.sql, "DELETE"));
        assert_null(strstr(s.sql, "'1'"));
        assert_null(strstr(s.sql, "milk"));
        assert_non_null(strstr(s.sql, "t.status = $"));
        assert_non_null(strstr(s.sql, "t.priority = CAST($"));
        assert_non_null(strstr(s.sql, "t.due_at < CAST($"));
        assert_non_null(strstr(s.sql, "t.due_at >= CAST($"));
        assert_non_null(strstr(s.sql, "ORDER BY COALESCE(t.due_at, -9223372036854775807) DESC, "
                                      "t.id DESC"));
        bool raw_label = false, raw_q = false, fts_q = false;
        for (int k = 0; k < s.nparams; k++) {
            raw_label |= strcmp(s.params[k], hostile_label) == 0;
            raw_q |= strcmp(s.params[k], hostile_q) == 0;
            fts_q |= strstr(s.params[k], "AND {title description} : (\"milk'\" OR \"'a'='a';\" "
                                         "AND \"DELETE\" AND \"FROM\" AND \"tasks;\")") != NULL;
        }
        assert_true(raw_label);
        if (engine == DK_DB_POSTGRES) {
            assert_non_null(strstr(s.sql, "t.labels @> ARRAY[CAST($"));
            assert_non_null(strstr(s.sql, "t.search @@ (SELECT websearch_to_tsquery('english', $"));
            assert_null(strstr(s.sql, "tasks_fts"));
            assert_true(raw_q); /* PostgreSQL parses the raw text itself */
            assert_false(fts_q);
        } else {
            assert_non_null(strstr(s.sql, "FROM json_each(t.labels) WHERE json_each.value = $"));
            assert_non_null(strstr(s.sql, "tasks_fts MATCH $"));
            assert_null(strstr(s.sql, "websearch"));
            assert_false(raw_q); /* SQLite gets the quoted FTS5 form */
            assert_true(fts_q);
        }
    }
    /* ascending due date: tasks without one still last */
    kv p = {.n = 0};
    kv_set(&p, "sort", "due_at");
    tasks_sql s = build(a, DK_DB_SQLITE, &p, ME);
    assert_non_null(
        strstr(s.sql, "ORDER BY COALESCE(t.due_at, 9223372036854775807) ASC, t.id ASC"));
    assert_non_null(strstr(s.sql, "ORDER BY sk ASC, id ASC"));
    dk_arena_free(a);
}

static void test_sql_relevance_and_cursor(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    for (int e = 0; e < 2; e++) {
        dk_db_engine engine = e ? DK_DB_POSTGRES : DK_DB_SQLITE;
        kv p = {.n = 0};
        kv_set(&p, "q", "milk -sour");
        tasks_list_query q;
        dk_errors errs;
        assert_int_equal(parse_as(a, &p, ME, &q, &errs), DK_OK);
        kv_set(
            &p, "cursor",
            tasks_query_next_cursor(a, key, &q, 2000000, "01936d5e-8f2a-7b3c-9d4e-5f6a7b8c9d0e"));
        tasks_sql s = build(a, engine, &p, ME);
        assert_params_sound(&s);
        if (engine == DK_DB_POSTGRES) {
            assert_non_null(strstr(s.sql, "ts_rank_cd("));
            /* the text parsed once for the whole statement */
            assert_non_null(strstr(s.sql, "/* tasks.list */ WITH w AS MATERIALIZED (SELECT "
                                          "websearch_to_tsquery('english', $"));
            assert_non_null(strstr(s.sql, "t.search, (SELECT w.q FROM w))"));
            assert_non_null(strstr(s.sql, "t.search @@ (SELECT w.q FROM w)"));
            const char *parse = strstr(s.sql, "websearch_to_tsquery");
            assert_null(strstr(parse + 1, "websearch_to_tsquery"));
            /* one sort over every arm's (ctid, id, relevance); the page's rows read by ctid,
             * their columns (labels as JSON) produced for the page only */
            assert_non_null(
                strstr(s.sql, "SELECT t.ctid AS tid, t.id AS id, CAST(CAST(ts_rank_cd("));
            assert_non_null(strstr(s.sql, " UNION ALL SELECT t.ctid AS tid, t.id AS id, "));
            assert_non_null(strstr(s.sql,
                                   " UNION ALL SELECT x.* FROM tasks_project_members m CROSS "
                                   "JOIN LATERAL (SELECT t.ctid AS tid, t.id AS id, "));
            assert_non_null(strstr(s.sql, " OFFSET 0) x WHERE m.user_id = $1) u ORDER BY"));
            assert_non_null(strstr(s.sql, ") u ORDER BY sk DESC, id DESC LIMIT CAST($"));
            assert_non_null(strstr(s.sql, "CROSS JOIN tasks t WHERE t.ctid = s.tid ORDER BY s.sk "
                                          "DESC, s.id DESC"));
            const char *json = strstr(s.sql, "to_json(t.labels)");
            assert_non_null(json);
            assert_null(strstr(json + 1, "to_json(t.labels)")); /* once: in the outer select */
            assert_true(json < strstr(s.sql, "ts_rank_cd("));
        } else {
            assert_non_null(strstr(s.sql, "docket_hits(tasks_fts, 10, 1, 0) AS sk FROM tasks_fts "
                                          "CROSS JOIN tasks t ON t.seq = tasks_fts.rowid WHERE "
                                          "tasks_fts MATCH $"));
            assert_null(strstr(s.sql, "bm25"));
        }
        /* the keyset condition compares (sort key, id) with the cursor's, as parameters */
        assert_non_null(strstr(s.sql, ", t.id) < (CAST($"));
        bool has_value = false, has_id = false;
        for (int k = 0; k < s.nparams; k++) {
            has_value |= strcmp(s.params[k], "2000000") == 0;
            has_id |= strcmp(s.params[k], "01936d5e-8f2a-7b3c-9d4e-5f6a7b8c9d0e") == 0;
        }
        assert_true(has_value && has_id);
    }
    /* a search with no word in it matches nothing, without asking the database */
    kv p = {.n = 0};
    kv_set(&p, "q", "-- ;");
    tasks_sql s = build(a, DK_DB_SQLITE, &p, ME);
    assert_true(s.nothing);
    s = build(a, DK_DB_POSTGRES, &p, ME);
    assert_true(s.nothing);
    dk_arena_free(a);
}

/* ---------- run for real on SQLite ---------- */

typedef struct fixture {
    char *dir;
    dk_database db;
    tasks_repo repo;
} fixture;

static int fx_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = dk_test_tmpdir("tasks_query");
    char url[1024];
    snprintf(url, sizeof url, "sqlite:%s/t.db", f->dir);
    f->db.ops = &dk_db_sqlite_ops;
    dk_db_options o = {.url = url, .pool_size = 2, .acquire_timeout_ms = 5000};
    assert_int_equal(f->db.ops->open(&o, &f->db.db), DK_OK);
    int applied = 0;
    assert_int_equal(
        dk_migrate_apply(&f->db, "tasks", dk_tasks_migrations, DK_TASKS_NMIGRATIONS, &applied),
        DK_OK);
    assert_int_equal(applied, DK_TASKS_NMIGRATIONS);
    f->repo.db = &f->db;
    f->repo.cursor_key = key;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fixture *f = *state;
    f->db.ops->close(f->db.db);
    free(f->dir);
    free(f);
    return 0;
}

/* Inserts a task; id is made time-ordered by the caller's sequence number. */
static void put(fixture *f, dk_arena *a, int seq, const char *owner, const char *assignee,
                const char *title, const char *description, int priority, int64_t due,
                const char *label)
{
    tasks_task t;
    memset(&t, 0, sizeof t);
    t.id = dk_arena_printf(a, "01936d5e-0000-7000-8000-%012d", seq);
    t.owner_id = owner;
    t.assignee_id = assignee;
    t.title = title;
    t.description = description;
    t.status = TASKS_STATUS_TODO;
    t.priority = priority;
    t.has_due = due != 0;
    t.due_at = due;
    const char **labels = dk_arena_alloc(a, sizeof *labels);
    labels[0] = label;
    t.labels = labels;
    t.nlabels = label ? 1 : 0;
    t.created_at = 1000 + seq;
    t.updated_at = 1000 + seq;
    t.version = 1;
    const char *field = NULL;
    assert_int_equal(tasks_repo_create(&f->repo, a, &t, &field), DK_OK);
}

/* Pages through with limit `limit`, writing the titles in order (space-separated). */
static char *list_all(fixture *f, dk_arena *a, kv *p, const char *caller, int limit)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    kv_set(p, "limit", lim);
    kv_set(p, "cursor", ""); /* the first page */
    char *out = dk_arena_strdup(a, "");
    for (int pages = 0; pages < 100; pages++) {
        tasks_list_query q;
        dk_errors errs;
        if (parse_as(a, p, caller, &q, &errs) != DK_OK)
            fail_msg("parse failed: %s", json_dumps(errs.list, 0));
        tasks_task *items = NULL;
        int n = 0;
        char *next = NULL;
        assert_int_equal(tasks_repo_list(&f->repo, a, &q, &items, &n, &next), DK_OK);
        assert_true(n <= limit);
        for (int i = 0; i < n; i++)
            out = dk_arena_printf(a, "%s%s%s", out, *out ? " " : "", items[i].title);
        if (!next)
            return out;
        assert_int_equal(n, limit);
        kv_set(p, "cursor", next);
    }
    fail_msg("more than 100 pages");
    return NULL;
}

static void test_run_sorts_and_filters(void **state)
{
    fixture *f = *state;
    dk_arena *a = dk_arena_new();
    /* seq, owner, assignee, title, description, priority, due, label */
    put(f, a, 1, ME, NULL, "A", "", TASKS_PRIORITY_HIGH, 5000, "home");
    put(f, a, 2, ME, NULL, "B", "", TASKS_PRIORITY_LOW, 0, "work");
    put(f, a, 3, OTHER, ME, "C", "", TASKS_PRIORITY_URGENT, 3000, "home");
    put(f, a, 4, OTHER, NULL, "D", "", TASKS_PRIORITY_MEDIUM, 1000, "home"); /* not visible */
    put(f, a, 5, ME, ME, "E", "", TASKS_PRIORITY_MEDIUM, 0, NULL);
    put(f, a, 6, ME, OTHER, "F", "", TASKS_PRIORITY_LOW, 7000, "x' OR '1'='1");
    put(f, a, 7, THIRD, ME, "G", "", TASKS_PRIORITY_HIGH, 5000, NULL);

    struct {
        const char *name, *value, *name2, *value2, *want;
    } cases[] = {
        {NULL, NULL, NULL, NULL, "G F E C B A"},
        {"sort", "created_at", NULL, NULL, "A B C E F G"},
        {"sort", "due_at", NULL, NULL, "C A G F B E"},   /* no due date: last */
        {"sort", "-due_at", NULL, NULL, "F G A C E B"},  /* no due date: last here too */
        {"sort", "priority", NULL, NULL, "B F E A G C"}, /* ties by id, same direction */
        {"sort", "-priority", NULL, NULL, "C G A E F B"},
        {"label", "home", NULL, NULL, "C A"},
        {"label", "x' OR '1'='1", NULL, NULL, "F"},
        {"label", "nope", NULL, NULL, ""},
        {"owner", "me", NULL, NULL, "F E B A"},
        {"owner", OTHER, NULL, NULL, "C"},
        {"owner", THIRD, NULL, NULL, "G"},
        {"assignee", "me", NULL, NULL, "G E C"},
        {"assignee", OTHER, NULL, NULL, "F"},
        {"owner", "me", "assignee", "me", "E"},
        {"owner", OTHER, "assignee", OTHER, ""},
        {"priority", "high", NULL, NULL, "G A"},
        {"due_before", "1970-01-01T00:00:05Z", NULL, NULL, "C"}, /* < 5000 */
        {"due_after", "1970-01-01T00:00:05Z", NULL, NULL, "G F A"},
        {"due_after", "1970-01-01T00:00:03Z", "due_before", "1970-01-01T00:00:07Z", "G C A"},
        {"status", "done", NULL, NULL, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int limit = 1; limit <= 7; limit += 2) {
            kv p = {.n = 0};
            if (cases[i].name)
                kv_set(&p, cases[i].name, cases[i].value);
            if (cases[i].name2)
                kv_set(&p, cases[i].name2, cases[i].value2);
            char *got = list_all(f, a, &p, ME, limit);
            if (strcmp(got, cases[i].want) != 0)
                fail_msg("%s=%s %s=%s limit %d: got '%s', want '%s'", cases[i].name, cases[i].value,
                         cases[i].name2, cases[i].value2, limit, got, cases[i].want);
        }
    }
    /* another user sees only what is theirs */
    kv p = {.n = 0};
    assert_string_equal(list_all(f, a, &p, OTHER, 2), "F D C");
    dk_arena_free(a);
}

static void test_run_search(void **state)
{
    fixture *f = *state;
    dk_arena *a = dk_arena_new();
    put(f, a, 1, ME, NULL, "Groceries", "go running in the park", 1, 0, NULL);
    put(f, a, 2, ME, NULL, "Running shoes", "buy new ones", 1, 0, NULL);
    put(f, a, 3, ME, NULL, "Tax return", "file it before april", 1, 0, NULL);
    put(f, a, 4, ME, NULL, "Run a marathon", "training plan: running daily", 1, 0, NULL);
    put(f, a, 5, OTHER, NULL, "Running secret", "not mine", 1, 0, NULL);
    put(f, a, 6, ME, NULL, "Café visit", "naïve résumé", 1, 0, NULL);

    kv p = {.n = 0};
    /* stemming; title and description hit > title hit > description hit; newest first */
    kv_set(&p, "q", "running");
    for (int limit = 1; limit <= 4; limit++)
        assert_string_equal(list_all(f, a, &p, ME, limit),
                            "Run a marathon Running shoes Groceries");
    kv p2 = {.n = 0};
    kv_set(&p2, "q", "run -marathon");
    assert_string_equal(list_all(f, a, &p2, ME, 2), "Running shoes Groceries");
    kv p3 = {.n = 0};
    kv_set(&p3, "q", "\"running shoes\" or april");
    assert_string_equal(list_all(f, a, &p3, ME, 1), "Running shoes Tax return");
    kv p4 = {.n = 0};
    kv_set(&p4, "q", "cafe naive resume");
    assert_string_equal(list_all(f, a, &p4, ME, 5), "Café visit");
    kv p5 = {.n = 0};
    kv_set(&p5, "q", "-running -run");
    assert_string_equal(list_all(f, a, &p5, ME, 5), "Café visit Tax return");
    /* hostile text is just text */
    const char *hostile[] = {"'; DROP TABLE tasks; --",
                             "\" OR 1=1 --",
                             "NEAR(a b)",
                             "title:run",
                             "run*",
                             "{title}: run",
                             ")(",
                             "\"\"\"",
                             "-",
                             "^run",
                             "a AND",
                             "NOT run"};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        kv ph = {.n = 0};
        kv_set(&ph, "q", hostile[i]);
        (void)list_all(f, a, &ph, ME, 3);
    }
    kv ps = {.n = 0};
    kv_set(&ps, "q", "running");
    kv_set(&ps, "sort", "created_at");
    assert_string_equal(list_all(f, a, &ps, ME, 2), "Groceries Running shoes Run a marathon");
    /* the table is still there and whole */
    kv all = {.n = 0};
    assert_string_equal(list_all(f, a, &all, ME, 10),
                        "Café visit Run a marathon Tax return Running shoes Groceries");
    dk_arena_free(a);
}

/* Relevance on SQLite is computed from each row alone (docket_hits: 10 per hit in the title, 1
 * per hit in the description): more hits above fewer, a title hit above a description hit, and
 * pages that stay put while another user adds matching tasks between two requests (bm25()
 * would move every row's value with the table's statistics, and the cursor with it). */
static void test_run_relevance(void **state)
{
    fixture *f = *state;
    dk_arena *a = dk_arena_new();
    put(f, a, 1, ME, NULL, "Other", "a report", 1, 0, NULL);                     /* 1 */
    put(f, a, 2, ME, NULL, "Report", "nothing else", 1, 0, NULL);                /* 10 */
    put(f, a, 3, ME, NULL, "Misc", "report, reports and reporting", 1, 0, NULL); /* 3 */
    put(f, a, 4, ME, NULL, "Report the report", "", 1, 0, NULL);                 /* 20 */
    put(f, a, 5, ME, NULL, "Budget", "report twice: report", 1, 0, NULL);        /* 2 */
    put(f, a, 6, OTHER, ME, "Assigned report", "", 1, 0, NULL);                  /* 10 */
    put(f, a, 7, OTHER, NULL, "Report of other", "report report", 1, 0, NULL);   /* not mine */
    put(f, a, 8, ME, NULL, "Unrelated", "nothing", 1, 0, NULL);
    const char *want = "Report the report Assigned report Report Misc Budget Other";
    for (int limit = 1; limit <= 7; limit++) {
        kv p = {.n = 0};
        kv_set(&p, "q", "report");
        assert_string_equal(list_all(f, a, &p, ME, limit), want);
    }

    /* page by page, while OTHER writes matching tasks (title and description) in between */
    kv p = {.n = 0};
    kv_set(&p, "q", "report");
    kv_set(&p, "limit", "2");
    char *got = dk_arena_strdup(a, "");
    int seq = 100;
    for (int pages = 0; pages < 10; pages++) {
        tasks_list_query q;
        dk_errors errs;
        assert_int_equal(parse_as(a, &p, ME, &q, &errs), DK_OK);
        tasks_task *items = NULL;
        int n = 0;
        char *next = NULL;
        assert_int_equal(tasks_repo_list(&f->repo, a, &q, &items, &n, &next), DK_OK);
        for (int i = 0; i < n; i++)
            got = dk_arena_printf(a, "%s%s%s", got, *got ? " " : "", items[i].title);
        if (!next)
            break;
        for (int k = 0; k < 25; k++, seq++)
            put(f, a, seq, OTHER, NULL, "Report report report", "report everywhere report", 1, 0,
                NULL);
        kv_set(&p, "cursor", next);
    }
    assert_string_equal(got, want);

    /* the scope follows the row: assigning a task makes it searchable for the assignee, and
     * unassigning it takes it away again */
    const char *upd[] = {ME, "01936d5e-0000-7000-8000-000000000007"};
    dk_db_rows *rows = NULL;
    assert_int_equal(
        dk_sql(&f->db, a, "UPDATE tasks SET assignee_id = $1 WHERE id = $2", 2, upd, &rows), DK_OK);
    kv po = {.n = 0};
    kv_set(&po, "q", "report");
    assert_string_equal(list_all(f, a, &po, ME, 3),
                        "Report the report Report of other Assigned report Report Misc Budget "
                        "Other"); /* 20, 12 (10 + 2), 10, 10 (newer first), 3, 2, 1 */
    assert_int_equal(dk_sql(&f->db, a,
                            "UPDATE tasks SET assignee_id = NULL WHERE id = $2 AND $1 "
                            "= $1",
                            2, upd, &rows),
                     DK_OK);
    assert_string_equal(list_all(f, a, &po, ME, 3), want);
    /* the plan: one read of the full-text index (its MATCH holds the caller's scope tokens, one
     * per arm, ORed), each match looked up by rowid for the arms' predicates, and the page's
     * rows by rowid again after the sort; no global match list is built */
    tasks_list_query q;
    dk_errors errs;
    kv pe = {.n = 0};
    kv_set(&pe, "q", "report");
    if (parse_as(a, &pe, ME, &q, &errs) != DK_OK)
        fail_msg("parse failed: %s", json_dumps(errs.list, 0));
    q.member_projects = (const char *[]){THIRD};
    q.nmember_projects = 1;
    tasks_sql s;
    tasks_query_build(a, DK_DB_SQLITE, &q, &s);
    assert_int_equal(dk_sql(&f->db, a, dk_arena_printf(a, "EXPLAIN QUERY PLAN %s", s.sql),
                            s.nparams, s.params, &rows),
                     DK_OK);
    int fts_scans = 0, rowid_lookups = 0;
    for (int i = 0; i < rows->nrows; i++) {
        const char *d = dk_db_value(rows, i, 3);
        assert_null(strstr(d, "LIST SUBQUERY"));      /* the old plan: every match, materialised */
        assert_int_not_equal(strcmp(d, "SCAN t"), 0); /* never the whole table */
        assert_null(strstr(d, "SEARCH t USING INDEX"));
        fts_scans += strstr(d, "SCAN tasks_fts VIRTUAL TABLE INDEX 0:M") != NULL;
        rowid_lookups += strstr(d, "SEARCH t USING INTEGER PRIMARY KEY (rowid=?)") != NULL;
    }
    assert_int_equal(rowid_lookups, 2);
    assert_int_equal(fts_scans, 1); /* own, assigned to me and the project's, at once */
    assert_non_null(strstr(s.sql, "tasks_fts MATCH $"));
    bool three_tokens = false;
    for (int k = 0; k < s.nparams; k++)
        three_tokens |= strncmp(s.params[k], "{scope} : (\"o", 13) == 0 &&
                        strstr(s.params[k], " OR \"a") && strstr(s.params[k], " OR \"p");
    assert_true(three_tokens);
    /* a project task: found through the project's token by its members (one arm per project),
     * and through the unscoped arm by a member of more projects than get an arm each */
    const char *mv[] = {THIRD, "01936d5e-0000-7000-8000-000000000007"};
    assert_int_equal(
        dk_sql(&f->db, a, "UPDATE tasks SET project_id = $1 WHERE id = $2", 2, mv, &rows), DK_OK);
    for (int n = 0; n <= TASKS_PROJECT_ARMS_MAX; n++) {
        const char *mp[] = {n ? dk_arena_printf(a, "01936d5e-0000-7000-9000-%012d", n) : THIRD, ME};
        assert_int_equal(dk_sql(&f->db, a,
                                "INSERT INTO tasks_project_members (project_id, user_id, role, "
                                "added_at) VALUES ($1, $2, 1, 0)",
                                2, mp, &rows),
                         DK_OK);
        if (n == 0 || n == TASKS_PROJECT_ARMS_MAX) { /* one project; then more than 64 */
            kv pp = {.n = 0};
            kv_set(&pp, "q", "report");
            assert_string_equal(list_all(f, a, &pp, ME, 4),
                                "Report the report Report of other Assigned report Report Misc "
                                "Budget Other");
            kv_set(&pp, "q", "report -twice -misc");
            assert_string_equal(list_all(f, a, &pp, ME, 4),
                                "Report the report Report of other Assigned report Report Other");
            kv_set(&pp, "q", "-report");
            assert_string_equal(list_all(f, a, &pp, ME, 4), "Unrelated");
        }
    }
    /* the index agrees with the rows after all this */
    assert_int_equal(dk_sql(&f->db, a,
                            "INSERT INTO tasks_fts (tasks_fts) VALUES ('integrity-check')", 0, NULL,
                            &rows),
                     DK_OK);
    dk_arena_free(a);
}

/* Migration 6 converts a database written before it: the FTS5 index is rebuilt with the scope
 * tokens of the rows already there. */
static void test_run_migration_6_upgrade(void **state)
{
    (void)state;
    fixture f;
    memset(&f, 0, sizeof f);
    f.dir = dk_test_tmpdir("tasks_query_upgrade");
    char url[1024];
    snprintf(url, sizeof url, "sqlite:%s/t.db", f.dir);
    f.db.ops = &dk_db_sqlite_ops;
    dk_db_options o = {.url = url, .pool_size = 2, .acquire_timeout_ms = 5000};
    assert_int_equal(f.db.ops->open(&o, &f.db.db), DK_OK);
    int applied = 0;
    size_t before6 = 0; /* the migrations older than 6: a database written before it */
    while (before6 < DK_TASKS_NMIGRATIONS && dk_tasks_migrations[before6].version < 6)
        before6++;
    assert_true(before6 < DK_TASKS_NMIGRATIONS);
    assert_int_equal(dk_tasks_migrations[before6].version, 6);
    assert_int_equal(dk_migrate_apply(&f.db, "tasks", dk_tasks_migrations, before6, &applied),
                     DK_OK);
    f.repo.db = &f.db;
    f.repo.cursor_key = key;
    dk_arena *a = dk_arena_new();
    put(&f, a, 1, ME, NULL, "Old report", "written before 6", 1, 0, NULL);
    put(&f, a, 2, OTHER, ME, "Assigned old report", "report", 1, 0, NULL);
    put(&f, a, 3, OTHER, NULL, "Their report", "", 1, 0, NULL);
    assert_int_equal(
        dk_migrate_apply(&f.db, "tasks", dk_tasks_migrations, DK_TASKS_NMIGRATIONS, &applied),
        DK_OK);
    assert_int_equal(applied, (int)(DK_TASKS_NMIGRATIONS - before6));
    kv p = {.n = 0};
    kv_set(&p, "q", "report");
    assert_string_equal(list_all(&f, a, &p, ME, 1), "Assigned old report Old report");
    assert_string_equal(list_all(&f, a, &p, OTHER, 1), "Assigned old report Their report");
    put(&f, a, 4, ME, NULL, "New report", "", 1, 0, NULL);
    assert_string_equal(list_all(&f, a, &p, ME, 2), "Assigned old report New report Old report");
    dk_arena_free(a);
    f.db.ops->close(f.db.db);
    free(f.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_valid_values),
        cmocka_unit_test(test_invalid_values),
        cmocka_unit_test(test_fts_query),
        cmocka_unit_test(test_sql_default_shape),
        cmocka_unit_test(test_sql_arms),
        cmocka_unit_test(test_sql_project_arms),
        cmocka_unit_test(test_sql_filters_both_engines),
        cmocka_unit_test(test_sql_relevance_and_cursor),
        cmocka_unit_test_setup_teardown(test_run_sorts_and_filters, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_run_search, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_run_relevance, fx_setup, fx_teardown),
        cmocka_unit_test(test_run_migration_6_upgrade),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
