"""Notifications (/api/v1/notifications): which task changes notify whom, the list (newest
first, cursor pages, unread filter), marking read, the Server-Sent Events stream with
Last-Event-ID replay, the delivery preferences and their webhook secret, webhook delivery
(HMAC signature, retries with backoff, dead letters), email over SMTP, the due-soon scheduler,
at-least-once/shown-once across crashes, and what deleting a user removes.

Notifications are made asynchronously after the change that causes them, so tests poll with a
deadline. To show that something did *not* happen, a test makes a later change that does
notify (a "barrier") and waits for that: events are consumed in order, so once the barrier's
notification exists every earlier change has been handled. The sinks that receive webhooks and
mail are real servers on 127.0.0.1 (webhook_sink.py, smtp_sink.py); the stream is read with
sse_client.py.
"""

import dataclasses
import datetime
import hashlib
import hmac
import json
import re
import signal
import sqlite3
import time
import uuid

import pytest
import requests

import helpers
from helpers import assert_problem, assert_unauthorized, check_each, parse_time, wait_until
from mailbox import Mailbox, verify_address
from smtp_sink import SmtpSink
from sse_client import Event, SseStream
from test_ops import parse_metrics
from test_tasks import TASKS, assert_bad_params, new_task
from webhook_sink import WebhookSink

NOTIFS = "/api/v1/notifications"
PREFS = f"{NOTIFS}/preferences"
STREAM = f"{NOTIFS}/stream"
NOTIF_KEYS = {"id", "type", "task_id", "actor_id", "message", "created_at", "read_at"}
TYPES = {"task.assigned", "task.status_changed", "task.due_soon"}
SECRET = re.compile(r"^whsec_[0-9a-f]{64}$")
SIGNATURE = re.compile(r"^sha256=[0-9a-f]{64}$")

WAIT = 15            # seconds for an asynchronous notification or delivery to show up
# A public address literal: accepted as a webhook host without DNS (none here), never called
# (no notification is made for the users that set it).
PUBLIC_URL = "https://93.184.215.14/hooks/docket"

# Deliveries to a sink on 127.0.0.1, retried quickly.
FAST_DELIVERY = {"DOCKET_NOTIFICATION_WEBHOOK_ALLOW_PRIVATE": "true",
                 "DOCKET_NOTIFICATION_WEBHOOK_BACKOFF": "100ms",
                 "DOCKET_NOTIFICATION_DELIVERY_INTERVAL": "100ms"}


# --------------------------------------------------------------------------- helpers

_ANY = object()


def assert_notification(n, type=None, task=None, actor=_ANY, message=None):
    """The contract's {notification}: exactly these members, each of its type; and, when
    given, this type, task (dict or id), actor (Account, id, or None) and message."""
    assert set(n) == NOTIF_KEYS, n
    uuid.UUID(n["id"])
    assert n["type"] in TYPES, n
    for key in ("task_id", "actor_id"):
        assert n[key] is None or (isinstance(n[key], str) and n[key]), n
    assert isinstance(n["message"], str) and n["message"], n
    parse_time(n["created_at"])
    if n["read_at"] is not None:
        assert parse_time(n["read_at"]) >= parse_time(n["created_at"]), n
    if type is not None:
        assert n["type"] == type, n
    if task is not None:
        assert n["task_id"] == (task["id"] if isinstance(task, dict) else task), n
    if actor is not _ANY:
        want = getattr(actor, "id", actor)
        assert n["actor_id"] == want, (n, want)
    if message is not None:
        assert n["message"] == message, n
    return n


