"""GET /api/v1/tasks: what a caller sees, every filter and sort, keyset pagination and its
cursors (opaque, tamper-evident, tied to their filters, shared by replicas), invalid
parameters, and stability while other requests insert and delete."""

import random
import threading
import time

import pytest

import helpers
from helpers import assert_problem, assert_unauthorized
from test_tasks import TASKS, assert_bad_params, list_all, new_task

RANKS = {"low": 0, "medium": 1, "high": 2, "urgent": 3}


def ids(items):
    return [t["id"] for t in items]


def expected_order(tasks, sort):
    """The contract's order: sort key, then id in the same direction; no due date last."""
    desc = sort.startswith("-")
    field = sort.lstrip("-")
    if field == "due_at":
        dated = sorted((t for t in tasks if t["due_at"] is not None),
                       key=lambda t: (helpers.parse_time(t["due_at"]), t["id"]), reverse=desc)
        undated = sorted((t for t in tasks if t["due_at"] is None), key=lambda t: t["id"],
                         reverse=desc)
        return ids(dated + undated)
    if field == "priority":
        key = (lambda t: (RANKS[t["priority"]], t["id"]))
    else:
        key = (lambda t: (helpers.parse_time(t[field]), t["id"]))
    return ids(sorted(tasks, key=key, reverse=desc))


def start_replica(first, tmp_path, name, jwt_secret=None):
    """Another docket on the same database as `first` (same secret unless one is given)."""
    env = dict(first.env)
    if jwt_secret is not None:
        env["JWT_SECRET"] = jwt_secret
    port = helpers.free_port()
    args = [a for a in first.args if not a.startswith("--server.port=")]
    args.append(f"--server.port={port}")
    d = helpers.Docket(mode=first.mode, args=args, env=env, cwd=first.cwd, port=port,
                       log_path=str(tmp_path / f"{name}.log"), data_dir=first.data_dir,
                       db_url=first.db_url, jwt_secret=env.get("JWT_SECRET"), name=name)
    return d.start()


def stop_replica(d):
    rc = d.stop()
    assert rc == 0, f"{d.name} exited {rc}:\n{d.log_tail()}"
    assert not helpers.sanitizer_reports(d.log_text()), d.log_tail()


@pytest.fixture
def seeded(docket):
    """User A with a varied set of tasks, B and C with some of their own; returns
    (docket, a, b, c, tasks A can see)."""
    a, b, c = docket.new_user(), docket.new_user(), docket.new_user()
    rnd = random.Random(7)
    visible = []
    for i in range(24):
        body = {
            "title": f"A task {i}",
            "status": ("todo", "in_progress", "done")[i % 3],
            "priority": ("low", "medium", "high", "urgent")[i % 4],
            "labels": [["home"], ["work"], ["home", "errand"], []][i % 4],
        }
        if i % 5:
            body["due_at"] = f"2030-01-{1 + rnd.randrange(5):02d}T00:00:00Z"  # many ties
        if i % 6 == 0:
            body["assignee_id"] = b.id
        visible.append(new_task(docket, a.access, **body))
    for i in range(6):   # B's tasks; half assigned to A
        body = {"title": f"B task {i}", "priority": "high" if i % 2 else "low",
                "labels": ["work"]}
        if i % 2:
            body["assignee_id"] = a.id
            body["due_at"] = "2030-01-03T00:00:00Z"
        t = new_task(docket, b.access, **body)
        if i % 2:
            visible.append(t)
    new_task(docket, c.access, title="C's own", labels=["home"])
    new_task(docket, c.access, title="C's for B", assignee_id=b.id)
    return docket, a, b, c, visible


def test_list_shape_visibility_and_default_order(seeded):
    d, a, b, c, visible = seeded
    resp = d.get(TASKS, token=a.access)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"items", "next_cursor"}
    assert len(body["items"]) == 20                    # default page size
    assert isinstance(body["next_cursor"], str) and body["next_cursor"]
    items = list_all(d, a.access)
    assert sorted(ids(items)) == sorted(ids(visible))
    assert ids(items) == expected_order(visible, "-created_at")
    assert items == sorted(items, key=lambda t: (t["created_at"], t["id"]), reverse=True)
    for t in items:
        assert t["owner_id"] == a.id or t["assignee_id"] == a.id
    # C sees only C's own; B sees B's and what is assigned to B
    assert [t["title"] for t in list_all(d, c.access)] == ["C's for B", "C's own"]
    b_items = list_all(d, b.access)
    assert all(t["owner_id"] == b.id or t["assignee_id"] == b.id for t in b_items)
    assert len(b_items) == 6 + 4 + 1
    assert_unauthorized(d.get(TASKS))


