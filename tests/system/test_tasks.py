"""Tasks: create, read, change and delete (/api/v1/tasks/{id}) with every field rule, who may
see and change what, versions with ETag/If-Match, and what happens when a user is deleted.
Lists, filters and pagination are in test_tasks_pagination.py, search in test_tasks_search.py.
"""

import threading
import time
import uuid

from helpers import assert_problem, assert_unauthorized, check_each, parse_time, wait_until

TASKS = "/api/v1/tasks"
TASK_KEYS = {"id", "title", "description", "status", "priority", "due_at", "labels", "owner_id",
             "assignee_id", "project_id", "created_at", "updated_at", "completed_at", "version"}


# --------------------------------------------------------------------------- helpers (shared)

def task_url(task_or_id):
    return f"{TASKS}/{task_or_id['id'] if isinstance(task_or_id, dict) else task_or_id}"


def assert_task(task):
    """The contract's {task}: exactly these members, each of its type."""
    assert set(task) == TASK_KEYS, task
    uuid.UUID(task["id"])
    assert isinstance(task["title"], str) and task["title"], task
    assert isinstance(task["description"], str), task
    assert task["status"] in ("todo", "in_progress", "done"), task
    assert task["priority"] in ("low", "medium", "high", "urgent"), task
    assert isinstance(task["labels"], list) and all(isinstance(x, str) for x in task["labels"])
    assert isinstance(task["version"], int) and task["version"] >= 1, task
    for key in ("created_at", "updated_at"):
        parse_time(task[key])
    for key in ("due_at", "completed_at"):
        if task[key] is not None:
            parse_time(task[key])
    assert (task["completed_at"] is not None) == (task["status"] == "done"), task
    return task


def new_task(d, token, **body):
    """POST a task (201 asserted, with Location and ETag); returns it."""
    body.setdefault("title", "A task")
    resp = d.post(TASKS, token=token, json=body)
    assert resp.status_code == 201, resp.text
    task = assert_task(resp.json())
    assert resp.headers["Location"] == f"{TASKS}/{task['id']}"
    assert resp.headers["ETag"] == f'"{task["version"]}"'
    return task


def get_task(d, token, task, status=200):
    resp = d.get(task_url(task), token=token)
    if status == 200:
        assert resp.status_code == 200, resp.text
        assert resp.headers["ETag"] == f'"{resp.json()["version"]}"'
        return assert_task(resp.json())
    assert_problem(resp, status)
    return None


def assert_bad_params(resp, params):
    """A 400 problem whose `errors` name exactly these query parameters."""
    assert resp.status_code == 400, f"expected 400, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers["Content-Type"].split(";")[0] == "application/problem+json"
    body = resp.json()
    assert body["status"] == 400 and body["title"] and isinstance(body["detail"], str), body
    assert body["request_id"] == resp.headers["X-Request-Id"], body
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    for e in errors:
        assert isinstance(e.get("field"), str) and isinstance(e.get("message"), str) \
            and e["message"], e
    assert {e["field"] for e in errors} == set(params), body
    return body


