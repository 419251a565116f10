"""Helpers for Docket's black-box system tests.

What lives here: the throwaway servers (PostgreSQL, Redis), one started `docket` process
(`Docket`) with a small HTTP client bound to it, account helpers, problem+json assertions,
JWT forging and `wait_until`. Fixtures that wire these together are in conftest.py.
Everything here talks to real processes over real sockets; nothing is mocked.
"""

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import requests

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKET_BIN = os.environ.get("DOCKET_BIN") or os.path.join(REPO, "build", "docket")
PG_BIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")

# Every HTTP call carries a timeout: a hang is a failure, never a stuck suite.
HTTP_TIMEOUT = 10
START_DEADLINE = 15.0
STOP_DEADLINE = 15.0

PASSWORD = "correct horse battery staple"

# Argon2 settings that make one hash take a noticeable time (about a second here with
# libsodium's SIMD code; t=10 took 0.2-0.3 s, too close to the tests' 0.3 s probes), for tests
# of the hashing pool and of draining in-flight requests.
SLOW_HASH = {"DOCKET_AUTH_ARGON2_MEMORY_KIB": "65536", "DOCKET_AUTH_ARGON2_ITERATIONS": "40"}

# Sanitizer reports that fail a test when they appear in a docket log.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# Environment inherited from the caller that must never leak into a docket under test.
_SCRUBBED_ENV = ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "S3_ENDPOINT", "S3_BUCKET",
                 "S3_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "SMTP_URL",
                 "MAIL_FROM", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME")

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


# --------------------------------------------------------------------------- modes

@dataclasses.dataclass(frozen=True)
class Mode:
    """How a docket under test is deployed. `storage` is "sqlite" or "postgres"; `split` runs
    one process per service behind `docket gateway` instead of `docket all`."""
    name: str
    id: str
    storage: str
    split: bool = False


# The one list of deployment modes every `docket` test runs in.
MODES = [
    Mode(name="sqlite", id="sqlite", storage="sqlite"),
    Mode(name="postgres", id="pg", storage="postgres"),
    Mode(name="split", id="split", storage="postgres", split=True),
]

# The services split mode starts, each on its own port behind the gateway.
SPLIT_SERVICES = ("users", "auth", "tasks", "notifications")
MODE_BY_NAME = {m.name: m for m in MODES}


# --------------------------------------------------------------------------- utilities

_PORT_SLICE = 1500
_port_cursor = [0]


def free_port():
    """A free TCP port on 127.0.0.1. Under pytest-xdist (make test runs several workers) each
    worker takes ports from its own slice of 20000-32000, below Linux's ephemeral range: no
    other worker, and no outgoing connection, is handed the same port between this check and
    the server's bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    base = 20000 + (int(worker[2:]) % 8) * _PORT_SLICE
    for _ in range(_PORT_SLICE):
        port = base + _port_cursor[0] % _PORT_SLICE
        _port_cursor[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}..{base + _PORT_SLICE}")


def random_secret(n=48):
    return base64.urlsafe_b64encode(os.urandom(n))[:n].decode()


def unique_email(prefix="user"):
    return f"{prefix}-{uuid.uuid4().hex[:16]}@example.com"


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value (returned) or timeout seconds pass
    (AssertionError naming `what` and the last value or exception seen). Mind that a
    requests.Response is falsy when its status is >= 400: return a tuple or a bool."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except AssertionError:
            raise
        except Exception as exc:  # connection refused while starting, and the like
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def run_as_postgres(args, **kw):
    """Runs a PostgreSQL tool; initdb/pg_ctl refuse root, so go through runuser when root."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + list(args)
    return subprocess.run(args, cwd="/", stdin=subprocess.DEVNULL, **kw)


def auth_headers(token):
    return {"Authorization": f"Bearer {token}"}


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_claims(token):
    """The payload of a JWT, unverified (the tests check signatures separately)."""
    return json.loads(b64url_decode(token.split(".")[1]))


def jwt_header(token):
    return json.loads(b64url_decode(token.split(".")[0]))


