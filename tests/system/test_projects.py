"""Projects, members and comments (/api/v1/projects, /api/v1/tasks/{id}/comments|activity):
each role against each operation, 404 (never 403) for non-members, project tasks in lists and
cursors, losing membership, transfer, the concurrency rules (a duplicate member added twice at
once; a removed member's in-flight task creation), comments and activity, notifications, and
the account deletion rules. One thorough test per rule family, in every mode.
"""

import threading
import uuid

from helpers import assert_problem, parse_time, wait_until
from test_tasks import assert_bad_params, assert_task, list_all, task_url

PROJECTS = "/api/v1/projects"
TASKS = "/api/v1/tasks"
PROJECT_KEYS = {"id", "name", "description", "owner_id", "my_role", "created_at", "updated_at",
                "version"}


def project_url(p, *rest):
    return "/".join([PROJECTS, p["id"] if isinstance(p, dict) else p] + list(rest))


def new_project(d, token, name=None, **body):
    body["name"] = name or f"Project {uuid.uuid4().hex[:8]}"
    resp = d.post(PROJECTS, token=token, json=body)
    assert resp.status_code == 201, resp.text
    p = resp.json()
    assert set(p) == PROJECT_KEYS, p
    assert resp.headers["Location"] == f"{PROJECTS}/{p['id']}"
    assert resp.headers["ETag"] == f'"{p["version"]}"'
    assert p["my_role"] == "owner" and p["version"] == 1
    parse_time(p["created_at"])
    return p


def add_member(d, token, p, account, role, status=201):
    resp = d.post(project_url(p, "members"), token=token,
                  json={"email": account.email, "role": role})
    if status != 201:
        return assert_problem(resp, status)
    assert resp.status_code == 201, resp.text
    m = resp.json()
    assert set(m) == {"user", "role", "added_at"}, m
    assert m["user"] == {"id": account.id, "name": account.name, "avatar_url": None}, m
    assert m["role"] == role
    return m


def project_task(d, token, p, status=201, **body):
    body.setdefault("title", "A project task")
    body["project_id"] = p["id"]
    resp = d.post(TASKS, token=token, json=body)
    if status != 201:
        return resp
    assert resp.status_code == 201, resp.text
    t = assert_task(resp.json())
    assert t["project_id"] == p["id"]
    return t


def team(d):
    """An owner and a project with an admin, an editor and a viewer; and an outsider."""
    owner, admin, editor, viewer, outsider = (d.new_user() for _ in range(5))
    p = new_project(d, owner.access, name="Launch", description="the spring launch")
    add_member(d, owner.access, p, admin, "admin")
    add_member(d, owner.access, p, editor, "editor")
    add_member(d, owner.access, p, viewer, "viewer")
    return p, owner, admin, editor, viewer, outsider


# --------------------------------------------------------------------------- roles