def list_all(d, token, params=None, limit=100):
    """Every item of a listing, following next_cursor; asserts page sizes."""
    params = dict(params or {}, limit=limit)
    items, pages = [], 0
    while True:
        resp = d.get(TASKS, token=token, params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == {"items", "next_cursor"}, body
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        assert pages < 1000
        if body["next_cursor"] is None:
            return items
        assert len(body["items"]) == limit, "a page before the last one is full"
        params["cursor"] = body["next_cursor"]


# --------------------------------------------------------------------------- create

def test_create_defaults_and_read_back(docket):
    a = docket.new_user()
    before = time.time()
    resp = docket.post(TASKS, token=a.access, json={"title": "Buy milk"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"
    task = assert_task(resp.json())
    assert task["title"] == "Buy milk"
    assert task["description"] == ""
    assert task["status"] == "todo"
    assert task["priority"] == "medium"
    assert task["due_at"] is None and task["completed_at"] is None
    assert task["labels"] == []
    assert task["owner_id"] == a.id
    assert task["assignee_id"] is None
    assert task["version"] == 1
    assert task["created_at"] == task["updated_at"]
    assert abs(parse_time(task["created_at"]).timestamp() - before) < 60
    assert resp.headers["Location"] == f"{TASKS}/{task['id']}"
    assert resp.headers["ETag"] == '"1"'
    got = docket.get(resp.headers["Location"], token=a.access)
    assert got.status_code == 200
    assert got.headers["ETag"] == '"1"'
    assert got.json() == task
    # time-ordered ids: a later task has a larger id
    second = new_task(docket, a.access, title="Second")
    assert second["id"] > task["id"]
    assert_unauthorized(docket.post(TASKS, json={"title": "anonymous"}))


def test_create_every_field(docket):
    a = docket.new_user()
    b = docket.new_user()
    task = new_task(docket, a.access, title="  Ship  release  ", description="Notes\nline two",
                    status="done", priority="urgent", due_at="2030-06-01T12:30:00+02:00",
                    labels=["work", "Work", "ünïcødé", "x" * 50], assignee_id=b.id)
    assert task["title"] == "  Ship  release  "
    assert task["description"] == "Notes\nline two"
    assert task["status"] == "done" and task["priority"] == "urgent"
    assert task["due_at"] == "2030-06-01T10:30:00.000Z"      # normalised to UTC
    assert task["labels"] == ["work", "Work", "ünïcødé", "x" * 50]
    assert task["assignee_id"] == b.id
    assert task["completed_at"] is not None        # created done
    assert parse_time(task["completed_at"]) == parse_time(task["created_at"])
    assert get_task(docket, b.access, task) == task  # the assignee sees it
    # priorities and statuses each accepted
    for p in ("low", "medium", "high", "urgent"):
        assert new_task(docket, a.access, priority=p)["priority"] == p
    for s in ("todo", "in_progress"):
        t = new_task(docket, a.access, status=s)
        assert t["status"] == s and t["completed_at"] is None
    # the extremes RFC 3339 can write
    for due in ("0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z"):
        assert new_task(docket, a.access, due_at=due)["due_at"] == due
    # explicit nulls where null is a value
    t = new_task(docket, a.access, due_at=None, assignee_id=None)
    assert t["due_at"] is None and t["assignee_id"] is None


def test_create_validation(docket):
    a = docket.new_user()
    ghost = str(uuid.uuid4())
    cases = [
        ({}, {"title"}),
        ({"title": ""}, {"title"}),
        ({"title": "   "}, {"title"}),
        ({"title": "t" * 201}, {"title"}),
        ({"title": "é" * 201}, {"title"}),
        ({"title": None}, {"title"}),
        ({"title": 5}, {"title"}),
        ({"title": ["x"]}, {"title"}),
        ({"title": {"x": 1}}, {"title"}),
        ({"title": True}, {"title"}),
        ({"title": "ok", "description": "d" * 10001}, {"description"}),
        ({"title": "ok", "description": None}, {"description"}),
        ({"title": "ok", "description": 7}, {"description"}),
        ({"title": "ok", "status": "open"}, {"status"}),
        ({"title": "ok", "status": "DONE"}, {"status"}),
        ({"title": "ok", "status": None}, {"status"}),
        ({"title": "ok", "status": 1}, {"status"}),
        ({"title": "ok", "priority": "critical"}, {"priority"}),
        ({"title": "ok", "priority": 3}, {"priority"}),
        ({"title": "ok", "priority": None}, {"priority"}),
        ({"title": "ok", "due_at": "tomorrow"}, {"due_at"}),
        ({"title": "ok", "due_at": "2030-01-01"}, {"due_at"}),
        ({"title": "ok", "due_at": "2030-13-01T00:00:00Z"}, {"due_at"}),
        ({"title": "ok", "due_at": "2030-01-01T00:00:00"}, {"due_at"}),
        ({"title": "ok", "due_at": 1893456000}, {"due_at"}),
        ({"title": "ok", "due_at": "9999-12-31T23:59:59-01:00"}, {"due_at"}),
        ({"title": "ok", "due_at": "0001-01-01T00:00:00+01:00"}, {"due_at"}),
        ({"title": "ok", "labels": "work"}, {"labels"}),
        ({"title": "ok", "labels": None}, {"labels"}),
        ({"title": "ok", "labels": [1]}, {"labels"}),
        ({"title": "ok", "labels": [None]}, {"labels"}),
        ({"title": "ok", "labels": [["a"]]}, {"labels"}),
        ({"title": "ok", "labels": ["a", "a"]}, {"labels"}),
        ({"title": "ok", "labels": [""]}, {"labels"}),
        ({"title": "ok", "labels": ["l" * 51]}, {"labels"}),
        ({"title": "ok", "labels": ["é" * 51]}, {"labels"}),
        ({"title": "ok", "labels": [f"l{i}" for i in range(21)]}, {"labels"}),
        ({"title": "ok", "labels": ["x"] * 100000}, {"labels"}),
        ({"title": "ok", "assignee_id": ghost}, {"assignee_id"}),
        ({"title": "ok", "assignee_id": "not-a-user"}, {"assignee_id"}),
        ({"title": "ok", "assignee_id": 12}, {"assignee_id"}),
        ({"title": "ok", "assignee_id": "' OR 1=1 --"}, {"assignee_id"}),
        ({"title": "", "status": "x", "priority": "y", "due_at": "z", "labels": 1},
         {"title", "status", "priority", "due_at", "labels"}),
    ]

    def check(case):
        body, fields = case
        assert_problem(docket.post(TASKS, token=a.access, json=body), 422, fields=fields)

    check_each(cases, check)
    # nothing was stored by any of them
    assert list_all(docket, a.access) == []
    # the limits themselves are fine, counted in code points
    new_task(docket, a.access, title="é" * 200, description="d" * 10000,
             labels=[f"{i}" + "ü" * 48 for i in range(20)])
    new_task(docket, a.access, title="t", labels=["ü" * 50])
    assert len(list_all(docket, a.access)) == 2


def test_create_body_handling(docket):
    a = docket.new_user()
    other = docket.new_user()
    # unknown and read-only members are ignored
    t = new_task(docket, a.access, title="x", id="zzz", version=99, owner_id=other.id,
                 created_at="2000-01-01T00:00:00Z", completed_at="2000-01-01T00:00:00Z",
                 extra={"nested": [1, 2]})
    assert t["id"] != "zzz" and t["version"] == 1 and t["owner_id"] == a.id
    assert t["completed_at"] is None and t["created_at"] != "2000-01-01T00:00:00Z"
    json_ct = {"Content-Type": "application/json"}
    assert_problem(docket.post(TASKS, token=a.access, data=b"{", headers=json_ct), 400)
    assert_problem(docket.post(TASKS, token=a.access, data=b'["title"]', headers=json_ct), 422,
                   fields={"body"})
    assert_problem(docket.post(TASKS, token=a.access, data=b'{"title":"x"}',
                               headers={"Content-Type": "text/plain"}), 415)
    assert_problem(docket.post(TASKS, token=a.access, data=b"x" * (1024 * 1024 + 10),
                               headers=json_ct), 413)
    assert len(list_all(docket, a.access)) == 1


# --------------------------------------------------------------------------- visibility

def test_visibility(docket):
    owner = docket.new_user()
    assignee = docket.new_user()
    stranger = docket.new_user()
    task = new_task(docket, owner.access, title="private", assignee_id=assignee.id)
    get_task(docket, owner.access, task)
    get_task(docket, assignee.access, task)
    get_task(docket, stranger.access, task, status=404)
    assert_problem(docket.patch(task_url(task), token=stranger.access, json={"status": "done"}),
                   404)
    assert_problem(docket.patch(task_url(task), token=stranger.access, json={}), 404)
    assert_problem(docket.delete(task_url(task), token=stranger.access), 404)
    assert [t["id"] for t in list_all(docket, stranger.access)] == []
    # ids that cannot name a task, and ids of nothing, look the same
    for bad in (str(uuid.uuid4()), "abc", task["id"].upper(), task["id"] + "0", "1 OR 1=1",
                "%27%20OR%201%3D1"):
        assert_problem(docket.get(f"{TASKS}/{bad}", token=owner.access), 404)
        assert_problem(docket.patch(f"{TASKS}/{bad}", token=owner.access, json={}), 404)
        assert_problem(docket.delete(f"{TASKS}/{bad}", token=owner.access), 404)
    assert_unauthorized(docket.get(task_url(task)))
    assert_unauthorized(docket.patch(task_url(task), json={"status": "done"}))
    assert_unauthorized(docket.delete(task_url(task)))
    assert get_task(docket, owner.access, task)["version"] == 1


# --------------------------------------------------------------------------- patch

def test_patch_fields_and_version(docket):
    a = docket.new_user()
    b = docket.new_user()
    t = new_task(docket, a.access, title="Before", labels=["x"])
    time.sleep(0.01)
    resp = docket.patch(task_url(t), token=a.access, json={"title": "After"})
    assert resp.status_code == 200, resp.text
    t2 = assert_task(resp.json())
    assert resp.headers["ETag"] == '"2"'
    assert t2["title"] == "After" and t2["version"] == 2
    assert parse_time(t2["updated_at"]) > parse_time(t["updated_at"])
    assert t2["created_at"] == t["created_at"]
    assert get_task(docket, a.access, t) == t2

    # no change, no new version
    for body in ({}, {"title": "After"}, {"labels": ["x"]}, {"status": "todo"},
                 {"due_at": None}, {"assignee_id": None}, {"unknown": 1, "version": 7}):
        resp = docket.patch(task_url(t), token=a.access, json=body)
        assert resp.status_code == 200, (body, resp.text)
        assert resp.json() == t2, body
        assert resp.headers["ETag"] == '"2"'

    changes = [
        ({"description": "more"}, "description", "more"),
        ({"priority": "high"}, "priority", "high"),
        ({"due_at": "2031-02-03T04:05:06.789Z"}, "due_at", "2031-02-03T04:05:06.789Z"),
        ({"due_at": None}, "due_at", None),
        ({"labels": ["b", "a"]}, "labels", ["b", "a"]),
        ({"labels": []}, "labels", []),
        ({"assignee_id": b.id}, "assignee_id", b.id),
        ({"assignee_id": None}, "assignee_id", None),
        ({"status": "in_progress"}, "status", "in_progress"),
    ]
    version = 2
    for body, key, value in changes:
        resp = docket.patch(task_url(t), token=a.access, json=body)
        assert resp.status_code == 200, (body, resp.text)
        version += 1
        got = resp.json()
        assert got[key] == value and got["version"] == version, (body, got)
        assert resp.headers["ETag"] == f'"{version}"'
    # several at once are one change
    resp = docket.patch(task_url(t), token=a.access,
                        json={"title": "T", "priority": "low", "labels": ["z"]})
    assert resp.json()["version"] == version + 1


def test_patch_completed_at(docket):
    a = docket.new_user()
    t = new_task(docket, a.access)
    done = docket.patch(task_url(t), token=a.access, json={"status": "done"}).json()
    assert done["status"] == "done" and done["completed_at"] is not None
    assert parse_time(done["completed_at"]) >= parse_time(t["created_at"])
    # staying done keeps the time (and the version)
    time.sleep(0.01)
    again = docket.patch(task_url(t), token=a.access, json={"status": "done", "title": "New"})
    assert again.json()["completed_at"] == done["completed_at"]
    reopened = docket.patch(task_url(t), token=a.access, json={"status": "in_progress"}).json()
    assert reopened["completed_at"] is None
    redone = docket.patch(task_url(t), token=a.access, json={"status": "done"}).json()
    assert redone["completed_at"] is not None
    assert parse_time(redone["completed_at"]) >= parse_time(done["completed_at"])
    todo = docket.patch(task_url(t), token=a.access, json={"status": "todo"}).json()
    assert todo["completed_at"] is None


def test_patch_validation_changes_nothing(docket):
    a = docket.new_user()
    t = new_task(docket, a.access, title="Keep", labels=["k"])
    cases = [
        ({"title": None}, {"title"}),
        ({"title": ""}, {"title"}),
        ({"title": "x" * 201}, {"title"}),
        ({"title": 1}, {"title"}),
        ({"description": None}, {"description"}),
        ({"status": "closed"}, {"status"}),
        ({"status": None}, {"status"}),
        ({"priority": "p1"}, {"priority"}),
        ({"due_at": "soon"}, {"due_at"}),
        ({"labels": ["a", "a"]}, {"labels"}),
        ({"labels": [f"{i}" for i in range(21)]}, {"labels"}),
        ({"labels": None}, {"labels"}),
        ({"assignee_id": str(uuid.uuid4())}, {"assignee_id"}),
        ({"assignee_id": False}, {"assignee_id"}),
        # a valid change next to an invalid one is not applied half-way
        ({"title": "Changed", "priority": "nope"}, {"priority"}),
        ({"status": "done", "labels": "x"}, {"labels"}),
    ]

    def check(case):
        body, fields = case
        assert_problem(docket.patch(task_url(t), token=a.access, json=body), 422, fields=fields)

    check_each(cases, check)
    assert get_task(docket, a.access, t) == t
    json_ct = {"Content-Type": "application/json"}
    assert_problem(docket.patch(task_url(t), token=a.access, data=b"{", headers=json_ct), 400)
    assert_problem(docket.patch(task_url(t), token=a.access, data=b"{}",
                                headers={"Content-Type": "text/plain"}), 415)
    assert_problem(docket.patch(task_url(t), token=a.access, data=b"null", headers=json_ct), 422)
    assert get_task(docket, a.access, t) == t


def test_assignee_may_change_status_only(docket):
    owner = docket.new_user()
    assignee = docket.new_user()
    other = docket.new_user()
    t = new_task(docket, owner.access, title="Shared", labels=["l"], assignee_id=assignee.id)
    resp = docket.patch(task_url(t), token=assignee.access, json={"status": "in_progress"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "in_progress" and resp.json()["version"] == 2
    # sending unchanged values along with the status is fine
    resp = docket.patch(task_url(t), token=assignee.access,
                        json={"status": "done", "title": "Shared", "labels": ["l"],
                              "assignee_id": assignee.id})
    assert resp.status_code == 200, resp.text
    assert resp.json()["completed_at"] is not None
    current = resp.json()
    for body in ({"title": "Mine now"}, {"description": "x"}, {"priority": "urgent"},
                 {"due_at": "2030-01-01T00:00:00Z"}, {"labels": []},
                 {"assignee_id": None}, {"assignee_id": other.id},
                 {"status": "todo", "title": "both"}):
        assert_problem(docket.patch(task_url(t), token=assignee.access, json=body), 403)
    assert_problem(docket.delete(task_url(t), token=assignee.access), 403)
    assert get_task(docket, owner.access, t) == current
    # the owner may do everything, including deleting
    assert docket.patch(task_url(t), token=owner.access,
                        json={"title": "Owner's", "assignee_id": other.id}).status_code == 200
    get_task(docket, assignee.access, t, status=404)      # no longer assigned: invisible
    get_task(docket, other.access, t)
    resp = docket.delete(task_url(t), token=owner.access)
    assert resp.status_code == 204 and resp.content == b""
    get_task(docket, owner.access, t, status=404)
    get_task(docket, other.access, t, status=404)
    assert_problem(docket.delete(task_url(t), token=owner.access), 404)


def test_owner_assigned_to_self(docket):
    a = docket.new_user()
    t = new_task(docket, a.access, assignee_id=a.id)
    assert t["assignee_id"] == a.id
    assert docket.patch(task_url(t), token=a.access, json={"title": "x"}).status_code == 200
    assert [x["id"] for x in list_all(docket, a.access)] == [t["id"]]   # listed once


# --------------------------------------------------------------------------- ETag, If-Match

def test_if_match(docket):
    a = docket.new_user()
    t = new_task(docket, a.access)
    url = task_url(t)
    resp = docket.patch(url, token=a.access, json={"title": "v2"}, headers={"If-Match": '"1"'})
    assert resp.status_code == 200 and resp.headers["ETag"] == '"2"'
    # stale
    assert_problem(docket.patch(url, token=a.access, json={"title": "lost update"},
                                headers={"If-Match": '"1"'}), 412)
    assert get_task(docket, a.access, t)["title"] == "v2"
    # If-Match compares strongly (RFC 9110 13.1.1): a weak tag never matches
    assert_problem(docket.patch(url, token=a.access, json={"title": "weak"},
                                headers={"If-Match": 'W/"2"'}), 412)
    for good, title in (('"2"', "v3"), ("*", "v4"), ('"1", "4", "9"', "v5"),
                        ('W/"5", "5"', "v6")):
        resp = docket.patch(url, token=a.access, json={"title": title},
                            headers={"If-Match": good})
        assert resp.status_code == 200, (good, resp.text)
    for bad in ('"5"', "6", '"06"', "W/6", 'W/"6"', '""', "garbage", '"7"'):
        assert_problem(docket.patch(url, token=a.access, json={"title": "no"},
                                    headers={"If-Match": bad}), 412)
    current = get_task(docket, a.access, t)
    assert current["version"] == 6 and current["title"] == "v6"
    # If-None-Match on GET
    resp = docket.get(url, token=a.access, headers={"If-None-Match": '"6"'})
    assert resp.status_code == 304 and resp.headers["ETag"] == '"6"'
    assert docket.get(url, token=a.access, headers={"If-None-Match": '"5"'}).status_code == 200
    # If-None-Match compares weakly
    assert docket.get(url, token=a.access, headers={"If-None-Match": 'W/"6"'}).status_code == 304
    # DELETE honours If-Match too
    assert_problem(docket.delete(url, token=a.access, headers={"If-Match": '"5"'}), 412)
    assert docket.delete(url, token=a.access, headers={"If-Match": '"6"'}).status_code == 204


def test_concurrent_patches_each_count(docket):
    a = docket.new_user()
    t = new_task(docket, a.access)
    n = 12
    results = []

    def worker(i):
        r = docket.patch(task_url(t), token=a.access, json={"title": f"title {i}"})
        results.append((r.status_code, r.json().get("version")))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(code == 200 for code, _ in results), results
    assert sorted(v for _, v in results) == list(range(2, n + 2))
    assert get_task(docket, a.access, t)["version"] == n + 1
    # If-Match racers: exactly one of them wins
    current = get_task(docket, a.access, t)["version"]
    codes = []

    def racer(i):
        r = docket.patch(task_url(t), token=a.access, json={"title": f"race {i}"},
                         headers={"If-Match": f'"{current}"'})
        codes.append(r.status_code)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(codes) == [200] + [412] * 7, codes


# --------------------------------------------------------------------------- deleted users

def test_deleting_a_user_removes_their_tasks_and_assignments(docket):
    a = docket.new_user()
    b = docket.new_user()
    own = new_task(docket, a.access, title="A's own")
    own_for_b = new_task(docket, a.access, title="A's, assigned to B", assignee_id=b.id)
    b_for_a = new_task(docket, b.access, title="B's, assigned to A", assignee_id=a.id)
    b_own = new_task(docket, b.access, title="B's own")
    assert docket.delete("/api/v1/users/me", token=a.access).status_code == 204
    # in-process the event is handled before the reply; between processes it follows shortly
    wait_until(lambda: docket.get(task_url(own_for_b), token=b.access).status_code == 404 and
               docket.get(task_url(b_for_a), token=b.access).json()["assignee_id"] is None,
               10, what="user.deleted handled by the tasks service")
    get_task(docket, b.access, own_for_b, status=404)
    after = get_task(docket, b.access, b_for_a)
    assert after["assignee_id"] is None
    assert after["version"] == b_for_a["version"] + 1
    assert get_task(docket, b.access, b_own) == b_own
    assert {t["id"] for t in list_all(docket, b.access)} == {b_for_a["id"], b_own["id"]}
    # the deleted user's tasks are gone for good (a new account sees nothing of them)
    assert own["id"] not in {t["id"] for t in list_all(docket, docket.new_user().access)}
    # and can no longer be assigned
    assert_problem(docket.patch(task_url(b_own), token=b.access, json={"assignee_id": a.id}),
                   422, fields={"assignee_id"})
    if docket.mode.storage == "postgres":
        import psycopg2
        conn = psycopg2.connect(docket.db_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM tasks.tasks WHERE owner_id = %s OR "
                            "assignee_id = %s", (a.id, a.id))
                assert cur.fetchone()[0] == 0
        finally:
            conn.close()


def test_postgres_search_vector_follows_the_text_only(docket_factory):
    """PostgreSQL keeps the search vector with triggers (tasks migration 7): a write that leaves
    title and description alone leaves the stored vector alone (a status patch does not run
    to_tsvector again), a text change recomputes it, and a created task has one. Checked by
    planting a marker vector, which only a recomputation removes."""
    import psycopg2
    d = docket_factory("postgres")
    a = d.new_user()
    task = new_task(d, a.access, title="Quarterly budget review", description="Spreadsheets")
    conn = psycopg2.connect(d.db_url)
    conn.autocommit = True

    def vector():
        with conn.cursor() as cur:
            cur.execute("SELECT CAST(search AS TEXT) FROM tasks.tasks WHERE id = %s",
                        (task["id"],))
            return cur.fetchone()[0]

    try:
        assert vector() == "'budget':2A 'quarter':1A 'review':3A 'spreadsheet':4B"
        with conn.cursor() as cur:
            cur.execute("UPDATE tasks.tasks SET search = to_tsvector('simple', 'marker') "
                        "WHERE id = %s", (task["id"],))
        for body in ({"status": "in_progress"}, {"priority": "high", "labels": ["x"]},
                     {"title": "Quarterly budget review"}):  # the same text is no change
            resp = d.patch(f"{TASKS}/{task['id']}", token=a.access, json=body)
            assert resp.status_code == 200, resp.text
            assert vector() == "'marker':1", body
        resp = d.patch(f"{TASKS}/{task['id']}", token=a.access, json={"description": "Invoices"})
        assert resp.status_code == 200, resp.text
        assert vector() == "'budget':2A 'invoic':4B 'quarter':1A 'review':3A"
        found = d.get(TASKS, token=a.access, params={"q": "invoices"}).json()["items"]
        assert [t["id"] for t in found] == [task["id"]]
    finally:
        conn.close()


# Tasks migration 8 undone, to put a live PostgreSQL database back where it stood before it.
BEFORE_8_POSTGRES = """
CREATE INDEX tasks_owner_updated_idx ON tasks.tasks (owner_id, updated_at, id);
CREATE INDEX tasks_assignee_updated_idx ON tasks.tasks (assignee_id, updated_at, id)
  WHERE assignee_id IS NOT NULL;
CREATE INDEX tasks_project_updated_idx ON tasks.tasks (project_id, updated_at, id)
  WHERE project_id IS NOT NULL;
ALTER TABLE tasks.tasks RESET (fillfactor);
ALTER TABLE tasks.tasks_activity ADD CONSTRAINT tasks_activity_id_key UNIQUE (id);
DELETE FROM public.docket_migrations WHERE service = 'tasks' AND version = 8;
"""


def test_postgres_migration_8_makes_status_changes_hot(docket_factory):
    """Tasks migration 8 converts an existing PostgreSQL database in place (the three
    (who, updated_at, id) indexes and the activity id's index go, fillfactor 85), after which a
    status change writes no index entry (a HOT update, counted by PostgreSQL), while
    sort=updated_at keeps its order and every change its history entry."""
    import psycopg2
    from helpers import run_cli
    d = docket_factory("postgres")
    a = d.new_user()
    conn = psycopg2.connect(d.db_url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(BEFORE_8_POSTGRES)
    before = [new_task(d, a.access, title=f"Before {i}") for i in range(3)]  # on the old schema
    r = run_cli(["migrate"], env=d.env, cwd=d.cwd, timeout=60)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    try:
        cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'tasks' AND "
                    "(indexname LIKE '%updated%' OR indexname = 'tasks_activity_id_key')")
        assert cur.fetchall() == []
        cur.execute("SELECT reloptions FROM pg_class WHERE oid = 'tasks.tasks'::regclass")
        assert cur.fetchone()[0] == ["fillfactor=85"]
        cur.execute("SELECT version FROM public.docket_migrations WHERE service = 'tasks' "
                    "ORDER BY version DESC LIMIT 1")
        assert cur.fetchone()[0] >= 8

        def hot_updates():
            cur.execute("SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE "
                        "relid = 'tasks.tasks'::regclass")
            return cur.fetchone()[0]

        hot = hot_updates()
        statuses = ["in_progress", "done", "todo", "done"]
        for status in statuses:
            resp = d.patch(task_url(before[0]), token=a.access, json={"status": status})
            assert resp.status_code == 200, resp.text
        # PostgreSQL publishes a backend's counters within about a second of it going idle
        wait_until(lambda: hot_updates() >= hot + len(statuses), 15,
                   what="the status changes counted as HOT updates")
    finally:
        conn.close()
    newest = d.get(TASKS, token=a.access, params={"sort": "-updated_at"}).json()["items"]
    assert [t["id"] for t in newest] == [before[0]["id"], before[2]["id"], before[1]["id"]]
    oldest = d.get(TASKS, token=a.access, params={"sort": "updated_at", "limit": 1}).json()
    rest = d.get(TASKS, token=a.access, params={"sort": "updated_at",
                                                 "cursor": oldest["next_cursor"]}).json()
    assert [t["id"] for t in oldest["items"] + rest["items"]] == \
        [before[1]["id"], before[2]["id"], before[0]["id"]]
    acts = d.get(task_url(before[0]) + "/activity", token=a.access).json()["items"]
    assert [e["action"] for e in acts] == ["created"] + ["updated"] * len(statuses)
    assert [e["new"] for e in acts[1:]] == statuses
    assert [e["old"] for e in acts[1:]] == ["todo"] + statuses[:-1]


def _queued_settles(metric, least):
    """Waits until the grouped writes waiting (docket_write_batch_queued) number at least
    `least` and stay the same for half a second; returns that number. Requests whose connection
    shares an HTTP worker with a held one wait in that worker instead of queueing (a worker
    answers one request at a time), hence 'at least'."""
    seen = []

    def settled():
        seen.append(metric("docket_write_batch_queued"))
        return len(seen) > 10 and seen[-1] >= least and len(set(seen[-11:])) == 1

    wait_until(settled, 15, what=f"at least {least} grouped writes waiting", interval=0.05)
    return int(seen[-1])


def test_postgres_creates_arriving_together_share_a_statement(docket_factory):
    """PostgreSQL: personal creates that arrive while others are being written share one
    statement (tasks_repo.h, docs/design/write-batching.md). Two creates are held behind a
    table lock, ten more queue behind them and go as one group when it is released: each is
    stored with its history entry and its event, and the one PostgreSQL refuses (a trigger
    planted by the test) fails alone, its neighbours tried again one by one."""
    import psycopg2

    def metric(name):
        for line in d.get("/metrics").text.splitlines():
            if line.startswith(name + '{batch="tasks.create"} '):
                return float(line.split()[-1])
        return None

    d = docket_factory("postgres", extra_env={"DOCKET_SERVER_THREADS": "64"})
    a = d.new_user()
    conn = psycopg2.connect(d.db_url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE FUNCTION tasks.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.title = 'poison' THEN RAISE EXCEPTION 'refused by the test'; END IF;"
                " RETURN NEW; END $$; CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks.tasks "
                "FOR EACH ROW EXECUTE FUNCTION tasks.refuse_poison()")
    batches, jobs = metric("docket_write_batches_total"), metric("docket_write_batch_jobs_total")
    locker = psycopg2.connect(d.db_url)
    results = {}

    def create(title):
        results[title] = d.post(TASKS, token=a.access, json={"title": title})

    def waiting_on_the_lock():
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")
        return cur.fetchone()[0]

    threads = []
    try:
        locker.cursor().execute("LOCK TABLE tasks.tasks_activity IN SHARE MODE")
        for i in range(2):  # two groups may run at once: one create each, both held
            threads.append(threading.Thread(target=create, args=(f"first {i}",)))
            threads[-1].start()
        wait_until(lambda: waiting_on_the_lock() == 2, 10, what="two creates held by the lock")
        titles = [f"grouped {i}" for i in range(9)] + ["poison"]
        for t in titles:
            threads.append(threading.Thread(target=create, args=(t,)))
            threads[-1].start()
        queued = _queued_settles(metric, 6)
    finally:
        locker.rollback()
        locker.close()
    for th in threads:
        th.join()
    assert results.pop("poison").status_code == 500
    assert {t: r.status_code for t, r in results.items()} == {t: 201 for t in results}
    # the two held creates, one statement for those queued (which failed and was retried
    # create by create: those are not groups), and any held up in a held one's worker
    assert metric("docket_write_batch_jobs_total") == jobs + 12
    assert metric("docket_write_batches_total") <= batches + 2 + 1 + (10 - queued)
    ids = [r.json()["id"] for r in results.values()]
    cur.execute("SELECT count(*) FROM tasks.tasks_activity WHERE task_id = ANY(%s) AND "
                "action = 'created'", (ids,))
    assert cur.fetchone()[0] == 11
    cur.execute("SELECT count(*) FROM tasks.tasks WHERE title = 'poison'")
    assert cur.fetchone()[0] == 0
    for r in results.values():
        assert get_task(d, a.access, r.json()) == r.json()
    # every stored create's event went out (the outbox is emptied by the relay)
    wait_until(lambda: cur.execute("SELECT count(*) FROM tasks.tasks_outbox") or
               cur.fetchone()[0] == 0, 10, what="the outbox relayed")
    conn.close()


def test_postgres_outbox_relay_vacuums_its_table(docket_factory):
    """PostgreSQL: the relay reads its outbox from the lowest seq, over the index entries of
    every row deleted since the table was last vacuumed; it vacuums the table itself after
    5,000 deletions (core/outbox.c) rather than wait for autovacuum. 6,000 rows planted in the
    outbox (of a type nobody consumes) and one create to wake the relay: all go out, and the
    table was vacuumed by hand (vacuum_count, not autovacuum_count)."""
    import psycopg2
    d = docket_factory("postgres")
    a = d.new_user()
    conn = psycopg2.connect(d.db_url)
    conn.autocommit = True
    cur = conn.cursor()

    def vacuums():
        cur.execute("SELECT vacuum_count FROM pg_stat_user_tables WHERE "
                    "relid = 'tasks.tasks_outbox'::regclass")
        return cur.fetchone()[0]

    def left():
        cur.execute("SELECT count(*) FROM tasks.tasks_outbox")
        return cur.fetchone()[0]

    try:
        before = vacuums()
        cur.execute("INSERT INTO tasks.tasks_outbox (id, type, payload, created_at) "
                    "SELECT gen_random_uuid()::text, 'test.filler', '{}', 0 "
                    "FROM generate_series(1, 6000)")
        new_task(d, a.access, title="wakes the relay")
        wait_until(lambda: left() == 0, 30, what="the planted rows relayed")
        # PostgreSQL publishes a backend's counters within about a second of it going idle
        wait_until(lambda: vacuums() > before, 15, what="the relay's VACUUM")
    finally:
        conn.close()


def test_postgres_patches_arriving_together_share_a_statement(docket_factory):
    """PostgreSQL: the writes of personal patches that arrive while others are being written
    share one statement (their rows as arrays). Two patches are held behind a table lock, ten
    more queue: two of them change the same task (one is written, the other reads again and is
    written after it), one is refused by a trigger planted by the test (it fails alone); every
    other patch is written once with its history entry and version."""
    import psycopg2

    def metric(name):
        for line in d.get("/metrics").text.splitlines():
            if line.startswith(name + '{batch="tasks.patch"} '):
                return float(line.split()[-1])
        return None

    d = docket_factory("postgres", extra_env={"DOCKET_SERVER_THREADS": "64"})
    a = d.new_user()
    tasks = [new_task(d, a.access, title=f"task {i}") for i in range(11)]
    conn = psycopg2.connect(d.db_url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE FUNCTION tasks.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.title = 'poison' THEN RAISE EXCEPTION 'refused by the test'; END IF;"
                " RETURN NEW; END $$; CREATE TRIGGER refuse_poison BEFORE UPDATE ON tasks.tasks "
                "FOR EACH ROW EXECUTE FUNCTION tasks.refuse_poison()")
    batches, jobs = metric("docket_write_batches_total"), metric("docket_write_batch_jobs_total")
    locker = psycopg2.connect(d.db_url)
    results = {}

    def patch(key, task, body):
        results[key] = d.patch(task_url(task), token=a.access, json=body)

    def waiting_on_the_lock():
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")
        return cur.fetchone()[0]

    threads = []

    def start(key, task, body):
        threads.append(threading.Thread(target=patch, args=(key, task, body)))
        threads[-1].start()

    try:
        locker.cursor().execute("LOCK TABLE tasks.tasks_activity IN SHARE MODE")
        start("held 0", tasks[0], {"status": "done"})
        start("held 1", tasks[1], {"status": "done"})
        wait_until(lambda: waiting_on_the_lock() == 2, 10, what="two patches held by the lock")
        for i in range(2, 9):
            start(f"grouped {i}", tasks[i], {"title": f"renamed {i}", "priority": "high"})
        start("same a", tasks[9], {"description": "first"})
        start("same b", tasks[9], {"priority": "urgent"})
        start("poison", tasks[10], {"title": "poison"})
        queued = _queued_settles(metric, 6)
    finally:
        locker.rollback()
        locker.close()
    for th in threads:
        th.join()
    assert results.pop("poison").status_code == 500
    assert {k: r.status_code for k, r in results.items()} == {k: 200 for k in results}
    assert metric("docket_write_batch_jobs_total") == jobs + 12
    assert metric("docket_write_batches_total") <= batches + 2 + 1 + (10 - queued)
    for i in range(2, 9):
        t = get_task(d, a.access, tasks[i])
        assert (t["title"], t["priority"], t["version"]) == (f"renamed {i}", "high", 2)
    both = get_task(d, a.access, tasks[9])
    assert (both["description"], both["priority"], both["version"]) == ("first", "urgent", 3)
    assert get_task(d, a.access, tasks[10])["title"] == "task 10"
    for i in (0, 1):
        assert get_task(d, a.access, tasks[i])["status"] == "done"
    cur.execute("SELECT task_id, count(*) FROM tasks.tasks_activity WHERE action = 'updated' "
                "GROUP BY task_id")
    counts = dict(cur.fetchall())
    assert [counts.get(t["id"], 0) for t in tasks] == [1, 1] + [2] * 7 + [2, 0]
    conn.close()
