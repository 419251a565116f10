"""Fault injection against real servers: what a dependency failure or a hard stop may and may
not do to Docket.

- Redis restarted empty: revoked access tokens (logout, password change, refresh-token reuse,
  deleted account) stay refused, and a session id that was never issued is refused too; live
  sessions work again by themselves. `docket all` (the auth service's table answers in the
  process) and split mode (processes without the table wait for the auth service to seed the
  store) take different paths, so both run.
- PostgreSQL stopped under write load: fast 503s while it is down, writes succeed again within
  5 s of its return, and no acknowledged write is lost.
- SIGTERM under load: every request the server accepted is answered successfully.
- SQLite and kill -9 under writes: nothing acknowledged is lost and the file passes
  `PRAGMA integrity_check` — with enough concurrent writers that their transactions are
  committed in groups (docs/design/sqlite-writes.md).
- SQLite under many concurrent writers (creates and read-then-write patches from several
  accounts): every write lands, none is refused.
- SQLite shared with other processes under write load: another process holding the write lock
  delays the server's writes without failing them (SQLite's busy handler, kept for exactly
  this), and `docket migrate` and `docket backup` run beside the server.
"""

import concurrent.futures
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid

import pytest
import requests
import urllib3

import helpers
from helpers import assert_unauthorized, forge_jwt, jwt_claims, wait_until


# --------------------------------------------------------------------------- helpers