def forge_jwt(claims, key, alg="HS256", header=None):
    """A JWT signed by hand, so that any header/algorithm combination can be produced
    (alg "none" gives an empty signature)."""
    hdr = {"alg": alg, "typ": "JWT"}
    if header:
        hdr.update(header)
    signing_input = b64url(json.dumps(hdr, separators=(",", ":"))) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")))
    if alg == "none":
        return signing_input + "."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    if isinstance(key, str):
        key = key.encode()
    sig = hmac.new(key, signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


def parse_time(text):
    import datetime
    assert RFC3339_UTC.match(text), f"not an RFC 3339 UTC timestamp with Z: {text!r}"
    base, _, frac = text[:-1].partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    if frac:
        dt += datetime.timedelta(microseconds=int((frac + "000000")[:6]))
    return dt


# --------------------------------------------------------------------------- assertions

def check_each(cases, check):
    """Runs check(case) for every case and fails once, listing every failing case (one
    docket serves many cheap cases; the report still names each one that failed)."""
    failures = []
    for case in cases:
        try:
            check(case)
        except AssertionError as exc:
            failures.append(f"- {case!r}: {exc}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


def assert_problem(resp, status, fields=None):
    """Asserts an RFC 9457 problem reply with this status; for 422, `fields` (if given) is
    the set of field names that `errors` must name (extra names are a failure too).
    Returns the parsed body."""
    assert resp.status_code == status, \
        f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/problem+json", \
        f"problem Content-Type expected, got {ctype!r}"
    body = resp.json()
    assert isinstance(body, dict), body
    for key in ("type", "title", "status", "detail", "request_id"):
        assert key in body, f"problem body lacks {key!r}: {body}"
    assert isinstance(body["type"], str) and body["type"], body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str), body
    assert body["status"] == status, body
    assert resp.headers.get("X-Request-Id"), "no X-Request-Id header"
    assert body["request_id"] == resp.headers.get("X-Request-Id"), \
        (body["request_id"], resp.headers.get("X-Request-Id"))
    if status == 422 or (status == 400 and "errors" in body):
        # the contract: `errors` on 422, and on 400 naming invalid query parameters
        errors = body.get("errors")
        assert isinstance(errors, list) and errors, f"422 without errors: {body}"
        for e in errors:
            assert isinstance(e, dict) and isinstance(e.get("field"), str) \
                and isinstance(e.get("message"), str) and e["message"], e
        if fields is not None:
            named = {e["field"] for e in errors}
            assert named == set(fields), f"errors name {sorted(named)}, expected {sorted(fields)}"
    else:
        assert "errors" not in body, f"`errors` only belongs on 422: {body}"
    return body


def assert_unauthorized(resp):
    body = assert_problem(resp, 401)
    www = resp.headers.get("WWW-Authenticate", "")
    assert www.startswith("Bearer"), f"WWW-Authenticate: {www!r}"
    return body


def assert_user(user, email=None, name=None):
    assert set(user) >= {"id", "email", "name", "role", "avatar_url", "created_at",
                         "updated_at"}, user
    assert isinstance(user["id"], str) and user["id"], user
    assert user["role"] == "user", user
    assert user["avatar_url"] is None, user
    parse_time(user["created_at"])
    parse_time(user["updated_at"])
    if email is not None:
        assert user["email"] == email, user
    if name is not None:
        assert user["name"] == name, user
    for secret in ("password", "password_hash"):
        assert secret not in user, user


# --------------------------------------------------------------------------- servers

class PostgresServer:
    """A throwaway PostgreSQL 15 cluster on a free 127.0.0.1 port (trust auth)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="docket-pg-")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "pg.log")
        self.port = free_port()
        self.running = False
        r = run_as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres",
                             "--auth-local=trust", "--auth-host=trust", "-E", "UTF8",
                             "--locale=C.UTF-8", "--no-sync"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert r.returncode == 0, f"initdb failed: {r.stdout}"

    def start(self, extra_opts=""):
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                f"-c max_connections=300 {extra_opts}")
        r = run_as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-w",
                             "-o", opts, "start"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert r.returncode == 0, f"pg_ctl start failed: {r.stdout}\n{self.log_text()}"
        self.running = True

    def stop(self, mode="immediate"):
        if not self.running:
            return
        run_as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running = False

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db="postgres"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def connect(self, db="postgres"):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db,
                                connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self):
        name = "t_" + uuid.uuid4().hex[:20]
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return name

    def drop_database(self, name):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            conn.close()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class RedisServer:
    """A throwaway Redis without persistence on a free 127.0.0.1 port."""

    # One logical database per docket started on the shared server, so that event streams,
    # consumer groups and counters of one test never reach another's processes.
    DATABASES = 4096

    def __init__(self, log_dir):
        self.port = free_port()
        self.next = 0
        self.log = os.path.join(log_dir, f"redis-{self.port}.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--databases", str(self.DATABASES)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        import redis
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        wait_until(client.ping, 10, what=f"redis on port {self.port}")
        client.close()

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def fresh_url(self):
        """The URL of a logical database no docket has used yet."""
        self.next = self.next % (self.DATABASES - 1) + 1
        return self.url(self.next)

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- docket

def base_env(jwt_secret=None, fast_hash=True, extra=None):
    """The environment for a docket: the caller's minus anything that configures docket,
    plus the test defaults. A value of None in `extra` removes that variable."""
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUBBED_ENV and not k.startswith("DOCKET_")}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1"
    env["DOCKET_RATE_LIMITING_MAX_REQUESTS"] = "100000"
    env["DOCKET_GATEWAY_RATE_LIMIT_RPS"] = "0"     # tests fire faster than a client would
    if jwt_secret is not None:
        env["JWT_SECRET"] = jwt_secret
    if fast_hash:
        env["DOCKET_AUTH_ARGON2_MEMORY_KIB"] = "1024"
        env["DOCKET_AUTH_ARGON2_ITERATIONS"] = "1"
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def run_cli(args, env, cwd, timeout=30):
    """Runs `docket ARGS` to completion (commands that exit on their own: migrate, --help,
    configuration errors). A docket that keeps running past `timeout` is killed and the
    test fails."""
    try:
        return subprocess.run([DOCKET_BIN] + list(args), env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`docket {' '.join(args)}` still running after {timeout}s: "
                             f"stdout={exc.stdout!r} stderr={exc.stderr!r}")


def sanitizer_reports(text):
    return [m for m in SANITIZER_MARKERS if m in text]


@dataclasses.dataclass
class Session:
    """One login of an account: its tokens and session id."""
    access: str
    refresh: str
    body: dict

    @property
    def sid(self):
        return jwt_claims(self.access)["sid"]


@dataclasses.dataclass
class Account:
    id: str
    email: str
    password: str
    name: str
    user: dict
    session: Session = None

    @property
    def access(self):
        return self.session.access

    @property
    def refresh(self):
        return self.session.refresh


class Docket:
    """One running `docket` process and an HTTP client bound to it.

    `transcript` keeps (method, path, status, body text) of every reply, so a test can scan
    everything the server said (e.g. for leaked secrets)."""

    def __init__(self, *, mode, args, env, cwd, port, log_path, data_dir=None, db_url=None,
                 jwt_secret=None, name="docket"):
        self.mode = mode
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.port = port
        self.log_path = log_path
        self.data_dir = data_dir
        self.db_url = db_url
        self.jwt_secret = jwt_secret
        self.name = name
        self.base_url = f"http://127.0.0.1:{port}"
        self.transcript = []
        self.proc = None
        self.returncode = None

    # -- process lifecycle

    def start(self, deadline=START_DEADLINE):
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([DOCKET_BIN] + self.args, env=self.env, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"docket exited with {self.proc.returncode} while starting:"
                                     f"\n{self.log_tail()}")
            return requests.get(self.base_url + "/health", timeout=2).status_code == 200

        wait_until(healthy, deadline, what=f"{self.name} /health on port {self.port}")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=STOP_DEADLINE):
        """Waits for the process to exit; kills it (and fails) if it does not in time."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.returncode = self.proc.returncode
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM")
        return self.returncode

    def stop(self, timeout=STOP_DEADLINE):
        """SIGTERM, wait; returns the exit status. Idempotent."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines=300):
        text = self.log_text().splitlines()
        head = [] if len(text) <= lines else [f"... ({len(text) - lines} earlier lines)"]
        return "\n".join(head + text[-lines:])

    # -- HTTP

    def url(self, path):
        return self.base_url + path

    def request(self, method, path, token=None, headers=None, timeout=HTTP_TIMEOUT, **kw):
        hdrs = dict(headers or {})
        if token is not None:
            hdrs.update(auth_headers(token))
        resp = requests.request(method, self.url(path), headers=hdrs, timeout=timeout, **kw)
        self.transcript.append((method, path, resp.status_code, resp.text))
        assert resp.headers.get("X-Request-Id"), \
            f"{method} {path} -> {resp.status_code} without X-Request-Id"
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- accounts

    def register(self, email=None, password=PASSWORD, name=None, **kw):
        """POST /auth/register; returns the response (the test asserts its status)."""
        body = {"email": email if email is not None else unique_email(), "password": password,
                "name": name if name is not None else "Test User"}
        return self.post("/api/v1/auth/register", json=body, **kw)

    def login(self, email, password=PASSWORD, user_agent=None, **kw):
        headers = kw.pop("headers", {}) or {}
        if user_agent is not None:
            headers["User-Agent"] = user_agent
        return self.post("/api/v1/auth/login", json={"email": email, "password": password},
                         headers=headers, **kw)

    def new_session(self, account, user_agent=None):
        resp = self.login(account.email, account.password, user_agent=user_agent)
        assert resp.status_code == 200, f"login failed: {resp.status_code} {resp.text}"
        body = resp.json()
        return Session(access=body["access_token"], refresh=body["refresh_token"], body=body)

    def new_user(self, email=None, password=PASSWORD, name=None, login=True, user_agent=None):
        """Registers (201 asserted) and, unless login=False, logs in once."""
        email = email or unique_email()
        name = name if name is not None else "Test User"
        resp = self.register(email=email, password=password, name=name)
        assert resp.status_code == 201, f"register failed: {resp.status_code} {resp.text}"
        user = resp.json()
        account = Account(id=user["id"], email=email, password=password, name=name, user=user)
        if login:
            account.session = self.new_session(account, user_agent=user_agent)
        return account

    def me(self, token, **kw):
        return self.get("/api/v1/users/me", token=token, **kw)

    def refresh(self, refresh_token, **kw):
        return self.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token}, **kw)


class SplitDocket(Docket):
    """Split mode: one `docket <service>` process per service plus `docket gateway` in front
    of them. Behaves like one Docket: requests go to the gateway, the log is every process's
    log, stop() stops them all (gateway first), signal() goes to the gateway."""

    def __init__(self, *, services, **kw):
        super().__init__(**kw)
        self.services = services  # name -> Docket (the service processes)

    def start(self, deadline=START_DEADLINE):
        for svc in self.services.values():
            svc.start(deadline)
        return super().start(deadline)

    def running(self):
        return super().running() and all(s.running() for s in self.services.values())

    def stop(self, timeout=STOP_DEADLINE):
        rc = super().stop(timeout)
        codes = [rc] + [s.stop(timeout) for s in self.services.values()]
        bad = [c for c in codes if c not in (0, None)]
        return bad[0] if bad else rc

    def log_text(self):
        parts = [super().log_text()] + [s.log_text() for s in self.services.values()]
        return "\n".join(parts)

    def log_tail(self, lines=300):
        own = Docket.log_text(self).splitlines()[-lines:]
        out = ["--- gateway ---\n" + "\n".join(own)]
        for name, svc in self.services.items():
            out.append(f"--- {name} ---\n{svc.log_tail(lines)}")
        return "\n".join(out)
