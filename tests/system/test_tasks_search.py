"""Full-text search over tasks (`q`): stemming, ranking (a title hit above a description hit,
more occurrences above fewer, computed from each task alone so pages stay put while others
write), the websearch syntax (phrases, -exclusion, or), hostile input, paging through results,
migration 6 converting an existing database — and, on PostgreSQL, that the list and search
statements the service really runs use indexes on a table of 100,000 tasks."""

import re
import time

import pytest

from helpers import wait_until
from test_tasks import TASKS, assert_bad_params, list_all, new_task


def titles(items):
    return [t["title"] for t in items]


def search(d, token, q, **params):
    return list_all(d, token, dict(params, q=q))


def test_search_stemming_and_scope(docket):
    a = docket.new_user()
    b = docket.new_user()
    new_task(docket, a.access, title="Go running tomorrow")
    new_task(docket, a.access, title="Groceries", description="remember to run errands")
    new_task(docket, a.access, title="Tax return", description="file it", status="done")
    new_task(docket, a.access, title="Ran out of coffee", labels=["home"])
    new_task(docket, b.access, title="Running with B")               # not A's
    shared = new_task(docket, b.access, title="B's run, for A", assignee_id=a.id)
    for q in ("run", "running", "runs", "RUN"):
        got = set(titles(search(docket, a.access, q)))
        assert got == {"Go running tomorrow", "Groceries", "B's run, for A"}, (q, got)
    assert titles(search(docket, a.access, "coffee")) == ["Ran out of coffee"]
    assert titles(search(docket, a.access, "file")) == ["Tax return"]
    assert search(docket, a.access, "nonexistentword") == []
    # search and filters combine
    assert titles(search(docket, a.access, "run", owner=b.id)) == [shared["title"]]
    assert titles(search(docket, a.access, "run", assignee="me")) == [shared["title"]]
    assert search(docket, a.access, "file", status="todo") == []
    assert titles(search(docket, a.access, "coffee", label="home")) == ["Ran out of coffee"]
    # a blank search is no search
    assert len(list_all(docket, a.access, {"q": "   "})) == 5
    # an explicit sort overrides relevance
    got = search(docket, a.access, "run", sort="created_at")
    assert titles(got) == ["Go running tomorrow", "Groceries", "B's run, for A"]