def restart_redis(r):
    """Stops the RedisServer `r` without saving and starts an empty one on the same port."""
    import redis
    before = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=1)
    before.set("test:before-restart", "1")  # gone after the restart: the data was wiped
    before.close()
    subprocess.run(["redis-cli", "-p", str(r.port), "shutdown", "nosave"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=10)
    r.proc.wait(10)
    with open(r.log, "ab") as out:
        r.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(r.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=1)
    wait_until(client.ping, 10, what="redis back")
    # empty: every revocation record is gone. Not dbsize() == 0: Docket's processes may
    # reconnect and write (consumer groups, the session store) before this line runs.
    assert client.exists("test:before-restart") == 0
    client.close()


def new_task(d, token, title):
    return d.post("/api/v1/tasks", token=token, json={"title": title}, timeout=10)


class Writer:
    """Threads that create tasks until stopped, recording what was acknowledged (201) and how
    every other attempt ended."""

    def __init__(self, d, token, threads=3):
        self.d, self.token = d, token
        self.acked = []          # task ids answered 201
        self.failures = []       # (status or exception name, seconds it took, at)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, n):
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.monotonic()
            try:
                r = requests.post(self.d.url("/api/v1/tasks"), json={"title": f"w{n}-{i}"},
                                  headers=helpers.auth_headers(self.token), timeout=10)
                outcome = r.status_code
                if r.status_code == 201:
                    with self.lock:
                        self.acked.append(r.json()["id"])
                    continue
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with self.lock:
                self.failures.append((outcome, time.monotonic() - t0, time.monotonic()))
            time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def acked_count(self):
        with self.lock:
            return len(self.acked)


# --------------------------------------------------------------------------- Redis restart

@pytest.mark.parametrize("mode", ["postgres", "split"])
def test_redis_restart_keeps_revocations(docket_factory, own_redis, mode):
    d = docket_factory(mode, redis=own_redis)
    alice = d.new_user()
    live = alice.session
    logged_out = d.new_session(alice)
    assert d.post("/api/v1/auth/logout", token=logged_out.access).status_code == 204
    # refresh-token reuse: the second use of a rotated token kills the session
    reused = d.new_session(alice)
    assert d.refresh(reused.refresh).status_code == 200
    assert d.refresh(reused.refresh).status_code == 401
    # a password change revokes the user's other sessions
    bob = d.new_user()
    bob_other = d.new_session(bob)
    new_password = "another long passphrase"
    r = d.post("/api/v1/auth/password", token=bob.access,
               json={"current_password": bob.password, "new_password": new_password})
    assert r.status_code == 204, r.text
    # a deleted account
    carol = d.new_user()
    assert d.delete("/api/v1/users/me", token=carol.access).status_code == 204
    # a token for a session that was never issued, signed with the real key
    claims = dict(jwt_claims(live.access))
    claims["sid"] = str(uuid.uuid4())
    claims["jti"] = str(uuid.uuid4())
    forged = forge_jwt(claims, d.jwt_secret)

    dead = {"logged out": logged_out.access, "reused": reused.access,
            "password changed": bob_other.access, "deleted account": carol.access,
            "never issued": forged}

    def dead_ones_refused():
        for what, token in dead.items():
            r = d.me(token)
            assert r.status_code in (401, 503), f"{what}: {r.status_code} {r.text}"
            if r.status_code == 401:
                assert_unauthorized(r)
        r = new_task(d, carol.access, "orphan")
        assert r.status_code in (401, 503), f"deleted account created a task: {r.status_code}"

    wait_until(lambda: all(d.me(t).status_code == 401 for t in dead.values()), 5,
               what="every dead token refused before the restart")
    assert d.me(live.access).status_code == 200
    assert d.me(bob.access).status_code == 200

    restart_redis(own_redis)

    # while the processes notice and the store is refilled, dead tokens never pass; live ones
    # come back by themselves
    deadline = time.monotonic() + 15
    while True:
        dead_ones_refused()
        if d.me(live.access).status_code == 200 and d.me(bob.access).status_code == 200:
            break
        assert time.monotonic() < deadline, "live sessions did not come back within 15 s"
        time.sleep(0.1)
    for what, token in dead.items():
        assert_unauthorized(d.me(token))
    assert_unauthorized(new_task(d, carol.access, "orphan"))
    assert new_task(d, live.access, "still works").status_code == 201
    # a revocation made after the restart holds as well
    assert d.post("/api/v1/auth/logout", token=live.access).status_code == 204
    wait_until(lambda: d.me(live.access).status_code == 401, 2, what="logout after restart")


# --------------------------------------------------------------------------- PostgreSQL stop

def test_postgres_stopped_under_write_load(docket_factory, own_pg, own_redis):
    d = docket_factory("postgres", pg=own_pg, redis=own_redis)
    acct = d.new_user()
    with Writer(d, acct.access) as w:
        wait_until(lambda: w.acked_count() >= 20, 10, what="writes before the outage")
        own_pg.stop()
        down_at = time.monotonic()
        time.sleep(2.5)
        during = [f for f in w.failures if f[2] >= down_at + 0.5]
        own_pg.start()
        up_at = time.monotonic()
        before = w.acked_count()
        wait_until(lambda: w.acked_count() > before, 5, interval=0.05,
                   what="a write acknowledged within 5 s of PostgreSQL's return")
        back_after = time.monotonic() - up_at
        wait_until(lambda: w.acked_count() >= before + 20, 10, what="writes after the outage")
    assert during, "no failed write while PostgreSQL was down"
    statuses = {f[0] for f in during}
    assert statuses <= {503}, f"while PostgreSQL was down: {sorted(map(str, statuses))}"
    slowest = max(f[1] for f in during)
    assert slowest < 3.0, f"a 503 took {slowest:.1f} s"
    assert back_after < 5.0
    # every acknowledged write is there
    conn = own_pg.connect(d.db_url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM tasks.tasks WHERE owner_id = %s", (acct.id,))
            stored = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    missing = set(w.acked) - stored
    assert not missing, f"{len(missing)} acknowledged tasks lost"


# --------------------------------------------------------------------------- SIGTERM

def test_sigterm_under_load_fails_no_request(docket_factory):
    d = docket_factory("sqlite")
    acct = d.new_user()
    outcomes = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            i += 1
            # a new connection each time: a request either reaches the server or is refused
            try:
                if i % 2:
                    r = requests.get(d.url("/api/v1/users/me"),
                                     headers=helpers.auth_headers(acct.access), timeout=10)
                    ok = r.status_code == 200
                else:
                    r = requests.post(d.url("/api/v1/tasks"), json={"title": f"t{n}-{i}"},
                                      headers=helpers.auth_headers(acct.access), timeout=10)
                    ok = r.status_code == 201
                result = "ok" if ok else f"status {r.status_code}"
            except requests.ConnectionError as exc:
                reason = getattr(exc.args[0], "reason", None) if exc.args else None
                refused = isinstance(reason, urllib3.exceptions.NewConnectionError)
                if refused:
                    result = "refused"
                    stop.wait(0.01)
                else:
                    result = f"error {exc!r}"
            except requests.RequestException as exc:
                result = f"error {exc!r}"
            with lock:
                outcomes.append(result)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client, n) for n in range(6)]
        wait_until(lambda: outcomes.count("ok") >= 100, 15, what="load before SIGTERM")
        d.signal(signal.SIGTERM)
        rc = d.wait()
        time.sleep(0.2)
        stop.set()
        for f in futures:
            f.result(30)
    assert rc == 0
    failed = [o for o in outcomes if o not in ("ok", "refused")]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:5]}"
    assert "refused" in outcomes  # the load really ran into the shutdown