def test_filters(seeded):
    d, a, b, c, visible = seeded

    def check(params, predicate):
        got = list_all(d, a.access, params, limit=5)
        want = [t for t in visible if predicate(t)]
        assert ids(got) == expected_order(want, "-created_at"), params
        return got

    for s in ("todo", "in_progress", "done"):
        check({"status": s}, lambda t, s=s: t["status"] == s)
    for p in RANKS:
        check({"priority": p}, lambda t, p=p: t["priority"] == p)
    for label in ("home", "work", "errand"):
        check({"label": label}, lambda t, label=label: label in t["labels"])
    assert list_all(d, a.access, {"label": "nope"}) == []
    assert list_all(d, a.access, {"label": "x' OR '1'='1"}) == []
    check({"owner": "me"}, lambda t: t["owner_id"] == a.id)
    check({"owner": a.id}, lambda t: t["owner_id"] == a.id)
    check({"owner": b.id}, lambda t: t["owner_id"] == b.id)
    assert list_all(d, a.access, {"owner": c.id}) == []        # C's tasks are not A's to see
    check({"assignee": "me"}, lambda t: t["assignee_id"] == a.id)
    check({"assignee": b.id}, lambda t: t["assignee_id"] == b.id)
    assert list_all(d, a.access, {"assignee": c.id}) == []
    check({"owner": "me", "assignee": b.id},
          lambda t: t["owner_id"] == a.id and t["assignee_id"] == b.id)
    assert list_all(d, a.access, {"owner": b.id, "assignee": b.id}) == []
    cut = "2030-01-03T00:00:00Z"
    check({"due_before": cut},
          lambda t: t["due_at"] is not None and t["due_at"] < "2030-01-03T00:00:00.000Z")
    check({"due_after": cut},
          lambda t: t["due_at"] is not None and t["due_at"] >= "2030-01-03T00:00:00.000Z")
    check({"due_after": "2030-01-02T01:00:00+01:00", "due_before": "2030-01-04T00:00:00Z"},
          lambda t: t["due_at"] is not None
          and "2030-01-02T00:00:00.000Z" <= t["due_at"] < "2030-01-04T00:00:00.000Z")
    # all together (AND)
    check({"status": "todo", "label": "home", "owner": "me", "due_after": "2000-01-01T00:00:00Z"},
          lambda t: t["status"] == "todo" and "home" in t["labels"] and t["owner_id"] == a.id
          and t["due_at"] is not None)


def test_sorts(seeded):
    d, a, b, c, visible = seeded
    # give updated_at an order of its own
    for t in visible[::3]:
        if t["owner_id"] == a.id:
            assert d.patch(f"{TASKS}/{t['id']}", token=a.access,
                           json={"description": "touched"}).status_code == 200
    current = list_all(d, a.access)
    for sort in ("created_at", "-created_at", "due_at", "-due_at", "priority", "-priority",
                 "updated_at", "-updated_at"):
        want = expected_order(current, sort)
        for limit in (1, 4, 7, 100):
            got = list_all(d, a.access, {"sort": sort}, limit=limit)
            assert ids(got) == want, (sort, limit)
    # no due date sorts last both ways
    for sort in ("due_at", "-due_at"):
        got = list_all(d, a.access, {"sort": sort})
        dues = [t["due_at"] for t in got]
        first_null = dues.index(None)
        assert all(x is None for x in dues[first_null:]), (sort, dues)
        assert all(x is not None for x in dues[:first_null])
    got = [t["priority"] for t in list_all(d, a.access, {"sort": "priority"})]
    assert got == sorted(got, key=RANKS.get)
    # sorting and filtering together
    got = list_all(d, a.access, {"sort": "-priority", "label": "work"}, limit=3)
    assert ids(got) == expected_order([t for t in current if "work" in t["labels"]], "-priority")