def test_title_hit_ranks_above_description_hit(docket):
    a = docket.new_user()
    # created first, so newest-first ordering alone would put it last
    title_hit = new_task(docket, a.access, title="Quarterly report", description="numbers")
    desc_hits = [
        new_task(docket, a.access, title="Misc", description="the report is due friday"),
        new_task(docket, a.access, title="Other", description="report, report and report"),
        new_task(docket, a.access, title="Third", description="a report"),
    ]
    both = new_task(docket, a.access, title="Report review", description="review the report")
    got = search(docket, a.access, "report")
    assert {t["id"] for t in got} == {title_hit["id"], both["id"]} | {t["id"] for t in desc_hits}
    order = [t["id"] for t in got]
    assert set(order[:2]) == {title_hit["id"], both["id"]}, titles(got)
    for t in desc_hits:
        assert order.index(t["id"]) > order.index(title_hit["id"])
    # paging through relevance keeps that order
    assert [t["id"] for t in list_all(docket, a.access, {"q": "report"}, limit=1)] == order
    assert [t["id"] for t in list_all(docket, a.access, {"q": "report"}, limit=2)] == order


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_relevance_counts_hits_and_pages_stay_put(storage, docket_factory):
    """Relevance from each task alone, on both engines: more occurrences above fewer, a title
    hit above a description hit, ties newest first; a search paged one task at a time while
    another user keeps writing matching tasks (which would move any rank built on the table's
    statistics, and the cursor with it) returns exactly the order of one big page."""
    d = docket_factory(storage)
    a = d.new_user()
    b = d.new_user()
    mk = lambda title, description="": new_task(d, a.access, title=title, description=description)
    once_desc = mk("Other", "a ledger")
    title = mk("Ledger", "nothing else")
    thrice_desc = mk("Misc", "ledger, ledgers and the ledger")
    twice_title = mk("Ledger of the ledger")
    twice_desc = mk("Budget", "ledger twice: ledger")
    assigned = new_task(d, b.access, title="Ledger for A", assignee_id=a.id)
    new_task(d, b.access, title="Ledger of B", description="ledger ledger")   # not A's
    want = [twice_title, assigned, title, thrice_desc, twice_desc, once_desc]
    want_ids = [t["id"] for t in want]
    got = search(d, a.access, "ledger")
    assert [t["id"] for t in got] == want_ids, titles(got)

    seen, cursor = [], None
    for _ in range(len(want) + 1):
        params = {"q": "ledger", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = d.get(TASKS, token=a.access, params=params).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
        for _ in range(6):   # B's writes between A's pages: in titles and descriptions
            new_task(d, b.access, title="Ledger ledger ledger", description="ledger " * 5)
    assert seen == want_ids


def test_search_syntax(docket):
    a = docket.new_user()
    new_task(docket, a.access, title="Weekly report", description="send it")
    new_task(docket, a.access, title="Report for the week", description="weekly, maybe")
    new_task(docket, a.access, title="Alpha release")
    new_task(docket, a.access, title="Beta release")
    new_task(docket, a.access, title="Gamma release")
    assert set(titles(search(docket, a.access, "weekly report"))) == \
        {"Weekly report", "Report for the week"}
    assert titles(search(docket, a.access, '"weekly report"')) == ["Weekly report"]
    assert titles(search(docket, a.access, "report -send")) == ["Report for the week"]
    assert titles(search(docket, a.access, 'report -"send it"')) == ["Report for the week"]
    assert set(titles(search(docket, a.access, "alpha or beta"))) == \
        {"Alpha release", "Beta release"}
    assert set(titles(search(docket, a.access, "release -alpha -beta"))) == {"Gamma release"}
    assert set(titles(search(docket, a.access, "alpha OR gamma release"))) == \
        {"Alpha release", "Gamma release"}


def test_hostile_search_text(docket):
    a = docket.new_user()
    for i in range(3):
        new_task(docket, a.access, title=f"Plain task {i}", description="nothing special")
    hostile = [
        "'; DROP TABLE tasks; --", "\" OR 1=1 --", "' OR ''='", "%", "_", "\\", "*", "a*",
        "NEAR(plain task)", "title:plain", "{title}: plain", "plain AND", "NOT plain", "^plain",
        ")(", "(((", "\"\"\"", "\"", "-", "--", "- -", "or", "OR OR", "a & b", "!plain", "plain:*",
        "plain <-> task", "plain | task", "\x00", "plain\u0000task", "日本語", "🙂", "é" * 500,
        "plain " * 80, "tasks_fts", "rowid", "$1", "?", ";", "/* */",
    ]
    for q in hostile:
        resp = docket.get(TASKS, token=a.access, params={"q": q, "limit": 5})
        if resp.status_code == 400:
            assert_bad_params(resp, {"q"})      # only for text that is not valid as given
            continue
        assert resp.status_code == 200, (q, resp.text)
        for t in resp.json()["items"]:
            assert t["owner_id"] == a.id
    assert_bad_params(docket.get(TASKS, token=a.access, params={"q": "é" * 501}), {"q"})
    assert len(list_all(docket, a.access)) == 3
    assert len(search(docket, a.access, "plain task")) == 3


def test_search_pagination(docket):
    a = docket.new_user()
    for i in range(17):
        # varying relevance: some in the title, some in the description, some both
        title = "Budget item" if i % 3 == 0 else f"Item {i}"
        description = "budget line" if i % 2 == 0 else "misc"
        new_task(docket, a.access, title=title, description=description)
    full = [t["id"] for t in search(docket, a.access, "budget")]
    assert len(full) == len(set(full)) == 12
    for limit in (1, 4, 5, 11):
        assert [t["id"] for t in list_all(docket, a.access, {"q": "budget"}, limit=limit)] == full
    # a search cursor belongs to its search
    first = docket.get(TASKS, token=a.access, params={"q": "budget", "limit": 4}).json()
    assert_bad_params(docket.get(TASKS, token=a.access,
                                 params={"q": "budgets", "limit": 4,
                                         "cursor": first["next_cursor"]}), {"cursor"})


# --------------------------------------------------------------------------- PostgreSQL plans

SEED_SQL = """
INSERT INTO tasks.tasks (id, owner_id, assignee_id, title, description, status, priority,
                         due_at, labels, created_at, updated_at, version)
SELECT {uuid_of_g},
       CASE WHEN g %% 10 = 0 THEN %(owner)s ELSE {uuid_of_owner} END,
       CASE WHEN g %% 97 = 0 THEN %(owner)s END,
       'Seeded task ' || g || CASE WHEN g %% 1000 IN (0, 1) THEN ' zebra' ELSE '' END,
       (ARRAY['alpha', 'beta', 'gamma', 'delta'])[1 + g %% 4] || ' notes for item ' || g,
       (ARRAY['todo', 'in_progress', 'done'])[1 + g %% 3],
       g %% 4,
       CASE WHEN g %% 3 = 0 THEN NULL ELSE 1893456000000 + g * 60000 END,
       ARRAY['l' || (g %% 50)],
       1700000000000 + g * 1000, 1700000000000 + g * 1000, 1
FROM generate_series(1::bigint, 50000::bigint) AS g
"""


# Projects: 500 of them with 10 members each, 50,000 more tasks spread over them, and the test's
# user a member of 50 (every tenth): a member of many projects with 100k tasks in the table.
PROJECTS_SQL = """
INSERT INTO tasks.tasks_projects (id, owner_id, name, name_key, description, created_at,
                                  updated_at, version)
SELECT {uuid_of_p}, {uuid_of_powner}, 'Project ' || g, 'project ' || g, '', 1700000000000,
       1700000000000, 1
FROM generate_series(1::bigint, 500::bigint) AS g;
INSERT INTO tasks.tasks_project_members (project_id, user_id, role, added_at)
SELECT {uuid_of_p}, {uuid_of_member}, 1, 1700000000000
FROM generate_series(1::bigint, 500::bigint) AS g, generate_series(1::bigint, 10::bigint) AS k;
INSERT INTO tasks.tasks_project_members (project_id, user_id, role, added_at)
SELECT {uuid_of_p}, %(me)s, 1, 1700000000000
FROM generate_series(10::bigint, 500::bigint, 10::bigint) AS g;
INSERT INTO tasks.tasks (id, owner_id, assignee_id, title, description, status, priority,
                         due_at, labels, created_at, updated_at, version, project_id)
SELECT {uuid_of_pt}, {uuid_of_powner},
       CASE WHEN g %% 89 = 0 THEN %(me)s END,
       'Project task ' || g || CASE WHEN g %% 1000 IN (9, 19, 20) THEN ' zebra' ELSE '' END,
       (ARRAY['alpha', 'beta', 'gamma', 'delta'])[1 + g %% 4] || ' shared notes ' || g,
       (ARRAY['todo', 'in_progress', 'done'])[1 + g %% 3],
       g %% 4,
       CASE WHEN g %% 3 = 0 THEN NULL ELSE 1893456000000 + g * 60000 END,
       ARRAY['l' || (g %% 50)],
       1700000000500 + g * 1000, 1700000000500 + g * 1000, 1,
       {uuid_of_tp}
FROM generate_series(1::bigint, 50000::bigint) AS g
"""


def _project_of_task(g):
    return 1 + g % 500


def _uuid_sql(expr):
    h = f"md5({expr})"
    return (f"substr({h}, 1, 8) || '-' || substr({h}, 9, 4) || '-' || substr({h}, 13, 4) || "
            f"'-' || substr({h}, 17, 4) || '-' || substr({h}, 21, 12)")


def _uuid_of(text):
    import hashlib
    h = hashlib.md5(text.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _plans(log_text):
    """auto_explain entries of the service's list statements: (query text, plan text)."""
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log_text)
    out = []
    for e in entries:
        if "plan:" not in e or "Query Text: /* tasks.list */" not in e:
            continue
        body = e.split("Query Text:", 1)[1]
        query, _, plan = body.partition("\n\t")
        # the plan starts at the first line that is not the query's continuation
        out.append((query.strip(), plan))
    return out


def test_postgres_list_and_search_use_indexes(docket_factory, own_pg):
    """50,000 tasks seeded with SQL, then ANALYZE; the statements docket runs for the main list
    (owner = me, newest first, limit 21), every sort, the filters and the search are captured
    with auto_explain as executed, and none of them scans the tasks table sequentially."""
    conn = own_pg.connect()
    with conn.cursor() as cur:
        cur.execute("LOAD 'auto_explain'")
        cur.execute("ALTER ROLE postgres SET session_preload_libraries = 'auto_explain'")
        cur.execute("ALTER ROLE postgres SET auto_explain.log_min_duration = 0")
    conn.close()
    d = docket_factory("postgres", pg=own_pg)
    a = d.new_user()
    new_task(d, a.access, title="A real one", description="made through the API")
    conn = own_pg.connect(d.db_url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            started = time.monotonic()
            cur.execute(SEED_SQL.format(uuid_of_g=_uuid_sql("g::text"),
                                        uuid_of_owner=_uuid_sql("'owner' || (g %% 500)")),
                        {"owner": a.id})
            assert cur.rowcount == 50000
            cur.execute(PROJECTS_SQL.format(
                uuid_of_p=_uuid_sql("'p' || g"), uuid_of_powner=_uuid_sql("'powner' || (g %% 50)"),
                uuid_of_member=_uuid_sql("'member' || ((g * 7 + k) %% 2000)"),
                uuid_of_pt=_uuid_sql("'pt' || g"), uuid_of_tp=_uuid_sql("'p' || (1 + g %% 500)")),
                {"me": a.id})
            # migration 11: the text index's pending list (read whole by every search) stays
            # within 256 kB (32 pages) while tasks are written; by default it grew to 4 MB
            cur.execute("SELECT reloptions FROM pg_class WHERE relname = 'tasks_scope_search_idx'")
            assert cur.fetchone()[0] == ["gin_pending_list_limit=256"]
            cur.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            cur.execute("SELECT pending_pages FROM pgstatginindex('tasks.tasks_scope_search_idx')")
            assert cur.fetchone()[0] <= 32
            for table in ("tasks", "tasks_projects", "tasks_project_members"):
                cur.execute(f"ANALYZE tasks.{table}")
            cur.execute("SELECT id FROM tasks.tasks_projects WHERE name = 'Project 20'")
            project20 = cur.fetchone()[0]
            seeded_in = time.monotonic() - started
            cur.execute("SELECT count(*) FROM tasks.tasks WHERE owner_id = %s", (a.id,))
            assert cur.fetchone()[0] == 5001
    finally:
        conn.close()
    assert seeded_in < 120

    requests_made = [
        {}, {"owner": "me"}, {"sort": "created_at"}, {"sort": "due_at"}, {"sort": "-due_at"},
        {"sort": "priority"}, {"sort": "-priority"}, {"sort": "updated_at"},
        {"sort": "-updated_at"}, {"assignee": "me"}, {"status": "done"}, {"label": "l7"},
        {"priority": "urgent"}, {"due_before": "2030-01-10T00:00:00Z"},
        {"due_after": "2030-01-20T00:00:00Z"}, {"q": "zebra"}, {"q": "zebra", "sort": "-due_at"},
        {"q": "alpha notes"}, {"q": "zebra", "owner": "me", "label": "l0"},
        {"project_id": project20}, {"project_id": project20, "sort": "-due_at"},
        {"project_id": project20, "q": "zebra"}, {"project_id": project20, "status": "done"},
        {"owner": _uuid_of("powner3")}, {"q": "shared notes"},
    ]
    for params in requests_made:
        resp = d.get(TASKS, token=a.access, params=params)
        assert resp.status_code == 200, (params, resp.text)
    page1 = d.get(TASKS, token=a.access).json()
    assert len(page1["items"]) == 20 and page1["next_cursor"]
    page2 = d.get(TASKS, token=a.access, params={"cursor": page1["next_cursor"]}).json()
    assert len(page2["items"]) == 20
    zebras = list_all(d, a.access, {"q": "zebra"}, limit=7)
    want = sum(1 for g in range(1, 50001) if g % 1000 in (0, 1) and (g % 10 == 0 or g % 97 == 0))
    want_shared = sum(1 for g in range(1, 50001)
                      if g % 1000 in (9, 19, 20) and _project_of_task(g) % 10 == 0)
    assert want_shared > 0
    assert len(zebras) == want + want_shared
    assert all(t["owner_id"] == a.id or t["assignee_id"] == a.id or
               _project_of_task(int(t["title"].split()[2])) % 10 == 0
               for t in zebras if t["project_id"])
    in20 = list_all(d, a.access, {"project_id": project20}, limit=100)
    assert len(in20) == 100 and all(t["project_id"] == project20 for t in in20)
    expected = len(requests_made) + 2 + 8 + 2

    plans = wait_until(lambda: (lambda p: p if len(p) >= expected else None)(
        _plans(own_pg.log_text())), 20, what="auto_explain plans of the list statements")
    assert len(plans) >= expected
    for query, plan in plans:
        assert "Seq Scan on tasks" not in plan, f"sequential scan for:\n{query}\n{plan}"
        assert "Index" in plan, f"no index used for:\n{query}\n{plan}"
    # the main list (first page and a later one): own personal tasks, newest first, limit 21
    default = [p for q, p in plans if "UNION ALL" in q and (
        "WHERE t.owner_id = $1 AND t.project_id IS NULL ORDER BY t.created_at DESC, t.id DESC" in q
        or "WHERE t.owner_id = $1 AND t.project_id IS NULL AND (t.created_at, t.id) < (" in q)]
    assert len(default) >= 3, [q for q, _ in plans]
    assert default and all("tasks_owner_created_idx" in p for p in default), default[:1]
    # search (migration 6): no arm reads a word's matches over every user's tasks (an index
    # condition on the text alone, intersected with an owner index before); the caller's own
    # tasks (5,001 here) are read from the GIN over (owner_id, assignee_id, project_id, search),
    # the caller's id and the words together. (The small arms, 500 assigned tasks and 100 per
    # project, may read their btree and filter: the planner's choice, cheap either way.)
    searches = [p for q, p in plans if "websearch_to_tsquery" in q]
    assert searches
    for p in searches:
        assert "tasks_search_idx" not in p and not re.search(r"Index Cond: \(search @@", p), p
    owner_arm = [p for p in searches if re.search(
        r"Bitmap Index Scan on tasks_scope_search_idx[^\n]*\n\s*Index Cond: \(\(owner_id = "
        r"[^\n]*AND \(search @@ ", p)]
    assert len(owner_arm) >= 4, searches
    # ordered by relevance: the arms yield (ctid, id, relevance) only, every match is ranked and
    # sorted once (one Sort in the plan), and the page's rows are read by ctid afterwards
    ranked = [p for q, p in plans if "t.ctid = s.tid" in q]
    assert len(ranked) >= 4, [q for q, _ in plans if "websearch_to_tsquery" in q]
    for p in ranked:
        assert "Tid Scan on tasks" in p and len(re.findall(r"->  Sort ", p)) == 1, p
    # the projects' arm: a page per membership, each read in order from a project index
    lateral = [p for q, p in plans if "CROSS JOIN LATERAL" in q]
    assert lateral and all("tasks_project_members_user_idx" in p for p in lateral), lateral[:1]
    plain = [p for q, p in plans
             if "t.project_id = m.project_id ORDER BY t.created_at DESC" in q
             or "t.project_id = m.project_id AND (t.created_at, t.id) < (" in q]
    assert len(plain) >= 3 and all("tasks_project_created_idx" in p for p in plain), plain[:1]
    one = [p for q, p in plans if "t.project_id = $2 AND EXISTS" in q]
    assert one and all("tasks_project_" in p for p in one), one[:1]


# The search index as it stood before migration 6, to put a live database back there.
BEFORE_6_SQLITE = """
DROP TRIGGER tasks_fts_insert; DROP TRIGGER tasks_fts_delete; DROP TRIGGER tasks_fts_update;
DROP TABLE tasks_fts; DROP VIEW tasks_fts_src;
CREATE VIRTUAL TABLE tasks_fts USING fts5(title, description, content='tasks',
  content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2');
INSERT INTO tasks_fts (tasks_fts) VALUES ('rebuild');
CREATE TRIGGER tasks_fts_insert AFTER INSERT ON tasks BEGIN
  INSERT INTO tasks_fts (rowid, title, description) VALUES (new.rowid, new.title, new.description);
END;
CREATE TRIGGER tasks_fts_delete AFTER DELETE ON tasks BEGIN
  INSERT INTO tasks_fts (tasks_fts, rowid, title, description)
  VALUES ('delete', old.rowid, old.title, old.description);
END;
CREATE TRIGGER tasks_fts_update AFTER UPDATE OF title, description ON tasks
WHEN old.title IS NOT new.title OR old.description IS NOT new.description BEGIN
  INSERT INTO tasks_fts (tasks_fts, rowid, title, description)
  VALUES ('delete', old.rowid, old.title, old.description);
  INSERT INTO tasks_fts (rowid, title, description) VALUES (new.rowid, new.title, new.description);
END;
DELETE FROM docket_migrations WHERE service = 'tasks' AND version = 6;
"""
BEFORE_6_POSTGRES = """
CREATE INDEX tasks_search_idx ON tasks.tasks USING GIN (search);
DROP INDEX tasks.tasks_scope_search_idx;
DELETE FROM public.docket_migrations WHERE service = 'tasks' AND version = 6;
"""


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_migration_6_converts_existing_data(storage, docket_factory):
    """A database written before migration 6 (put back there under a running docket, then given
    more tasks through the old triggers) is converted in place by `docket migrate`: every task is
    found by its owner, its assignee and its project's members, and nobody else."""
    import sqlite3
    from helpers import run_cli
    d = docket_factory(storage)
    a, b, c = d.new_user(), d.new_user(), d.new_user()
    new_task(d, a.access, title="Quarry plan", description="quarry")
    if storage == "sqlite":
        db = sqlite3.connect(f"{d.data_dir}/docket.db", timeout=10)
        db.executescript(BEFORE_6_SQLITE)
        db.close()
    else:
        from urllib.parse import urlparse
        u = urlparse(d.db_url)
        import psycopg2
        conn = psycopg2.connect(host=u.hostname, port=u.port, user=u.username, dbname=u.path[1:])
        conn.autocommit = True
        conn.cursor().execute(BEFORE_6_POSTGRES)
    new_task(d, b.access, title="Quarry for A", assignee_id=a.id)        # written by old triggers
    new_task(d, b.access, title="Quarry of B", description="quarry quarry")
    project = d.post("/api/v1/projects", token=c.access, json={"name": "Pit"}).json()
    resp = d.post(f"/api/v1/projects/{project['id']}/members", token=c.access,
                  json={"email": a.email, "role": "viewer"})
    assert resp.status_code in (200, 201), resp.text
    new_task(d, c.access, title="Quarry in the pit", project_id=project["id"])
    args = ["migrate"] + ([f"--storage.data_dir={d.data_dir}"] if storage == "sqlite" else [])
    r = run_cli(args, env=d.env, cwd=d.cwd, timeout=60)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert set(titles(search(d, a.access, "quarry"))) == \
        {"Quarry plan", "Quarry for A", "Quarry in the pit"}
    assert set(titles(search(d, b.access, "quarry"))) == {"Quarry for A", "Quarry of B"}
    assert titles(search(d, c.access, "quarry")) == ["Quarry in the pit"]
    if storage == "postgres":
        with conn.cursor() as cur:
            cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'tasks' AND "
                        "indexname LIKE 'tasks_%search_idx'")
            assert [r[0] for r in cur.fetchall()] == ["tasks_scope_search_idx"]
        conn.close()