# --------------------------------------------------------------------------- SQLite kill -9

def test_sqlite_kill9_under_writes_loses_nothing(docket_factory):
    d = docket_factory("sqlite")
    accts = [d.new_user() for _ in range(3)]
    # more writers than server threads: the write queue is never empty, groups form
    writers = [Writer(d, a.access, threads=5) for a in accts]
    for w in writers:
        w.__enter__()
    try:
        wait_until(lambda: sum(w.acked_count() for w in writers) >= 300, 30,
                   what="writes before kill -9")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
    finally:
        for w in writers:
            w.__exit__(None, None, None)
    d.proc = None  # killed on purpose: nothing for the teardown to stop
    acked = {t for w in writers for t in w.acked}
    db = sqlite3.connect(os.path.join(d.data_dir, "docket.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0] for row in db.execute("SELECT id FROM tasks")}
    finally:
        db.close()
    missing = acked - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged tasks lost"
    acct = accts[0]
    # and docket starts again on that file, with everything in it
    again = docket_factory("sqlite", data_dir=d.data_dir, jwt_secret=d.jwt_secret)
    r = again.get("/api/v1/tasks?limit=1", token=acct.access)
    assert r.status_code == 200, r.text


def test_sqlite_concurrent_writes_all_land(docket_factory):
    """16 clients at once, each creating tasks and patching each one (a transaction that reads
    the row, checks its version and writes): every request succeeds and every write is there."""
    d = docket_factory("sqlite")
    accts = [d.new_user() for _ in range(4)]
    per_client = 12

    def client(n):
        acct = accts[n % len(accts)]
        s = requests.Session()
        s.headers.update(helpers.auth_headers(acct.access))
        out = []
        for i in range(per_client):
            r = s.post(d.url("/api/v1/tasks"), json={"title": f"c{n}-{i}"}, timeout=30)
            assert r.status_code == 201, r.text
            task = r.json()
            r = s.patch(d.url(f"/api/v1/tasks/{task['id']}"), json={"status": "done"},
                        headers={"If-Match": f'"{task["version"]}"'}, timeout=30)
            assert r.status_code == 200, r.text
            out.append(task["id"])
        return out

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = [t for f in [pool.submit(client, n) for n in range(16)] for t in f.result(120)]
    assert len(set(ids)) == 16 * per_client
    db = sqlite3.connect(os.path.join(d.data_dir, "docket.db"))
    try:
        rows = dict(db.execute("SELECT id, status FROM tasks"))
    finally:
        db.close()
    assert set(ids) <= set(rows)
    assert {rows[t] for t in ids} == {"done"}
    # and the server reads them back
    for a in accts:
        r = d.get("/api/v1/tasks?limit=100&status=done", token=a.access)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 4 * per_client


def test_sqlite_other_processes_write_beside_the_server(docket_factory, tmp_path):
    d = docket_factory("sqlite", extra_env={"DOCKET_DATABASE_ACQUIRE_TIMEOUT": "15s"})
    acct = d.new_user()
    path = os.path.join(d.data_dir, "docket.db")

    def cli(*args):
        r = helpers.run_cli([*args, f"--storage.data_dir={d.data_dir}"], env=d.env, cwd=d.cwd,
                            timeout=60)
        assert r.returncode == 0, f"docket {args[0]}: {r.returncode}\n{r.stdout}\n{r.stderr}"

    with Writer(d, acct.access, threads=6) as w:
        wait_until(lambda: w.acked_count() >= 30, 20, what="writes before the other processes")
        other = sqlite3.connect(path, timeout=15, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")   # the write lock, from another process
            time.sleep(0.5)                    # what the server committed before is answered
            held = w.acked_count()
            time.sleep(1.0)
            assert w.acked_count() == held, "a write was acknowledged while another process " \
                                            "held the write lock"
            other.execute("ROLLBACK")
        finally:
            other.close()
        wait_until(lambda: w.acked_count() >= held + 20, 20, what="writes after the lock")
        cli("migrate")
        cli("backup", str(tmp_path / "copy.db"))
        before = w.acked_count()
        wait_until(lambda: w.acked_count() >= before + 20, 20, what="writes after the commands")
    assert not w.failures, f"{len(w.failures)} failed writes, e.g. {w.failures[:3]}"
    copy = sqlite3.connect(str(tmp_path / "copy.db"))
    try:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("SELECT count(*) FROM tasks").fetchone()[0] >= 30
    finally:
        copy.close()