def page(d, token, **params):
    resp = d.get(NOTIFS, token=token, params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"
    body = resp.json()
    assert set(body) == {"items", "next_cursor"}, body
    for n in body["items"]:
        assert_notification(n)
    assert body["next_cursor"] is None or (isinstance(body["next_cursor"], str)
                                           and body["next_cursor"]), body
    return body


def list_notifications(d, token, limit=100, **params):
    """Every notification of the caller, following next_cursor (each id once)."""
    params = dict(params, limit=limit)
    items = []
    for _ in range(1000):
        body = page(d, token, **params)
        assert len(body["items"]) <= limit, body
        items += body["items"]
        if body["next_cursor"] is None:
            ids = [n["id"] for n in items]
            assert len(ids) == len(set(ids)), f"a notification listed twice: {ids}"
            return items
        assert len(body["items"]) == limit, "a page before the last one is full"
        params["cursor"] = body["next_cursor"]
    raise AssertionError("more than 1000 pages")


def wait_list(d, account, n, what=None, **params):
    """The account's notifications once there are exactly n of them."""
    def ready():
        items = list_notifications(d, account.access, **params)
        return items if len(items) == n else False
    return wait_until(ready, WAIT, interval=0.1,
                      what=what or f"{n} notification(s) for {account.email}")


def wait_notification(d, account, pred, what):
    """The first (newest) notification of the account that pred accepts."""
    def find():
        for n in list_notifications(d, account.access):
            if pred(n):
                return n
        return None
    return wait_until(find, WAIT, interval=0.1, what=what)


def wait_assigned(d, account, task):
    return wait_notification(d, account, lambda n: n["type"] == "task.assigned"
                             and n["task_id"] == task["id"],
                             f"task.assigned for {task['title']!r} to {account.email}")


def barrier(d, recipient, via, title=None):
    """`via` assigns a new task to `recipient` and waits for its task.assigned: every change
    made before this call has been handled by then. Returns (task, notification)."""
    task = new_task(d, via.access, title=title or f"barrier {uuid.uuid4().hex[:8]}",
                    assignee_id=recipient.id)
    return task, wait_assigned(d, recipient, task)


def patch_task(d, account, task, body):
    resp = d.patch(f"{TASKS}/{task['id']}", token=account.access, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def summary(items):
    """(type, task_id, actor_id, message) of each notification, for whole-list comparisons."""
    return [(n["type"], n["task_id"], n["actor_id"], n["message"]) for n in items]


def assigned(task, actor):
    return ("task.assigned", task["id"], actor.id, f'You were assigned "{task["title"]}"')


def mark_read(d, account, notification_id):
    resp = d.post(f"{NOTIFS}/{notification_id}/read", token=account.access)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""


def notifications_process(d):
    """The process that makes and delivers notifications: the notifications service in split
    mode, the one process otherwise."""
    if not d.mode.split:
        return d
    assert "notifications" in d.services, \
        "split mode runs no `docket notifications` process (helpers.SPLIT_SERVICES lacks it)"
    return d.services["notifications"]


def delivery_counts(d):
    """{(channel, result): value} of docket_notification_deliveries_total where deliveries run."""
    text = requests.get(notifications_process(d).url("/metrics"), timeout=5).text
    return {(labels.get("channel"), labels.get("result")): value
            for name, labels, value in parse_metrics(text)
            if name == "docket_notification_deliveries_total"}


def put_prefs(d, account, email_enabled=False, webhook_url=None):
    resp = d.put(PREFS, token=account.access,
                 json={"email_enabled": email_enabled, "webhook_url": webhook_url})
    assert resp.status_code == 200, resp.text
    return resp.json()


def verify_signature(hit, secret):
    sig = hit.headers.get("x-docket-signature", "")
    assert SIGNATURE.match(sig), f"X-Docket-Signature: {sig!r}"
    want = "sha256=" + hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sig.encode(), want.encode())


def iso(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def in_minutes(m):
    return iso(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=m))


def stays(predicate, seconds, what):
    """Asserts predicate() holds every time it is checked for `seconds` (showing that nothing
    more happens needs some waiting; it fails as soon as it stops holding)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.05)
    assert predicate(), what


def open_stream(d, account, headers=None):
    s = SseStream(d.base_url, STREAM, token=account.access, headers=headers)
    try:
        assert s.status == 200, (s.status, s.body()[:500])
        ctype = s.headers.get("content-type", "")
        assert ctype.split(";")[0].strip() == "text/event-stream", ctype
        assert s.headers.get("cache-control") == "no-cache", s.headers
    except BaseException:
        s.close()
        raise
    return s


def event_notification(ev):
    """The notification an SSE event carries (asserting the event's shape)."""
    assert isinstance(ev, Event), ev
    assert ev.type == "notification", ev
    data = json.loads(ev.data)
    assert_notification(data)
    assert ev.id == data["id"], ev
    return data


def db_counts(d, user_id):
    """Rows about the user in the notifications tables, read straight from the database."""
    queries = {"items": "SELECT count(*) FROM {p}notifications_items WHERE user_id = {m}",
               "prefs": "SELECT count(*) FROM {p}notifications_prefs WHERE user_id = {m}",
               "deliveries": "SELECT count(*) FROM {p}notifications_deliveries "
                             "WHERE user_id = {m}"}
    out = {}
    if d.mode.storage == "postgres":
        import psycopg2
        conn = psycopg2.connect(d.db_url)
        try:
            with conn.cursor() as cur:
                for k, q in queries.items():
                    cur.execute(q.format(p="notifications.", m="%s"), (user_id,))
                    out[k] = cur.fetchone()[0]
        finally:
            conn.close()
    else:
        conn = sqlite3.connect(f"file:{d.data_dir}/docket.db?mode=ro", uri=True, timeout=5)
        try:
            for k, q in queries.items():
                out[k] = conn.execute(q.format(p="", m="?"), (user_id,)).fetchone()[0]
        finally:
            conn.close()
    return out


# --------------------------------------------------------------------------- rules

def test_assignment_and_status_change_rules(docket):
    a = docket.new_user(name="Ann")
    b = docket.new_user(name="Ben")
    c = docket.new_user(name="Cat")
    before = time.time()
    t1 = new_task(docket, a.access, title="Plan Zoë's \"offsite\"", assignee_id=b.id)
    n = wait_assigned(docket, b, t1)
    assert_notification(n, type="task.assigned", task=t1, actor=a,
                        message='You were assigned "Plan Zoë\'s "offsite""')
    assert n["read_at"] is None
    assert parse_time(n["created_at"]) >= parse_time(t1["created_at"])
    assert abs(parse_time(n["created_at"]).timestamp() - before) < 60

    # changes that notify nobody: self-assignment (on create and by PATCH), the owner's own
    # status changes, an unchanged assignee
    own = new_task(docket, a.access, title="Mine", assignee_id=a.id)
    patch_task(docket, a, own, {"status": "in_progress"})
    later = new_task(docket, a.access, title="Later mine")
    patch_task(docket, a, later, {"assignee_id": a.id})
    patch_task(docket, a, later, {"status": "done"})
    # the assignee changes the status: the owner hears of it
    patch_task(docket, b, t1, {"status": "in_progress"})
    # the owner changes it: nobody does (the assignee included)
    patch_task(docket, a, t1, {"status": "done"})
    # reassigned: the new assignee is told; the same assignee again is no change
    patch_task(docket, a, t1, {"assignee_id": c.id})
    patch_task(docket, a, t1, {"assignee_id": c.id, "priority": "high"})
    wait_assigned(docket, c, t1)

    bar_a, _ = barrier(docket, a, via=c)
    bar_b, _ = barrier(docket, b, via=c)
    got_a = list_notifications(docket, a.access)
    assert summary(got_a) == [
        assigned(bar_a, c),
        ("task.status_changed", t1["id"], b.id, f'"{t1["title"]}" is now in_progress'),
    ]
    assert summary(list_notifications(docket, b.access)) == [assigned(bar_b, c), assigned(t1, a)]
    assert summary(list_notifications(docket, c.access)) == [assigned(t1, a)]
    for n in got_a:
        assert n["read_at"] is None


def test_every_route_needs_a_token(docket):
    a = docket.new_user()
    some_id = str(uuid.uuid4())
    for method, path, kw in (("GET", NOTIFS, {}), ("POST", f"{NOTIFS}/{some_id}/read", {}),
                             ("POST", f"{NOTIFS}/read-all", {}), ("GET", STREAM, {}),
                             ("GET", PREFS, {}),
                             ("PUT", PREFS, {"json": {"email_enabled": True,
                                                      "webhook_url": None}})):
        assert_unauthorized(docket.request(method, path, **kw))
        assert_unauthorized(docket.request(method, path, token="not.a.token", **kw))
    # nothing was changed by the refused PUT
    assert docket.get(PREFS, token=a.access).json() == {"email_enabled": False,
                                                        "webhook_url": None}


# --------------------------------------------------------------------------- the list

def test_list_newest_first_paging_and_unread(docket):
    a, b, c = docket.new_user(), docket.new_user(), docket.new_user()
    tasks = [new_task(docket, a.access, title=f"Item {i}", assignee_id=b.id) for i in range(7)]
    items = wait_list(docket, b, 7)
    assert [n["task_id"] for n in items] == [t["id"] for t in reversed(tasks)]
    assert summary(items) == [assigned(t, a) for t in reversed(tasks)]
    created = [parse_time(n["created_at"]) for n in items]
    assert created == sorted(created, reverse=True)
    # the default page holds them all
    assert page(docket, b.access) == {"items": items, "next_cursor": None}

    # pages of 3; a notification made between pages shows on none of them (it is newer)
    p1 = page(docket, b.access, limit=3)
    assert p1["items"] == items[:3] and p1["next_cursor"]
    newer = new_task(docket, a.access, title="Newer", assignee_id=b.id)
    wait_list(docket, b, 8)
    p2 = page(docket, b.access, limit=3, cursor=p1["next_cursor"])
    assert p2["items"] == items[3:6] and p2["next_cursor"]
    p3 = page(docket, b.access, limit=3, cursor=p2["next_cursor"])
    assert p3["items"] == items[6:]
    if p3["next_cursor"] is not None:
        assert page(docket, b.access, limit=3, cursor=p3["next_cursor"])["items"] == []
    # another page size may continue a cursor; an empty cursor is the first page
    assert page(docket, b.access, limit=100, cursor=p1["next_cursor"])["items"] == items[3:]
    everything = list_notifications(docket, b.access)
    assert summary(everything) == [assigned(newer, a)] + summary(items)
    assert page(docket, b.access, cursor="")["items"] == everything

    # unread only
    mark_read(docket, b, items[1]["id"])
    mark_read(docket, b, items[4]["id"])
    unread = list_notifications(docket, b.access, unread="true")
    assert [n["id"] for n in unread] == [n["id"] for n in everything
                                         if n["id"] not in (items[1]["id"], items[4]["id"])]
    assert all(n["read_at"] is None for n in unread)
    assert list_notifications(docket, b.access, unread="true", limit=2) == unread
    assert [n["id"] for n in list_notifications(docket, b.access, unread="false")] == \
        [n["id"] for n in everything]
    # unknown parameters are ignored
    assert page(docket, b.access, colour="blue")["items"] == list_notifications(docket, b.access)

    # nobody else sees them
    assert list_notifications(docket, c.access) == []
    assert list_notifications(docket, a.access) == []
    assert list_notifications(docket, c.access, unread="true") == []


def test_invalid_list_parameters(docket):
    a, b = docket.new_user(), docket.new_user()
    for i in range(3):
        new_task(docket, a.access, title=f"n{i}", assignee_id=b.id)
    wait_list(docket, b, 3)
    cases = [
        ({"limit": "0"}, {"limit"}),
        ({"limit": "101"}, {"limit"}),
        ({"limit": "-5"}, {"limit"}),
        ({"limit": "ten"}, {"limit"}),
        ({"limit": "2.5"}, {"limit"}),
        ({"limit": ""}, {"limit"}),
        ({"limit": "1e2"}, {"limit"}),
        ({"cursor": "not-a-cursor"}, {"cursor"}),
        ({"cursor": "!!!"}, {"cursor"}),
        ({"cursor": "A" * 400}, {"cursor"}),
        ({"cursor": "' OR 1=1 --"}, {"cursor"}),
        ({"unread": "yes"}, {"unread"}),
        ({"unread": "1"}, {"unread"}),
        ({"unread": "maybe"}, {"unread"}),
        ({"unread": "TRUEISH"}, {"unread"}),
        ({"limit": "0", "unread": "x", "cursor": "???"}, {"limit", "unread", "cursor"}),
    ]

    def check(case):
        params, fields = case
        assert_bad_params(docket.get(NOTIFS, token=b.access, params=params), fields)

    check_each(cases, check)
    for limit in ("1", "100", "2"):
        assert len(page(docket, b.access, limit=limit)["items"]) == min(int(limit), 3)


def test_cursor_is_tamper_evident(docket):
    """Like the tasks list: a cursor that was altered is 400 naming `cursor`."""
    a, b = docket.new_user(), docket.new_user()
    for i in range(4):
        new_task(docket, a.access, title=f"n{i}", assignee_id=b.id)
    wait_list(docket, b, 4)
    cursor = page(docket, b.access, limit=2)["next_cursor"]
    assert cursor and all(ch.isalnum() or ch in "-_" for ch in cursor), cursor
    assert b.id not in cursor

    def altered():
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        for i in sorted({0, len(cursor) // 2, len(cursor) - 1}):
            ch = alphabet[(alphabet.index(cursor[i]) + 1) % 64]
            yield cursor[:i] + ch + cursor[i + 1:]
        yield cursor[:-1]
        yield cursor + "A"
        yield cursor[::-1]

    def check(bad):
        assert_bad_params(docket.get(NOTIFS, token=b.access, params={"limit": 2, "cursor": bad}),
                          {"cursor"})

    check_each(list(altered()), check)
    # a cursor belongs to its filter: not for the unread listing
    assert_bad_params(docket.get(NOTIFS, token=b.access,
                                 params={"limit": 2, "cursor": cursor, "unread": "true"}),
                      {"cursor"})
    assert len(page(docket, b.access, limit=2, cursor=cursor)["items"]) == 2


# --------------------------------------------------------------------------- read

def test_mark_read_and_read_all(docket):
    a, b, c = docket.new_user(), docket.new_user(), docket.new_user()
    for i in range(3):
        new_task(docket, a.access, title=f"For B {i}", assignee_id=b.id)
    new_task(docket, a.access, title="For C", assignee_id=c.id)
    n3, n2, n1 = wait_list(docket, b, 3)
    (c1,) = wait_list(docket, c, 1)

    before = time.time()
    mark_read(docket, b, n1["id"])
    after = {n["id"]: n for n in list_notifications(docket, b.access)}
    first_read = after[n1["id"]]["read_at"]
    assert first_read is not None
    assert before - 5 <= parse_time(first_read).timestamp() <= time.time() + 5
    assert after[n2["id"]]["read_at"] is None and after[n3["id"]]["read_at"] is None
    assert {k: v for k, v in after[n1["id"]].items() if k != "read_at"} == \
        {k: v for k, v in n1.items() if k != "read_at"}
    # idempotent: the first read_at stays (the pause makes a second timestamp differ)
    time.sleep(0.02)
    mark_read(docket, b, n1["id"])
    assert {n["id"]: n["read_at"] for n in list_notifications(docket, b.access)}[n1["id"]] == \
        first_read

    # somebody else's, unknown and malformed ids: 404, and nothing changes
    for bad in (c1["id"], str(uuid.uuid4()), "abc", n2["id"].upper(), n2["id"] + "0",
                "1 OR 1=1", "%27%20OR%201%3D1"):
        assert_problem(docket.post(f"{NOTIFS}/{bad}/read", token=b.access), 404)
    assert_problem(docket.post(f"{NOTIFS}/{n2['id']}/read", token=c.access), 404)
    assert list_notifications(docket, c.access) == [c1]
    assert [n["read_at"] is None for n in list_notifications(docket, b.access)] == \
        [True, True, False]

    # read-all: every one of the caller's, keeping the first read_at; nobody else's
    time.sleep(0.02)
    resp = docket.post(f"{NOTIFS}/read-all", token=b.access)
    assert resp.status_code == 204 and resp.content == b""
    final = list_notifications(docket, b.access)
    assert all(n["read_at"] is not None for n in final)
    assert {n["id"]: n["read_at"] for n in final}[n1["id"]] == first_read
    assert list_notifications(docket, b.access, unread="true") == []
    assert list_notifications(docket, c.access) == [c1]
    # again, and with nothing at all: still 204
    assert docket.post(f"{NOTIFS}/read-all", token=b.access).status_code == 204
    assert docket.post(f"{NOTIFS}/read-all", token=a.access).status_code == 204
    assert list_notifications(docket, b.access) == final


# --------------------------------------------------------------------------- preferences

def test_preferences_and_the_webhook_secret(docket):
    a, b = docket.new_user(), docket.new_user()
    defaults = {"email_enabled": False, "webhook_url": None}
    resp = docket.get(PREFS, token=a.access)
    assert resp.status_code == 200 and resp.json() == defaults
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"

    # setting a URL: a secret, once
    got = put_prefs(docket, a, False, PUBLIC_URL)
    assert set(got) == {"email_enabled", "webhook_url", "webhook_secret"}, got
    assert got["email_enabled"] is False and got["webhook_url"] == PUBLIC_URL
    first = got["webhook_secret"]
    assert SECRET.match(first), first
    assert docket.get(PREFS, token=a.access).json() == {"email_enabled": False,
                                                        "webhook_url": PUBLIC_URL}
    # the same URL: no secret in the reply (it is kept)
    assert put_prefs(docket, a, True, PUBLIC_URL) == {"email_enabled": True,
                                                      "webhook_url": PUBLIC_URL}
    assert docket.get(PREFS, token=a.access).json() == {"email_enabled": True,
                                                        "webhook_url": PUBLIC_URL}
    # another URL: a new secret
    other_url = "http://93.184.215.14:8080/other?x=1"
    got = put_prefs(docket, a, True, other_url)
    second = got["webhook_secret"]
    assert SECRET.match(second) and second != first
    assert got == {"email_enabled": True, "webhook_url": other_url, "webhook_secret": second}
    # null removes the URL (and its secret); setting it again makes a new one
    assert put_prefs(docket, a, False, None) == defaults
    assert docket.get(PREFS, token=a.access).json() == defaults
    third = put_prefs(docket, a, False, PUBLIC_URL)["webhook_secret"]
    assert SECRET.match(third) and third not in (first, second)
    # other accepted URLs: IPv6 literal, port, path and query, exactly 2048 characters
    for url in ("https://[2606:4700:4700::1111]/hook", "http://93.184.215.14:8443/a/b?c=d",
                "https://93.184.215.14/" + "a" * (2048 - len("https://93.184.215.14/"))):
        assert put_prefs(docket, b, False, url)["webhook_url"] == url
    # every user has their own
    assert docket.get(PREFS, token=docket.new_user().access).json() == defaults
    # no GET ever shows a secret
    for method, path, status, text in docket.transcript:
        if method == "GET":
            assert "whsec_" not in text and "webhook_secret" not in text, (path, text)


def test_preferences_validation(docket):
    """With notification.webhook_allow_private unset (false): every private address refused."""
    a = docket.new_user()
    too_long = "https://93.184.215.14/" + "a" * (2049 - len("https://93.184.215.14/"))
    cases = [
        ({}, {"email_enabled", "webhook_url"}),
        ({"email_enabled": False}, {"webhook_url"}),
        ({"webhook_url": None}, {"email_enabled"}),
        ({"email_enabled": None, "webhook_url": None}, {"email_enabled"}),
        ({"email_enabled": "true", "webhook_url": None}, {"email_enabled"}),
        ({"email_enabled": 1, "webhook_url": None}, {"email_enabled"}),
        ({"email_enabled": [], "webhook_url": None}, {"email_enabled"}),
        ({"email_enabled": False, "webhook_url": 5}, {"webhook_url"}),
        ({"email_enabled": False, "webhook_url": True}, {"webhook_url"}),
        ({"email_enabled": False, "webhook_url": {"url": PUBLIC_URL}}, {"webhook_url"}),
        ({"email_enabled": False, "webhook_url": [PUBLIC_URL]}, {"webhook_url"}),
        ({"email_enabled": "no", "webhook_url": 7}, {"email_enabled", "webhook_url"}),
    ]
    bad_urls = [
        "", " ", "not a url", "/relative/hook", "93.184.215.14/hook", "//93.184.215.14/hook",
        "ftp://93.184.215.14/hook", "file:///etc/passwd", "javascript:alert(1)",
        "gopher://93.184.215.14/", "ws://93.184.215.14/", "https://", "http:///path",
        "https://user:pw@93.184.215.14/hook", "https://user@93.184.215.14/hook",
        "https://93.184.215.14 /hook", "https://93.184.215.14/\r\nX: y", too_long,
        "https://hooks.invalid/docket", "http://[fe80::1%25eth0]/",
        # loopback, private, link-local, unspecified, CGNAT, multicast — however written
        "http://127.0.0.1/hook", "http://127.0.0.2:8080/", "http://localhost/",
        "http://localhost:3000/api", "http://127.1/", "http://2130706433/", "http://0x7f000001/",
        "http://017700000001/", "http://10.1.2.3/", "http://172.16.5.4/", "http://172.31.255.1/",
        "http://192.168.0.1/", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/",
        "http://0/", "http://100.64.0.1/", "http://100.127.255.254/", "http://224.0.0.1/",
        "http://239.255.255.250:1900/", "http://[::1]/", "http://[::]/", "http://[fe80::1]/",
        "http://[fc00::1]/", "http://[fd12:3456::1]/", "http://[ff02::1]/",
        "http://[::ffff:127.0.0.1]/", "http://[::ffff:10.0.0.1]/",
    ]
    cases += [({"email_enabled": False, "webhook_url": u}, {"webhook_url"}) for u in bad_urls]

    def check(case):
        body, fields = case
        assert_problem(docket.put(PREFS, token=a.access, json=body), 422, fields=fields)

    check_each(cases, check)
    json_ct = {"Content-Type": "application/json"}
    assert_problem(docket.put(PREFS, token=a.access, data=b"{", headers=json_ct), 400)
    assert_problem(docket.put(PREFS, token=a.access,
                              data=b'{"email_enabled":true,"webhook_url":null}',
                              headers={"Content-Type": "text/plain"}), 415)
    assert_problem(docket.put(PREFS, token=a.access, data=b'["email_enabled"]', headers=json_ct),
                   422, fields={"body"})
    assert_problem(docket.put(PREFS, token=a.access, data=b"null", headers=json_ct), 422)
    assert_problem(docket.put(PREFS, token=a.access, data=b"x" * (1024 * 1024 + 10),
                              headers=json_ct), 413)
    # nothing was stored by any of them
    assert docket.get(PREFS, token=a.access).json() == {"email_enabled": False,
                                                        "webhook_url": None}
    # unknown members are ignored
    assert put_prefs(docket, a, True, None) == {"email_enabled": True, "webhook_url": None}


def test_private_webhook_allowed_when_configured(start_docket):
    d = start_docket(extra_env={"DOCKET_NOTIFICATION_WEBHOOK_ALLOW_PRIVATE": "true"})
    a = d.new_user()
    for url in ("http://127.0.0.1:9/hook", "http://localhost/", "http://10.1.2.3/",
                "http://[::1]:8080/x"):
        got = put_prefs(d, a, False, url)
        assert got["webhook_url"] == url and SECRET.match(got["webhook_secret"])
    # the other rules still hold
    for url in ("ftp://127.0.0.1/", "http://user:pw@127.0.0.1/"):
        assert_problem(d.put(PREFS, token=a.access,
                             json={"email_enabled": False, "webhook_url": url}), 422,
                       fields={"webhook_url"})


# --------------------------------------------------------------------------- webhooks

def test_webhook_delivery_is_signed(start_docket):
    d = start_docket(extra_env=FAST_DELIVERY)
    a, b, c = d.new_user(), d.new_user(), d.new_user()
    with WebhookSink() as sink:
        secret = put_prefs(d, b, False, sink.url("/hook?src=docket"))["webhook_secret"]
        new_task(d, a.access, title="Nobody's webhook", assignee_id=c.id)   # c has none
        t1 = new_task(d, a.access, title="Signed delivery", assignee_id=b.id)
        (hit,) = sink.wait_for(1, WAIT)
        n1 = wait_assigned(d, b, t1)
        assert hit.method == "POST" and hit.path == "/hook?src=docket"
        assert hit.headers.get("content-type", "").split(";")[0] == "application/json"
        assert hit.headers.get("x-docket-event") == "task.assigned"
        assert verify_signature(hit, secret), "X-Docket-Signature does not verify"
        assert not verify_signature(hit, secret + "0")
        body = json.loads(hit.body)
        assert set(body) == {"id", "type", "created_at", "notification"}, body
        assert isinstance(body["id"], str) and body["id"] and body["id"] != n1["id"], body
        assert body["type"] == "task.assigned"
        assert body["created_at"] == n1["created_at"]
        assert body["notification"] == n1
        assert hit.headers.get("x-docket-delivery") == body["id"]

        # a new URL: a new secret signs from now on, and the old one no longer does
        secret2 = put_prefs(d, b, False, sink.url("/v2"))["webhook_secret"]
        t2 = new_task(d, a.access, title="Second delivery", assignee_id=b.id)
        hit2 = sink.wait_for(2, WAIT)[1]
        n2 = wait_assigned(d, b, t2)
        assert hit2.path == "/v2" and json.loads(hit2.body)["notification"] == n2
        assert verify_signature(hit2, secret2) and not verify_signature(hit2, secret)
        # a status change by the assignee reaches the owner's webhook, with its type
        secret_a = put_prefs(d, a, False, sink.url("/owner"))["webhook_secret"]
        patch_task(d, b, t2, {"status": "in_progress"})
        hit3 = sink.wait_for(3, WAIT)[2]
        assert hit3.path == "/owner" and hit3.headers.get("x-docket-event") == \
            "task.status_changed"
        assert verify_signature(hit3, secret_a)
        assert json.loads(hit3.body)["notification"]["type"] == "task.status_changed"
        # only these three: c has no webhook, and nothing is sent twice
        barrier(d, c, via=a)
        wait_until(lambda: delivery_counts(d).get(("webhook", "sent")) == 3, WAIT,
                   what="3 webhook deliveries counted as sent")
        assert len(sink.received()) == 3
        assert len({json.loads(h.body)["id"] for h in sink.received()}) == 3


def test_webhook_retried_with_backoff_until_it_succeeds(start_docket):
    d = start_docket(extra_env=FAST_DELIVERY)
    a, b = d.new_user(), d.new_user()
    with WebhookSink(statuses=[500, 500], default=200) as sink:
        secret = put_prefs(d, b, False, sink.url())["webhook_secret"]
        t = new_task(d, a.access, title="Flaky receiver", assignee_id=b.id)
        hits = sink.wait_for(3, WAIT)
        assert [h.status for h in hits] == [500, 500, 200]
        # the same delivery each time: same bytes, valid signature
        assert hits[0].body == hits[1].body == hits[2].body
        assert all(verify_signature(h, secret) for h in hits)
        assert json.loads(hits[0].body)["notification"] == wait_assigned(d, b, t)
        # exponential backoff from 100 ms (±10 % jitter): waits of at least 90 ms, then 180 ms
        assert hits[1].at - hits[0].at >= 0.085, [h.at for h in hits]
        assert hits[2].at - hits[1].at >= 0.17, [h.at for h in hits]
        # delivered once: a later notification is the only further request
        t2 = new_task(d, a.access, title="Next one", assignee_id=b.id)
        hit4 = sink.wait_for(4, WAIT)[3]
        assert json.loads(hit4.body)["notification"]["task_id"] == t2["id"]
        wait_until(lambda: delivery_counts(d).get(("webhook", "sent")) == 2, WAIT,
                   what="2 webhook deliveries counted as sent")
        counts = delivery_counts(d)
        assert counts.get(("webhook", "retry")) == 2, counts
        assert counts.get(("webhook", "dead"), 0) == 0, counts
        stays(lambda: len(sink.received()) == 4, 1.0, "no request after the successes")


def test_webhook_dead_lettered_after_the_last_attempt(start_docket):
    d = start_docket(extra_env=dict(FAST_DELIVERY, DOCKET_NOTIFICATION_WEBHOOK_MAX_ATTEMPTS="3"))
    a, b = d.new_user(), d.new_user()
    with WebhookSink(default=500) as sink:
        secret = put_prefs(d, b, False, sink.url())["webhook_secret"]
        t = new_task(d, a.access, title="Receiver always fails", assignee_id=b.id)
        hits = sink.wait_for(3, WAIT)
        assert len({h.body for h in hits}) == 1 and all(verify_signature(h, secret)
                                                       for h in hits)
        wait_until(lambda: delivery_counts(d).get(("webhook", "dead")) == 1, WAIT,
                   what='docket_notification_deliveries_total{channel="webhook",result="dead"} 1')
        # no fourth attempt: retries would come every 100-400 ms here
        stays(lambda: len(sink.received()) == 3, 1.5, "no attempt after the last one")
        counts = delivery_counts(d)
        assert counts.get(("webhook", "sent"), 0) == 0, counts
        assert counts.get(("webhook", "retry")) == 2, counts
        # the in-app notification is there all the same
        assert wait_assigned(d, b, t)["read_at"] is None


# --------------------------------------------------------------------------- email

def test_email_to_the_assignee(start_docket):
    with SmtpSink() as smtp:
        d = start_docket(extra_env={"SMTP_URL": smtp.url, "MAIL_FROM": "docket@example.test"})
        box = Mailbox.smtp(smtp)
        a, b, c, e = d.new_user(), d.new_user(), d.new_user(), d.new_user()
        verify_address(d, box, b)
        verify_address(d, box, c)

        def notification_mails():
            return [m for m in smtp.received() if "X-Docket-Mail" not in m.message]

        def wait_mails(n):
            wait_until(lambda: len(notification_mails()) >= n, WAIT,
                       what=f"{n} notification mail(s)")
            return notification_mails()

        assert put_prefs(d, b, True, None) == {"email_enabled": True, "webhook_url": None}
        # e wants e-mail but never verified the address: e-mail notifications are withheld
        assert put_prefs(d, e, True, None) == {"email_enabled": True, "webhook_url": None}
        new_task(d, a.access, title="No mail for C", assignee_id=c.id)    # c: email off
        new_task(d, a.access, title="No mail for E", assignee_id=e.id)    # e: unverified
        t = new_task(d, a.access, title="Quarterly report", assignee_id=b.id)
        (mail,) = wait_mails(1)
        assert mail.rcpt_tos == [b.email], mail.rcpt_tos
        assert mail.mail_from == "docket@example.test"
        msg = mail.message
        assert b.email in str(msg["To"]), msg["To"]
        assert "docket@example.test" in str(msg["From"]), msg["From"]
        assert 'You were assigned "Quarterly report"' in str(msg["Subject"]), msg["Subject"]
        wait_assigned(d, b, t)

        # a title that is not ASCII and one that tries to add a header
        t2 = new_task(d, a.access, title="Café «plan»", assignee_id=b.id)
        t3 = new_task(d, a.access, title="Report\r\nX-Injected: yes\r\nBcc: x@example.test",
                      assignee_id=b.id)
        mails = wait_mails(3)
        subjects = [str(m.message["Subject"]) for m in mails]
        assert any('You were assigned "Café «plan»"' in s for s in subjects), subjects
        for m in mails:
            assert m.rcpt_tos == [b.email]
            assert "X-Injected" not in m.message and "Bcc" not in m.message, m.data[:600]
            head = re.split(rb"\r?\n\r?\n", m.data, maxsplit=1)[0]
            assert all(byte < 128 for byte in head), f"raw non-ASCII in the mail header: {head!r}"
        wait_assigned(d, b, t2)
        wait_assigned(d, b, t3)
        # one mail per notification of b, none for c (e-mail off) nor e (unverified)
        barrier(d, c, via=a)
        wait_until(lambda: delivery_counts(d).get(("email", "sent")) == 3, WAIT,
                   what="3 emails counted as sent")
        wait_until(lambda: delivery_counts(d).get(("email", "dead")) == 1, WAIT,
                   what="the unverified address's e-mail dead-lettered")
        assert len(notification_mails()) == 3
        assert not [m for m in notification_mails() if m.rcpt_tos == [e.email]]


# --------------------------------------------------------------------------- due soon

def due_soon(d, account, task=None):
    return [n for n in list_notifications(d, account.access) if n["type"] == "task.due_soon"
            and (task is None or n["task_id"] == task["id"])]


def assert_due_message(n, task):
    head = f'"{task["title"]}" is due '
    assert n["message"].startswith(head), n
    assert parse_time(n["message"][len(head):]) == parse_time(task["due_at"]), n
    assert n["actor_id"] is None, n


def test_due_soon_once_per_due_date(start_docket):
    d = start_docket(extra_env={"DOCKET_NOTIFICATION_SCHEDULER_INTERVAL": "1s"})
    a, b = d.new_user(), d.new_user()
    assigned_task = new_task(d, a.access, title="Due, assigned", due_at=in_minutes(30),
                             assignee_id=b.id)
    own = new_task(d, a.access, title="Due, unassigned", due_at=in_minutes(30))
    done = new_task(d, a.access, title="Due, done", due_at=in_minutes(30), status="done")
    far = new_task(d, a.access, title="Due later", due_at=in_minutes(180))
    overdue = new_task(d, a.access, title="Already overdue", due_at=in_minutes(-5))
    n_b = wait_until(lambda: due_soon(d, b, assigned_task), WAIT,
                     what="task.due_soon for the assignee")[0]
    assert_notification(n_b, type="task.due_soon", task=assigned_task, actor=None)
    assert_due_message(n_b, assigned_task)
    n_a = wait_until(lambda: due_soon(d, a, own), WAIT, what="task.due_soon for the owner")[0]
    assert_due_message(n_a, own)

    def sentinel(i):
        """A new task due soon; its notification shows one more scheduler pass has run."""
        s = new_task(d, a.access, title=f"Sentinel {i}", due_at=in_minutes(20))
        wait_until(lambda: due_soon(d, a, s), WAIT, what=f"task.due_soon for sentinel {i}")
        return s

    sentinels = [sentinel(1), sentinel(2)]
    assert len(due_soon(d, b)) == 1
    assert [n["task_id"] for n in due_soon(d, a)] == \
        [s["id"] for s in reversed(sentinels)] + [own["id"]]
    assert due_soon(d, a, done) == [] and due_soon(d, a, far) == []
    assert due_soon(d, a, overdue) == []        # past when it was set: not "coming due"
    assert due_soon(d, a, assigned_task) == []

    # a new due date inside the window: one more; then none again
    moved = patch_task(d, a, own, {"due_at": in_minutes(40)})
    wait_until(lambda: len(due_soon(d, a, own)) == 2, WAIT, what="a second task.due_soon")
    newest = due_soon(d, a, own)[0]
    assert_due_message(newest, moved)
    sentinels.append(sentinel(3))
    assert len(due_soon(d, a, own)) == 2 and len(due_soon(d, b)) == 1
    # done tasks are not notified, even with a new due date; and far ones come into range
    patch_task(d, a, done, {"due_at": in_minutes(25)})
    patch_task(d, a, far, {"due_at": in_minutes(10)})
    wait_until(lambda: due_soon(d, a, far), WAIT, what="task.due_soon once moved into range")
    sentinel(4)
    assert due_soon(d, a, done) == []
    assert len(due_soon(d, a, far)) == 1


# --------------------------------------------------------------------------- stream

def test_event_stream_live_heartbeat_and_replay(start_docket):
    d = start_docket(extra_env={"DOCKET_NOTIFICATION_SSE_HEARTBEAT": "1s",
                                "DOCKET_GATEWAY_TIMEOUT": "2s"})
    a, b, c = d.new_user(), d.new_user(), d.new_user()
    assert_unauthorized(d.get(STREAM))
    assert_unauthorized(d.get(STREAM, token="not.a.token"))

    with open_stream(d, b) as s, open_stream(d, c) as sc:
        # retry first, then heartbeats (and nothing to replay)
        assert s.until_heartbeat(5) == []
        assert s.items[0] == ("retry", 3000), s.items[:3]
        assert s.until_heartbeat(5) == []
        assert sc.until_heartbeat(5) == []
        t1 = new_task(d, a.access, title="Live one", assignee_id=b.id)
        n1 = event_notification(s.next_event(WAIT))
        assert n1 == wait_assigned(d, b, t1)
        # c's stream carries nothing of b's
        assert sc.until_heartbeat(5) == []
        # the stream outlives the gateway's upstream timeout (2 s here) with heartbeats
        for _ in range(3):
            assert s.until_heartbeat(5) == []

    # missed while disconnected: replayed after Last-Event-ID, oldest first, then live
    t2 = new_task(d, a.access, title="Missed one", assignee_id=b.id)
    t3 = new_task(d, a.access, title="Missed two", assignee_id=b.id)
    n3, n2, _ = wait_list(d, b, 3)
    with open_stream(d, b, headers={"Last-Event-ID": n1["id"]}) as s:
        replay = [event_notification(s.next_event(5)), event_notification(s.next_event(5))]
        assert [n["task_id"] for n in replay] == [t2["id"], t3["id"]]
        assert replay == [n2, n3]
        assert s.until_heartbeat(5) == []
        t4 = new_task(d, a.access, title="Live again", assignee_id=b.id)
        assert event_notification(s.next_event(WAIT)) == wait_assigned(d, b, t4)

    # the last one: nothing to replay; an unknown id or none: live only
    n4 = list_notifications(d, b.access)[0]
    for headers in ({"Last-Event-ID": n4["id"]}, {"Last-Event-ID": str(uuid.uuid4())},
                    {"Last-Event-ID": "garbage"}, {}):
        with open_stream(d, b, headers=headers) as s:
            assert s.until_heartbeat(5) == [], headers
    with open_stream(d, b, headers={"Last-Event-ID": str(uuid.uuid4())}) as s:
        assert s.until_heartbeat(5) == []
        t5 = new_task(d, a.access, title="After unknown id", assignee_id=b.id)
        assert event_notification(s.next_event(WAIT)) == wait_assigned(d, b, t5)


def until_eof(s, seconds):
    """Reads the stream until the server ends it; the events read on the way. AssertionError
    when it is still open after `seconds`."""
    events = []
    deadline = time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the stream is still open after {seconds} s"
            item = s.next(left)
            if isinstance(item, Event):
                events.append(item)
    except EOFError:
        return events


def test_stream_ends_within_a_second_when_its_session_is_revoked(start_docket):
    """Logout makes the session's access token stop working at once (contract, Auth): a stream
    opened with it ends within a second (pushed revocation, not a poll), and carries nothing
    more; the user's other session's stream goes on."""
    d = start_docket(extra_env={"DOCKET_NOTIFICATION_SSE_HEARTBEAT": "10s"})
    a, b = d.new_user(), d.new_user()
    b_other = dataclasses.replace(b, session=d.new_session(b))   # b's second session
    with open_stream(d, b) as s, open_stream(d, b_other) as other:
        t0 = new_task(d, a.access, title="Before logout", assignee_id=b.id)
        assert event_notification(s.next_event(WAIT))["task_id"] == t0["id"]
        assert event_notification(other.next_event(WAIT))["task_id"] == t0["id"]
        t_logout = time.monotonic()
        assert d.post("/api/v1/auth/logout", token=b.access).status_code == 204
        assert until_eof(s, 1.0) == []
        assert time.monotonic() - t_logout < 1.0
        t = new_task(d, a.access, title="After logout", assignee_id=b.id)
        assert event_notification(other.next_event(WAIT))["task_id"] == t["id"]
    # a token of the revoked session cannot open a new one
    assert_unauthorized(d.get(STREAM, token=b.access))


def test_stream_ends_when_its_token_expires(docket_factory):
    """A stream lasts as long as the access token that opened it: heartbeats until then, the
    end soon after the expiry (the hub's timer; the client reconnects with a fresh token)."""
    d = docket_factory("sqlite", extra_env={"DOCKET_AUTH_JWT_EXPIRY": "3s",
                                            "DOCKET_NOTIFICATION_SSE_HEARTBEAT": "1s"})
    t_before = time.monotonic()
    a = d.new_user()      # its token: valid for 3 s (whole seconds: 2 to 3 s from now)
    t_after = time.monotonic()
    with open_stream(d, a) as s:
        assert s.until_heartbeat(5) == []
        until_eof(s, 6)
        t_end = time.monotonic()
    assert t_end - t_before >= 1.9, t_end - t_before       # not before the expiry
    assert t_end - t_after < 3.0 + 1.0, t_end - t_after    # within a tick or so after it
    assert_unauthorized(d.get(STREAM, token=a.access))


def test_replay_after_reconnect_is_exactly_what_was_missed(start_docket):
    """Pushed live, then away while five arrive, then back with Last-Event-ID: exactly the five,
    oldest first, once each; then live again with nothing repeated."""
    d = start_docket(extra_env={"DOCKET_NOTIFICATION_SSE_HEARTBEAT": "1s"})
    a, b = d.new_user(), d.new_user()
    with open_stream(d, b) as s:
        t1 = new_task(d, a.access, title="Seen live", assignee_id=b.id)
        seen = event_notification(s.next_event(WAIT))
        assert seen["task_id"] == t1["id"]
    missed = [new_task(d, a.access, title=f"Missed {i}", assignee_id=b.id)["id"]
              for i in range(5)]
    wait_list(d, b, 6)
    with open_stream(d, b, headers={"Last-Event-ID": seen["id"]}) as s:
        got = [event_notification(e) for e in s.until_heartbeat(5)]
        assert [n["task_id"] for n in got] == missed
        assert got == list(reversed(list_notifications(d, b.access)[:5]))
        t7 = new_task(d, a.access, title="Live again", assignee_id=b.id)
        live = event_notification(s.next_event(WAIT))
        assert live["task_id"] == t7["id"]
        assert s.until_heartbeat(5) == []     # nothing twice


def stream_counts(d):
    """{service name: docket_notification_streams} of every notifications process."""
    out = {}
    for name, svc in d.services.items():
        if name.split("#")[0] != "notifications":
            continue
        text = requests.get(svc.url("/metrics"), timeout=5).text
        out[name] = sum(v for n, _, v in parse_metrics(text) if n == "docket_notification_streams")
    return out


def test_a_notification_reaches_the_users_streams_on_every_replica(docket_factory):
    """Two notifications processes behind the gateway, one stream of the user on each: the one
    notification (made by whichever replica consumed the task event) reaches both, pushed
    through Redis; a logout ends the streams on both."""
    d = docket_factory("split", replicas={"notifications": 2},
                       extra_env={"DOCKET_NOTIFICATION_SSE_HEARTBEAT": "1s"})
    a, b = d.new_user(), d.new_user()
    s1 = open_stream(d, b)
    s2 = open_stream(d, b)     # the gateway takes turns: the other replica
    try:
        wait_until(lambda: sorted(stream_counts(d).values()) == [1, 1], 5,
                   what="one stream on each notifications replica")
        for i in range(3):
            t = new_task(d, a.access, title=f"Everywhere {i}", assignee_id=b.id)
            n1, n2 = event_notification(s1.next_event(WAIT)), event_notification(s2.next_event(WAIT))
            assert n1 == n2 and n1["task_id"] == t["id"]
        assert d.post("/api/v1/auth/logout", token=b.access).status_code == 204
        assert until_eof(s1, 1.0) == [] and until_eof(s2, 1.0) == []
        wait_until(lambda: sorted(stream_counts(d).values()) == [0, 0], 5,
                   what="both replicas let the streams go")
    finally:
        s1.close()
        s2.close()


def test_per_user_stream_cap_ends_the_oldest(docket_factory):
    d = docket_factory("sqlite", extra_env={"DOCKET_NOTIFICATION_SSE_MAX_STREAMS_PER_USER": "2",
                                            "DOCKET_NOTIFICATION_SSE_HEARTBEAT": "1s"})
    a, b = d.new_user(), d.new_user()
    first = open_stream(d, b)
    try:
        assert first.until_heartbeat(5) == []
        with open_stream(d, b) as second, open_stream(d, b) as third:
            assert until_eof(first, 3) == []
            t = new_task(d, a.access, title="To the two newest", assignee_id=b.id)
            for s in (second, third):
                assert event_notification(s.next_event(WAIT))["task_id"] == t["id"]
    finally:
        first.close()


def test_sigterm_ends_open_streams(start_docket):
    d = start_docket(extra_env={"DOCKET_NOTIFICATION_SSE_HEARTBEAT": "1s"})
    a = d.new_user()
    streams = [open_stream(d, a), open_stream(d, a)]
    try:
        for s in streams:
            assert s.until_heartbeat(5) == []
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait() == 0
        assert time.monotonic() - t0 < helpers.STOP_DEADLINE
        for s in streams:
            with pytest.raises(EOFError):
                while True:
                    s.next(5)
    finally:
        for s in streams:
            s.close()


# --------------------------------------------------------------------------- at least once

def test_crash_loses_and_duplicates_nothing(start_docket):
    """SIGKILL of the process that consumes the events right after a burst of changes (split:
    the notifications service, then more changes while it is down): after a restart every
    change has exactly one notification."""
    d = start_docket()
    a, b = d.new_user(), d.new_user()
    target = notifications_process(d)
    tasks = [new_task(d, a.access, title=f"Burst {i}", assignee_id=b.id) for i in range(12)]
    target.proc.kill()
    target.proc.wait()
    if d.mode.split:
        tasks += [new_task(d, a.access, title=f"While down {i}", assignee_id=b.id)
                  for i in range(4)]
    target.start()
    # split: the gateway takes the service back once its probe sees it ready
    wait_until(lambda: d.get(NOTIFS, token=b.access).status_code == 200, WAIT,
               what="the notifications service answering again")
    items = wait_list(d, b, len(tasks), what=f"{len(tasks)} notifications after the restart")
    assert sorted(n["task_id"] for n in items) == sorted(t["id"] for t in tasks)
    assert sorted(summary(items)) == sorted(assigned(t, a) for t in tasks)
    bar, _ = barrier(d, b, via=a)
    final = list_notifications(d, b.access)
    assert len(final) == len(tasks) + 1
    assert sorted(n["task_id"] for n in final) == sorted([t["id"] for t in tasks] + [bar["id"]])


def test_postgres_crash_after_publishing_loses_and_duplicates_nothing(docket_factory, own_pg,
                                                                      own_redis):
    """The relay deletes the outbox rows it published without waiting for the WAL flush (the
    changes themselves commit durably). PostgreSQL killed right after a burst (WAL writer
    slowed down, so those deletes are still in memory) brings the rows back: they are
    published again, and every change still has exactly one notification; none is lost."""
    slow_wal = "-c wal_writer_delay=10000"
    own_pg.stop()
    own_pg.start(slow_wal)
    d = docket_factory("postgres", pg=own_pg, redis=own_redis)
    a, b = d.new_user(), d.new_user()
    tasks = [new_task(d, a.access, title=f"Burst {i}", assignee_id=b.id) for i in range(12)]
    wait_list(d, b, len(tasks), what="the burst's notifications before the crash")
    db = d.db_url.rsplit("/", 1)[1]

    def outbox_rows():
        conn = own_pg.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM tasks.tasks_outbox")
                return cur.fetchone()[0]
        finally:
            conn.close()

    wait_until(lambda: outbox_rows() == 0, WAIT, what="the relay deleting what it published")
    own_pg.stop()  # immediate: no shutdown checkpoint, unflushed WAL is gone
    own_pg.start(slow_wal)
    wait_until(lambda: d.get(NOTIFS, token=b.access).status_code == 200, WAIT,
               what="Docket answering again after PostgreSQL's restart")
    bar, _ = barrier(d, b, via=a)
    final = list_notifications(d, b.access)
    assert sorted(n["task_id"] for n in final) == sorted([t["id"] for t in tasks] + [bar["id"]])
    assert len(final) == len(tasks) + 1
    # and the task writes acknowledged before the crash are all there
    conn = own_pg.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks.tasks WHERE owner_id = %s", (a.id,))
            assert cur.fetchone()[0] == len(tasks) + 1
    finally:
        conn.close()


def test_created_once_after_the_service_was_down(docket_factory):
    d = docket_factory("split")
    svc = notifications_process(d)
    a, b = d.new_user(), d.new_user()
    t0 = new_task(d, a.access, title="Before", assignee_id=b.id)
    wait_assigned(d, b, t0)
    assert svc.stop() == 0
    t1 = new_task(d, a.access, title="While the service was down", assignee_id=b.id)
    patch_task(d, b, t1, {"status": "in_progress"})
    resp = d.get(NOTIFS, token=b.access)
    assert resp.status_code in (502, 503), resp.text
    assert_problem(resp, resp.status_code)
    svc.start()
    wait_until(lambda: d.get(NOTIFS, token=b.access).status_code == 200, WAIT,
               what="the notifications service back behind the gateway")
    wait_assigned(d, b, t1)
    wait_notification(d, a, lambda n: n["type"] == "task.status_changed"
                      and n["task_id"] == t1["id"], "the status change made while down")
    barrier(d, b, via=a)
    barrier(d, a, via=b)
    assert [n["task_id"] for n in list_notifications(d, b.access)].count(t1["id"]) == 1
    assert [n["task_id"] for n in list_notifications(d, a.access)].count(t1["id"]) == 1
    assert [n["task_id"] for n in list_notifications(d, b.access)].count(t0["id"]) == 1
    # the lag gauge (the age of the events being handled) says 0 once the consumer has caught
    # up: about 2 s without events
    wait_until(lambda: task_events_lag(svc) == 0.0, 10, what="docket_queue_lag_seconds back to 0")


def task_events_lag(svc):
    text = requests.get(svc.url("/metrics"), timeout=10).text
    m = re.search(r'^docket_queue_lag_seconds\{service="notifications",queue="task_events"\} '
                  r'(\S+)$', text, re.M)
    assert m, "no task_events lag gauge"
    return float(m.group(1))


# --------------------------------------------------------------------------- deleted users

def test_deleting_a_user_removes_their_notifications(start_docket):
    d = start_docket(extra_env=dict(FAST_DELIVERY,
                                    DOCKET_NOTIFICATION_WEBHOOK_MAX_ATTEMPTS="100",
                                    DOCKET_NOTIFICATION_WEBHOOK_MAX_BACKOFF="200ms"))
    a, b = d.new_user(), d.new_user()
    with WebhookSink(default=500) as sink:       # b's deliveries stay pending, retried
        put_prefs(d, b, True, sink.url())
        shared = new_task(d, a.access, title="Shared", assignee_id=b.id)
        new_task(d, b.access, title="B's own")
        patch_task(d, b, shared, {"status": "in_progress"})
        wait_assigned(d, b, shared)
        a_before = wait_notification(d, a, lambda n: n["type"] == "task.status_changed",
                                     "the owner's task.status_changed")
        sink.wait_for(2, WAIT)
        before = db_counts(d, b.id)
        assert before["items"] == 1 and before["prefs"] == 1 and before["deliveries"] >= 1, before

        assert d.delete("/api/v1/users/me", token=b.access).status_code == 204
        wait_until(lambda: db_counts(d, b.id) == {"items": 0, "prefs": 0, "deliveries": 0},
                   WAIT, what="b's notifications, preferences and deliveries deleted")
        # the pending deliveries are gone: at most one attempt already under way finishes
        seen = len(sink.received())
        stays(lambda: len(sink.received()) <= seen + 1, 1.5, "no retries for a deleted user")

    wait_until(lambda: d.get(NOTIFS, token=b.access).status_code == 401, 5,
               what="the deleted user's token refused")
    assert_unauthorized(d.get(NOTIFS, token=b.access))
    # the owner keeps their own notifications (the actor was b) and everything still works
    assert wait_notification(d, a, lambda n: n["id"] == a_before["id"], "kept") == a_before
    wait_until(lambda: d.get(f"{TASKS}/{shared['id']}", token=a.access).json()["assignee_id"]
               is None, WAIT, what="the shared task unassigned")
    t2 = new_task(d, a.access, title="After the deletion")
    fresh = d.new_user()
    patch_task(d, a, t2, {"assignee_id": fresh.id})
    assert summary(wait_list(d, fresh, 1)) == [assigned(t2, a)]
    assert d.post(f"{NOTIFS}/read-all", token=a.access).status_code == 204
    # a new account sees none of it
    assert list_notifications(d, d.new_user().access) == []