def test_projects_roles_and_visibility(docket):
    d = docket
    p, owner, admin, editor, viewer, outsider = team(d)
    everyone = {"owner": owner, "admin": admin, "editor": editor, "viewer": viewer}

    # creation rules: names unique per owner, case-insensitively; field validation
    assert_problem(d.post(PROJECTS, token=owner.access, json={"name": "LAUNCH"}), 409)
    new_project(d, admin.access, name="Launch")  # another owner may use the name
    assert_problem(d.post(PROJECTS, token=owner.access, json={}), 422, fields={"name"})
    assert_problem(d.post(PROJECTS, token=owner.access,
                          json={"name": "x" * 101, "description": "y" * 2001}), 422,
                   fields={"name", "description"})
    assert_problem(d.post(PROJECTS, token=owner.access, json={"name": " "}), 422,
                   fields={"name"})

    # reading: every member, with their own role; an outsider gets 404 everywhere
    for role, acc in everyone.items():
        got = d.get(project_url(p), token=acc.access)
        assert got.status_code == 200 and got.json()["my_role"] == role, got.text
        assert got.headers["ETag"] == f'"{p["version"]}"'
    members = d.get(project_url(p, "members"), token=viewer.access).json()
    assert [(m["user"]["id"], m["role"]) for m in members["items"]] == [
        (owner.id, "owner"), (admin.id, "admin"), (editor.id, "editor"), (viewer.id, "viewer")]
    assert members["next_cursor"] is None
    page = d.get(project_url(p, "members"), token=owner.access, params={"limit": 3}).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = d.get(project_url(p, "members"), token=owner.access,
                 params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [m["user"]["id"] for m in rest["items"]] == [viewer.id]
    assert_bad_params(d.get(project_url(p, "members"), token=admin.access,
                            params={"cursor": page["next_cursor"]}), {"cursor"})  # not theirs
    for method, path, body in (("GET", project_url(p), None),
                               ("PATCH", project_url(p), {"name": "Mine"}),
                               ("DELETE", project_url(p), None),
                               ("GET", project_url(p, "members"), None),
                               ("POST", project_url(p, "members"),
                                {"email": outsider.email, "role": "admin"}),
                               ("PATCH", project_url(p, "members", viewer.id), {"role": "admin"}),
                               ("DELETE", project_url(p, "members", viewer.id), None),
                               ("POST", project_url(p, "transfer"), {"user_id": outsider.id}),
                               ("GET", TASKS + "?project_id=" + p["id"], None),
                               ("GET", project_url(str(uuid.uuid4())), None)):
        assert_problem(d.request(method, path, token=outsider.access, json=body), 404)
    listing = d.get(PROJECTS, token=viewer.access).json()
    assert [x["id"] for x in listing["items"]] == [p["id"]]
    assert d.get(PROJECTS, token=outsider.access).json() == {"items": [], "next_cursor": None}

    # tasks: editors and up create, change and delete; viewers change the status of their own
    # assignments only; outsiders see nothing
    t = project_task(d, editor.access, p, assignee_id=viewer.id, title="Write the brief")
    assert t["owner_id"] == editor.id and t["assignee_id"] == viewer.id
    for role in ("owner", "admin", "editor"):
        project_task(d, everyone[role].access, p, title=f"by {role}")
    for acc in (viewer, outsider):
        assert_problem(project_task(d, acc.access, p, status=422), 422, fields={"project_id"})
    assert_problem(project_task(d, owner.access, p, status=422, assignee_id=outsider.id), 422,
                   fields={"assignee_id"})
    for role, acc in everyone.items():
        assert d.get(task_url(t), token=acc.access).status_code == 200, role
    assert_problem(d.get(task_url(t), token=outsider.access), 404)
    assert_problem(d.patch(task_url(t), token=outsider.access, json={"status": "done"}), 404)
    assert_problem(d.delete(task_url(t), token=outsider.access), 404)
    for role in ("owner", "admin", "editor"):
        resp = d.patch(task_url(t), token=everyone[role].access,
                       json={"priority": "high", "title": f"Brief ({role})"})
        assert resp.status_code == 200, (role, resp.text)
    assert_problem(d.patch(task_url(t), token=viewer.access, json={"title": "mine"}), 403)
    resp = d.patch(task_url(t), token=viewer.access, json={"status": "in_progress"})
    assert resp.status_code == 200 and resp.json()["status"] == "in_progress", resp.text
    other = project_task(d, owner.access, p, title="Not the viewer's")
    assert_problem(d.patch(task_url(other), token=viewer.access, json={"status": "done"}), 403)
    assert_problem(d.delete(task_url(other), token=viewer.access), 403)
    assert_problem(d.patch(task_url(other), token=owner.access,
                           json={"assignee_id": outsider.id}), 422, fields={"assignee_id"})
    assert d.delete(task_url(other), token=editor.access).status_code == 204
    # moving: only into a project the caller edits
    personal = d.post(TASKS, token=viewer.access, json={"title": "Viewer's own"}).json()
    assert_problem(d.patch(task_url(personal), token=viewer.access,
                           json={"project_id": p["id"]}), 422, fields={"project_id"})
    assert_problem(d.patch(task_url(personal), token=viewer.access,
                           json={"project_id": "nope"}), 422, fields={"project_id"})
    mine = d.post(TASKS, token=editor.access, json={"title": "Editor's own"}).json()
    moved = d.patch(task_url(mine), token=editor.access, json={"project_id": p["id"]})
    assert moved.status_code == 200 and moved.json()["project_id"] == p["id"], moved.text
    assert d.get(task_url(mine), token=viewer.access).status_code == 200

    # lists: ?project_id= for members; without it, personal + assigned + every project's tasks
    in_p = list_all(d, viewer.access, {"project_id": p["id"]})
    assert {x["title"] for x in in_p} == {"Brief (editor)", "by owner", "by admin", "by editor",
                                          "Editor's own"}
    everything = list_all(d, viewer.access)
    assert {x["id"] for x in everything} == {x["id"] for x in in_p} | {personal["id"]}
    assert [x["title"] for x in list_all(d, viewer.access, {"q": "brief"})] == ["Brief (editor)"]
    assert {x["title"] for x in list_all(d, viewer.access, {"owner": owner.id})} == {"by owner"}
    assert [x["id"] for x in list_all(d, viewer.access, {"assignee": "me"})] == [t["id"]]
    assert list_all(d, outsider.access) == []

    # the project itself: admins change it (If-Match strong), the owner deletes it
    url = project_url(p)
    for acc in (editor, viewer):
        assert_problem(d.patch(url, token=acc.access, json={"name": "Theirs"}), 403)
    resp = d.patch(url, token=admin.access, json={"description": "new"},
                   headers={"If-Match": '"1"'})
    assert resp.status_code == 200 and resp.json()["version"] == 2, resp.text
    assert resp.headers["ETag"] == '"2"' and resp.json()["my_role"] == "admin"
    for stale in ('"1"', 'W/"2"', "garbage"):
        assert_problem(d.patch(url, token=owner.access, json={"name": "Stale"},
                               headers={"If-Match": stale}), 412)
    assert_problem(d.patch(url, token=owner.access, json={"name": ""}), 422, fields={"name"})
    assert d.patch(url, token=owner.access, json={"name": "Launch 2"},
                   headers={"If-Match": '"2"'}).json()["name"] == "Launch 2"
    assert [x["name"] for x in d.get(PROJECTS, token=owner.access,
                                     params={"q": "laun"}).json()["items"]] == ["Launch 2"]
    assert d.get(PROJECTS, token=owner.access, params={"q": "unch"}).json()["items"] == []
    for acc in (admin, editor, viewer):
        assert_problem(d.delete(url, token=acc.access), 403)

    # members: admins manage them; granting admin, and the owner, are the owner's
    late, later = d.new_user(), d.new_user()
    add_member(d, editor.access, p, late, "viewer", status=403)
    add_member(d, admin.access, p, late, "admin", status=403)
    add_member(d, admin.access, p, late, "editor")
    add_member(d, admin.access, p, late, "viewer", status=409)
    assert_problem(d.post(project_url(p, "members"), token=admin.access,
                          json={"email": "nobody-" + uuid.uuid4().hex + "@example.com",
                                "role": "viewer"}), 404)
    assert_problem(d.post(project_url(p, "members"), token=admin.access,
                          json={"email": later.email, "role": "owner"}), 422, fields={"role"})
    assert_problem(d.post(project_url(p, "members"), token=admin.access, json={}), 422,
                   fields={"email", "role"})
    murl = project_url(p, "members", late.id)
    assert d.patch(murl, token=admin.access, json={"role": "viewer"}).json()["role"] == "viewer"
    assert_problem(d.patch(murl, token=admin.access, json={"role": "admin"}), 403)
    assert_problem(d.patch(murl, token=editor.access, json={"role": "editor"}), 403)
    assert d.patch(murl, token=owner.access, json={"role": "admin"}).json()["role"] == "admin"
    assert_problem(d.patch(project_url(p, "members", owner.id), token=admin.access,
                           json={"role": "viewer"}), 403)  # never demoted
    assert_problem(d.delete(project_url(p, "members", owner.id), token=admin.access), 403)
    assert_problem(d.delete(project_url(p, "members", owner.id), token=owner.access), 403)
    assert_problem(d.delete(project_url(p, "members", admin.id), token=viewer.access), 403)
    assert_problem(d.patch(project_url(p, "members", outsider.id), token=owner.access,
                           json={"role": "viewer"}), 404)

    # losing membership: access ends at once, cursors included; assignments are cleared
    first = d.get(TASKS, token=viewer.access, params={"limit": 2}).json()
    assert first["next_cursor"]
    assert d.delete(project_url(p, "members", viewer.id), token=viewer.access).status_code == 204
    assert_problem(d.get(task_url(t), token=viewer.access), 404)
    assert_problem(d.get(project_url(p), token=viewer.access), 404)
    after = d.get(TASKS, token=viewer.access, params={"limit": 2, "cursor": first["next_cursor"]})
    assert after.status_code == 200 and all(x["project_id"] is None
                                            for x in after.json()["items"]), after.text
    assert [x["id"] for x in list_all(d, viewer.access)] == [personal["id"]]
    now = d.get(task_url(t), token=owner.access).json()
    assert now["assignee_id"] is None and now["version"] > t["version"]

    # transfer: owner only, to an admin; the old owner stays an admin
    assert_problem(d.post(project_url(p, "transfer"), token=admin.access,
                          json={"user_id": admin.id}), 403)
    assert_problem(d.post(project_url(p, "transfer"), token=owner.access,
                          json={"user_id": editor.id}), 422, fields={"user_id"})
    assert_problem(d.post(project_url(p, "transfer"), token=owner.access, json={}), 422,
                   fields={"user_id"})
    resp = d.post(project_url(p, "transfer"), token=owner.access, json={"user_id": admin.id})
    assert resp.status_code == 200, resp.text
    assert resp.json()["owner_id"] == admin.id and resp.json()["my_role"] == "admin"
    assert d.get(url, token=admin.access).json()["my_role"] == "owner"
    assert_problem(d.delete(url, token=owner.access), 403)
    assert d.delete(project_url(p, "members", owner.id), token=owner.access).status_code == 204

    # deleting the project deletes its tasks
    assert d.delete(url, token=admin.access).status_code == 204
    assert_problem(d.get(task_url(t), token=admin.access), 404)
    assert_problem(d.get(url, token=admin.access), 404)
    assert list_all(d, editor.access) == []


# --------------------------------------------------------------------------- concurrency

def test_concurrent_member_add_and_removed_member_creating(docket):
    d = docket
    owner, racer = d.new_user(), d.new_user()
    p = new_project(d, owner.access)
    codes = []
    barrier = threading.Barrier(2)

    def add():
        barrier.wait()
        codes.append(d.post(project_url(p, "members"), token=owner.access,
                            json={"email": racer.email, "role": "editor"}).status_code)

    threads = [threading.Thread(target=add) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(codes) == [201, 409], codes

    # the editor keeps creating tasks, and assigning each to themselves, while being removed:
    # once a request has been refused none succeeds afterwards, every task created exists, and
    # none stays assigned to them (no deadlock between the removal and a change either)
    results = []
    stop = threading.Event()

    def create():
        while not stop.is_set() and len(results) < 400:
            r = project_task(d, racer.access, p, status=None, title="racing")
            results.append((r.status_code, r.json().get("id")))
            if r.status_code == 201:
                u = d.patch(task_url(r.json()), token=racer.access,
                            json={"assignee_id": racer.id})
                results.append((u.status_code, None))

    th = threading.Thread(target=create)
    th.start()
    wait_until(lambda: len(results) >= 3, 10, what="the first creations")
    removed = d.delete(project_url(p, "members", racer.id), token=owner.access)
    wait_until(lambda: any(c == 422 for c, _ in results), 10, what="a refused creation")
    stop.set()
    th.join()
    assert removed.status_code == 204
    statuses = [c for c, _ in results]
    assert set(statuses) <= {200, 201, 404, 422}, statuses
    first_refused = min(statuses.index(c) for c in (404, 422) if c in statuses)
    assert all(c in (404, 422) for c in statuses[first_refused:]), statuses
    created = {i for c, i in results if c == 201}
    listed = list_all(d, owner.access, {"project_id": p["id"]})
    assert {x["id"] for x in listed} == created
    assert all(x["assignee_id"] is None for x in listed), listed
    assert_problem(project_task(d, racer.access, p, status=None), 422, fields={"project_id"})

    # the removed member still owns the tasks they made, but hears nothing more of them: a
    # status change and a comment are not announced; adding them back is (events are handled
    # in order, so once that one is there the others were handled)
    mine = sorted(created)[0]
    assert d.patch(task_url(mine), token=owner.access, json={"status": "done"}).status_code == 200
    assert d.post(task_url(mine) + "/comments", token=owner.access,
                  json={"body": "closing"}).status_code == 201
    add_member(d, owner.access, p, racer, "viewer")

    def racer_types():
        items = d.get("/api/v1/notifications", token=racer.access).json()["items"]
        return sorted(n["type"] for n in items)

    wait_until(lambda: racer_types().count("project.member_added") == 2, 15,
               what="the second project.member_added")
    assert racer_types() == ["project.member_added", "project.member_added"]


# --------------------------------------------------------------------------- comments

def test_comments_activity_and_notifications(docket):
    d = docket
    owner, member, outsider, stranger = (d.new_user() for _ in range(4))
    p = new_project(d, owner.access)
    add_member(d, owner.access, p, member, "editor")
    t = project_task(d, owner.access, p, title="Plan", assignee_id=member.id)

    # comments: anyone who can see the task; oldest first; author only changes them
    c1 = d.post(task_url(t) + "/comments", token=member.access, json={"body": "First!"})
    assert c1.status_code == 201, c1.text
    c1 = c1.json()
    assert set(c1) == {"id", "task_id", "author", "body", "created_at", "updated_at"}
    assert c1["author"] == {"id": member.id, "name": member.name, "avatar_url": None}
    assert c1["task_id"] == t["id"] and c1["body"] == "First!"
    c2 = d.post(task_url(t) + "/comments", token=owner.access, json={"body": "Second"}).json()
    for body, fields in (({}, {"body"}), ({"body": ""}, {"body"}), ({"body": "x" * 5001},
                                                                    {"body"}), ({"body": 5},
                                                                                {"body"})):
        assert_problem(d.post(task_url(t) + "/comments", token=owner.access, json=body), 422,
                       fields=fields)
    assert_problem(d.post(task_url(t) + "/comments", token=outsider.access,
                          json={"body": "let me in"}), 404)
    assert_problem(d.get(task_url(t) + "/comments", token=outsider.access), 404)
    assert_problem(d.get(task_url(t) + "/activity", token=outsider.access), 404)
    page = d.get(task_url(t) + "/comments", token=owner.access, params={"limit": 1}).json()
    assert [c["id"] for c in page["items"]] == [c1["id"]] and page["next_cursor"]
    page2 = d.get(task_url(t) + "/comments", token=owner.access,
                  params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [c["id"] for c in page2["items"]] == [c2["id"]]
    curl = task_url(t) + "/comments/" + c1["id"]
    assert_problem(d.patch(curl, token=owner.access, json={"body": "edited"}), 403)
    edited = d.patch(curl, token=member.access, json={"body": "First, edited"})
    assert edited.status_code == 200 and edited.json()["body"] == "First, edited", edited.text
    # a personal task's comments: its owner and assignee
    mine = d.post(TASKS, token=outsider.access, json={"title": "Solo",
                                                     "assignee_id": stranger.id}).json()
    assert d.post(task_url(mine) + "/comments", token=stranger.access,
                  json={"body": "on it"}).status_code == 201
    assert_problem(d.get(task_url(mine) + "/comments", token=owner.access), 404)

    # notifications: task.commented to owner and assignee (not the author); member_added
    def types(acc):
        r = d.get("/api/v1/notifications", token=acc.access)
        return sorted(n["type"] for n in r.json()["items"])

    wait_until(lambda: types(member) == ["project.member_added", "task.assigned",
                                         "task.commented"], 15, what="member's notifications")
    wait_until(lambda: types(owner) == ["task.commented"], 15, what="owner's notifications")
    wait_until(lambda: types(outsider) == ["task.commented"], 15, what="personal comment")
    added = [n for n in d.get("/api/v1/notifications", token=member.access).json()["items"]
             if n["type"] == "project.member_added"][0]
    assert added["task_id"] is None and added["actor_id"] == owner.id

    # deleting a comment: its author or a project admin
    assert_problem(d.delete(task_url(t) + "/comments/" + c2["id"], token=member.access), 403)
    assert d.delete(curl, token=owner.access).status_code == 204  # admin removes member's
    assert_problem(d.patch(curl, token=member.access, json={"body": "gone?"}), 404)

    # activity: created, each changed field with old and new, comments, assignment
    resp = d.patch(task_url(t), token=member.access,
                   json={"title": "Plan v2", "status": "done", "priority": "urgent",
                         "labels": ["q1"], "due_at": "2031-01-02T03:04:05Z",
                         "description": "details", "assignee_id": None})
    assert resp.status_code == 200, resp.text
    acts = d.get(task_url(t) + "/activity", token=owner.access, params={"limit": 100}).json()
    entries = acts["items"]
    assert entries[0]["action"] == "created" and entries[0]["actor"]["id"] == owner.id
    commented = [e for e in entries if e["action"] == "commented"]
    assert [e["comment_id"] for e in commented] == [c1["id"], c2["id"]]
    changed = {e["field"]: (e["old"], e["new"]) for e in entries if e["action"] == "updated"}
    assert changed == {"title": ("Plan", "Plan v2"), "status": ("todo", "done"),
                       "priority": ("medium", "urgent"), "labels": ([], ["q1"]),
                       "due_at": (None, "2031-01-02T03:04:05.000Z"), "description": ("", "details"),
                       "assignee_id": (member.id, None)}, changed
    assert all(e["actor"]["id"] == member.id for e in entries if e["action"] == "updated")
    for e in entries:
        assert set(e) == {"id", "task_id", "actor", "action", "field", "old", "new",
                          "comment_id", "created_at"}, e
    first = d.get(task_url(t) + "/activity", token=owner.access, params={"limit": 2}).json()
    nxt = d.get(task_url(t) + "/activity", token=owner.access,
                params={"limit": 100, "cursor": first["next_cursor"]}).json()
    assert [e["id"] for e in first["items"] + nxt["items"]] == [e["id"] for e in entries]

    # a deleted author's comments remain, by nobody
    assert d.post(task_url(t) + "/comments", token=member.access,
                  json={"body": "Bye"}).status_code == 201
    assert d.delete("/api/v1/users/me", token=member.access).status_code == 204
    def authors():
        items = d.get(task_url(t) + "/comments", token=owner.access).json()["items"]
        return [c["author"]["id"] if c["author"] else None for c in items]

    wait_until(lambda: authors() == [owner.id, None], 15, what="the author's account gone")
    # deleting a task deletes its comments and activity
    assert d.delete(task_url(t), token=owner.access).status_code == 204
    assert_problem(d.get(task_url(t) + "/comments", token=owner.access), 404)
    assert_problem(d.get(task_url(t) + "/activity", token=owner.access), 404)


# --------------------------------------------------------------------------- accounts

def test_account_deletion_rules(docket):
    d = docket
    owner, member, solo = d.new_user(), d.new_user(), d.new_user()
    shared = new_project(d, owner.access, name="Shared")
    add_member(d, owner.access, shared, member, "admin")
    made = project_task(d, member.access, shared, title="Member's work", assignee_id=member.id)
    mine = new_project(d, member.access, name="Member's own")
    own_task = project_task(d, member.access, mine, title="In my own project")
    alone = new_project(d, solo.access)

    # owning a project with other members: 409 until it is transferred
    assert_problem(d.delete("/api/v1/users/me", token=owner.access), 409)
    assert d.get("/api/v1/users/me", token=owner.access).status_code == 200
    # a one-member project goes with its owner; tasks made elsewhere pass to that project's
    # owner, unassigned
    assert d.delete("/api/v1/users/me", token=member.access).status_code == 204
    wait_until(lambda: d.get(task_url(made), token=owner.access).json()["owner_id"] == owner.id,
               15, what="user.deleted handled")
    moved = d.get(task_url(made), token=owner.access).json()
    assert moved["assignee_id"] is None
    assert [m["user"]["id"] for m in d.get(project_url(shared, "members"),
                                           token=owner.access).json()["items"]] == [owner.id]
    assert_problem(d.get(task_url(own_task), token=owner.access), 404)
    # now the owner is alone in it and may go, with the project
    assert d.delete("/api/v1/users/me", token=owner.access).status_code == 204
    assert d.delete("/api/v1/users/me", token=solo.access).status_code == 204
    if d.mode.storage == "postgres":
        import psycopg2
        conn = psycopg2.connect(d.db_url)
        try:
            with conn.cursor() as cur:
                wait_until(lambda: (cur.execute(
                    "SELECT count(*) FROM tasks.tasks_projects WHERE id IN (%s, %s, %s)",
                    (shared["id"], mine["id"], alone["id"])) or cur.fetchone()[0] == 0), 15,
                    what="projects deleted")
                cur.execute("SELECT count(*) FROM tasks.tasks_project_members WHERE user_id "
                            "IN (%s, %s, %s)", (owner.id, member.id, solo.id))
                assert cur.fetchone()[0] == 0
        finally:
            conn.close()