def test_invalid_parameters(seeded):
    d, a, b, c, visible = seeded
    cases = [
        ({"status": "open"}, {"status"}),
        ({"status": ""}, {"status"}),
        ({"priority": "p1"}, {"priority"}),
        ({"label": ""}, {"label"}),
        ({"label": "l" * 51}, {"label"}),
        ({"owner": "somebody"}, {"owner"}),
        ({"assignee": "1 OR 1=1"}, {"assignee"}),
        ({"due_before": "yesterday"}, {"due_before"}),
        ({"due_after": "2030-01-01"}, {"due_after"}),
        ({"due_after": "2030-02-30T00:00:00Z"}, {"due_after"}),
        ({"sort": "title"}, {"sort"}),
        ({"sort": "created_at; DROP TABLE tasks"}, {"sort"}),
        ({"sort": "-"}, {"sort"}),
        ({"sort": "priority,created_at"}, {"sort"}),
        ({"limit": "0"}, {"limit"}),
        ({"limit": "101"}, {"limit"}),
        ({"limit": "-5"}, {"limit"}),
        ({"limit": "ten"}, {"limit"}),
        ({"limit": "2.5"}, {"limit"}),
        ({"limit": ""}, {"limit"}),
        ({"limit": "1e2"}, {"limit"}),
        ({"cursor": "not-a-cursor"}, {"cursor"}),
        ({"q": "x" * 501}, {"q"}),
        ({"status": "x", "sort": "y", "limit": "z", "due_before": "w"},
         {"status", "sort", "limit", "due_before"}),
    ]

    def check(case):
        params, fields = case
        assert_bad_params(d.get(TASKS, token=a.access, params=params), fields)

    helpers.check_each(cases, check)
    for limit in ("1", "100", "50"):
        resp = d.get(TASKS, token=a.access, params={"limit": limit})
        assert resp.status_code == 200
        assert len(resp.json()["items"]) == min(int(limit), len(visible))
    # unknown parameters are ignored
    assert d.get(TASKS, token=a.access, params={"colour": "blue"}).status_code == 200


def test_cursor_is_opaque_tamper_evident_and_tied_to_filters(seeded):
    d, a, b, c, visible = seeded
    params = {"label": "home", "sort": "-priority", "limit": 3}
    first = d.get(TASKS, token=a.access, params=params).json()
    cursor = first["next_cursor"]
    assert cursor and all(ch.isalnum() or ch in "-_" for ch in cursor)
    for secret in (a.id, "home", "priority"):
        assert secret not in cursor
    ok = d.get(TASKS, token=a.access, params=dict(params, cursor=cursor))
    assert ok.status_code == 200
    assert not set(ids(ok.json()["items"])) & set(ids(first["items"]))
    # a different page size may continue it
    assert d.get(TASKS, token=a.access,
                 params=dict(params, limit=10, cursor=cursor)).status_code == 200

    def altered():
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        for i in list(range(0, len(cursor), 5)) + [len(cursor) - 1]:
            for ch in (alphabet[(alphabet.index(cursor[i]) + 1) % 64],
                       alphabet[(alphabet.index(cursor[i]) + 33) % 64]):
                yield cursor[:i] + ch + cursor[i + 1:]
        yield cursor[:-1]
        yield cursor + "A"
        yield cursor + "="
        yield cursor[::-1]
        yield helpers.b64url(helpers.b64url_decode(cursor)[:-32] + b"\0" * 32)

    for bad in altered():
        assert_bad_params(d.get(TASKS, token=a.access, params=dict(params, cursor=bad)),
                          {"cursor"})
    # the same cursor with other filters, another sort, or by another user
    for other in ({"label": "work", "sort": "-priority"}, {"sort": "-priority"},
                  {"label": "home", "sort": "priority"}, {"label": "home"},
                  {"label": "home", "sort": "-priority", "status": "todo"},
                  {"label": "home", "sort": "-priority", "q": "task"}):
        assert_bad_params(d.get(TASKS, token=a.access, params=dict(other, cursor=cursor)),
                          {"cursor"})
    assert_bad_params(d.get(TASKS, token=b.access, params=dict(params, cursor=cursor)),
                      {"cursor"})


def test_cursor_key_shared_by_replicas(seeded, tmp_path):
    """The cursor key derives from the JWT secret: another process with the same secret
    continues a cursor; one with another secret refuses it."""
    d, a, b, c, visible = seeded
    if d.mode.split:
        pytest.skip("a replica here is one process of `docket all`; split mode has its own")
    params = {"sort": "due_at", "limit": 4}
    first = d.get(TASKS, token=a.access, params=params).json()
    rest_here = list_all(d, a.access, {"sort": "due_at"})[4:]
    same = start_replica(d, tmp_path, "replica-same-secret")
    try:
        resp = same.get(TASKS, token=a.access, params=dict(params, cursor=first["next_cursor"]))
        assert resp.status_code == 200, resp.text
        assert ids(resp.json()["items"]) == ids(rest_here)[:4]
    finally:
        stop_replica(same)
    other = start_replica(d, tmp_path, "replica-other-secret", jwt_secret=helpers.random_secret())
    try:
        assert_unauthorized(other.get(TASKS, token=a.access))   # tokens differ too
        token = other.new_session(a).access
        assert_bad_params(other.get(TASKS, token=token,
                                    params=dict(params, cursor=first["next_cursor"])),
                          {"cursor"})
        assert other.get(TASKS, token=token, params=params).json()["items"] == first["items"]
    finally:
        stop_replica(other)


def test_pages_stable_under_concurrent_inserts_and_deletes(docket):
    """A writer inserts and deletes while readers page with limit 7: no id is ever repeated,
    and every task that existed throughout a pass appears in it exactly once."""
    a = docket.new_user()
    rnd = random.Random(42)
    initial = []
    for i in range(60):
        body = {"title": f"initial {i}", "priority": rnd.choice(list(RANKS))}
        if rnd.random() < 0.7:
            body["due_at"] = f"2030-0{1 + rnd.randrange(3)}-1{rnd.randrange(10)}T00:00:00Z"
        initial.append(new_task(docket, a.access, **body)["id"])
    live = list(initial)
    deleting = set()
    lock = threading.Lock()
    stop = threading.Event()
    ops = [0]
    failures = []

    def writer():
        wrnd = random.Random(1)
        try:
            while not stop.is_set():
                body = {"title": f"new {ops[0]}", "priority": wrnd.choice(list(RANKS))}
                if wrnd.random() < 0.5:
                    body["due_at"] = f"2030-0{1 + wrnd.randrange(3)}-1{wrnd.randrange(10)}" \
                                     "T00:00:00Z"
                resp = docket.post(TASKS, token=a.access, json=body)
                assert resp.status_code == 201, resp.text
                with lock:
                    live.append(resp.json()["id"])
                    victim = live.pop(wrnd.randrange(len(live))) if len(live) > 30 else None
                    if victim:
                        deleting.add(victim)      # before the request: it may vanish any time
                if victim:
                    resp = docket.delete(f"{TASKS}/{victim}", token=a.access)
                    assert resp.status_code == 204, resp.text
                ops[0] += 1
        except Exception as exc:   # reported by the main thread
            failures.append(exc)

    def page_through(params):
        """Like list_all, but gives the writer time between pages."""
        params = dict(params, limit=7)
        seen = []
        while True:
            resp = docket.get(TASKS, token=a.access, params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            seen += ids(body["items"])
            if body["next_cursor"] is None:
                return seen
            params["cursor"] = body["next_cursor"]
            time.sleep(0.01)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        passes = 0
        sorts = (None, "priority", "-due_at", "due_at", "created_at", "-priority", "updated_at")
        while passes < len(sorts) or ops[0] < 40:
            assert passes < 100, "the writer makes no progress"
            sort = sorts[passes % len(sorts)]
            before = ops[0]
            seen = page_through({"sort": sort} if sort else {})
            with lock:
                gone = set(deleting)
            dupes = {x for x in seen if seen.count(x) > 1}
            assert not dupes, (sort, dupes)
            survivors = [x for x in initial if x not in gone]
            missing = [x for x in survivors if x not in seen]
            assert not missing, (sort, len(missing), missing[:5])
            assert ops[0] > before or failures, "no write happened during a pass"
            passes += 1
    finally:
        stop.set()
        th.join(30)
    assert not failures, failures
    assert ops[0] >= 40
    assert len(deleting & set(initial)) >= 5, "some initial tasks must have been deleted"
