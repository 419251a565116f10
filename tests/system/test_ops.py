"""Operations: /health, /ready, /metrics, graceful shutdown, configuration (errors, --help,
file/env/flag precedence, embedded defaults), migrations, and a PostgreSQL outage."""

import concurrent.futures
import json
import os
import re
import signal
import stat
import subprocess
import time
import uuid

import pytest
import requests

import helpers
from helpers import SLOW_HASH, assert_problem, assert_unauthorized, wait_until

# --------------------------------------------------------------------------- health, ready

def test_health(docket):
    resp = docket.get("/health")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"
    assert resp.json() == {"status": "ok"}
    assert resp.headers.get("X-Request-Id")


def test_ready(docket):
    resp = docket.get("/ready")
    assert resp.status_code == 200, resp.text
    if docket.mode.split:
        # the gateway depends on its cache only; upstream state is a metric
        assert resp.json() == {"status": "ok", "checks": {"cache": "ok"}}
        m = docket.get("/metrics").text
        for name in helpers.SPLIT_SERVICES:
            assert f'docket_gateway_upstream_up{{service="{name}"' in m, m
        for svc in docket.services.values():
            r = requests.get(svc.url("/ready"), timeout=5)
            assert r.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}
    else:
        assert resp.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}


# --------------------------------------------------------------------------- metrics

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {label: value}, value)] for every sample line."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable exposition line: {line!r}"
        samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def test_metrics(docket):
    a = docket.new_user()
    b = docket.new_user()
    assert docket.get(f"/api/v1/users/{b.id}", token=a.access).status_code == 200
    stray = "nope-" + uuid.uuid4().hex
    assert docket.get(f"/api/v1/{stray}").status_code == 404

    resp = docket.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4"), \
        resp.headers["Content-Type"]
    text = resp.text
    samples = parse_metrics(text)

    reqs = [labels for name, labels, _ in samples if name == "http_requests_total"]
    assert reqs, "no http_requests_total samples"
    assert "http_requests_total{" in text
    for labels in reqs:
        assert {"service", "method", "route", "status"} <= set(labels), labels
    assert any(l["route"] == "/api/v1/users/{id}" and l["method"] == "GET"
               and l["status"] == "200" for l in reqs), reqs
    assert any(l["route"] == "/api/v1/auth/register" and l["method"] == "POST"
               and l["status"] == "201" for l in reqs), reqs
    # Routes are patterns: raw ids and unmatched paths never become label values.
    assert b.id not in text
    assert stray not in text

    buckets = [labels for name, labels, _ in samples
               if name == "http_request_duration_seconds_bucket"]
    assert buckets, "no http_request_duration_seconds_bucket samples"
    for labels in buckets:
        assert {"service", "method", "route", "le"} <= set(labels), labels
        assert "status" not in labels, labels
    assert any(l["route"] == "/api/v1/users/{id}" for l in buckets)
    names = {name for name, _, _ in samples}
    assert {"http_request_duration_seconds_sum", "http_request_duration_seconds_count"} <= names

    rss = [v for name, _, v in samples if name == "process_resident_memory_bytes"]
    assert rss and rss[0] > 0, rss
    pool_samples = samples
    if docket.mode.split:
        # the gateway has no database: the pool gauges are the services'
        assert not [n for n, _, _ in samples if n == "docket_db_pool_connections"]
        pool_samples = parse_metrics(requests.get(docket.services["users"].url("/metrics"),
                                                  timeout=5).text)
    pool = [labels for name, labels, _ in pool_samples if name == "docket_db_pool_connections"]
    assert pool and all("state" in l for l in pool), pool

    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert check.returncode == 0, f"promtool check metrics: {check.returncode}\n{check.stdout}"


# --------------------------------------------------------------------------- shutdown

def test_sigterm_finishes_in_flight_request(start_docket):
    d = start_docket(fast_hash=False, extra_env=SLOW_HASH)
    acct = d.new_user(login=False)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        future = pool.submit(d.login, acct.email, acct.password, timeout=60)
        # Nothing outside the server can see the request arrive: give it a moment to be read,
        # then make sure it is still being worked on (slow hashing) when the signal comes.
        time.sleep(0.3)
        assert not future.done(), \
            f"login finished in {time.monotonic() - t0:.2f}s: too fast to test draining"
        d.signal(signal.SIGTERM)

        def not_ready():
            try:
                return requests.get(d.url("/ready"), timeout=2).status_code == 503
            except requests.ConnectionError:
                return True        # listener closed: also fine
        wait_until(not_ready, 5, what="/ready to stop answering 200 after SIGTERM")
        resp = future.result()
    assert resp.status_code == 200, resp.text
    assert resp.json()["access_token"]
    assert d.wait() == 0


# --------------------------------------------------------------------------- configuration

def cli(args, tmp_path, extra_env=None, timeout=15):
    env = helpers.base_env(jwt_secret=helpers.random_secret(), extra=extra_env)
    return helpers.run_cli(args, env=env, cwd=str(tmp_path), timeout=timeout)


def serve_args(tmp_path, *extra):
    return ["all", f"--server.port={helpers.free_port()}", "--server.host=127.0.0.1",
            f"--storage.data_dir={tmp_path}"] + list(extra)


@pytest.mark.parametrize("extra_args,extra_env,names", [
    (["--server.port=abc"], {}, "server.port"),
    (["--server.port=70000"], {}, "server.port"),
    ([], {"DOCKET_AUTH_MAX_SESSIONS": "0"}, "auth.max_sessions"),
    ([], {"DOCKET_AUTH_JWT_EXPIRY": "soon"}, "auth.jwt_expiry"),
    (["--no-such-flag"], {}, "no-such-flag"),
    (["--auth.no_such_key=1"], {}, "auth.no_such_key"),
], ids=["port-not-number", "port-out-of-range", "max-sessions-zero", "bad-duration",
        "unknown-flag", "unknown-key"])
def test_config_errors_exit_2(tmp_path, extra_args, extra_env, names):
    r = cli(serve_args(tmp_path, *extra_args), tmp_path, extra_env=extra_env)
    assert r.returncode == 2, f"exit {r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    assert names in r.stderr, r.stderr
    assert not helpers.sanitizer_reports(r.stdout + r.stderr), r.stderr


def test_unknown_command_exit_2(tmp_path):
    r = cli(["frobnicate"], tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip()


def test_help_lists_config(tmp_path):
    r = cli(["--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    for key in ("auth.jwt_expiry", "auth.max_sessions", "server.port",
                "rate_limiting.window_ms", "migrate"):
        assert key in r.stdout, f"--help does not mention {key}"
    assert not helpers.sanitizer_reports(r.stdout + r.stderr), r.stderr


@pytest.mark.parametrize("extra_env,names", [
    ({"DATABASE_URL": "mysql://x"}, "database.url"),
    ({"DATABASE_URL": "postgres://u@[bad"}, "database.url"),
    ({"REDIS_URL": "http://x"}, "redis.url"),
    ({"JWT_SECRET": "short"}, "auth.jwt_secret"),
], ids=["db-scheme", "db-url", "redis-url", "short-secret"])
def test_bad_dependency_settings_exit_2(tmp_path, extra_env, names):
    args = ["migrate"] if "DATABASE_URL" in extra_env else serve_args(tmp_path)
    r = cli(args, tmp_path, extra_env=extra_env)
    assert r.returncode == 2, f"exit {r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    assert names in r.stderr, r.stderr


def test_unreachable_database_is_named(tmp_path):
    port = helpers.free_port()
    r = cli(["migrate"], tmp_path,
            extra_env={"DATABASE_URL": f"postgres://docket:pw@127.0.0.1:{port}/docket"})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert f"127.0.0.1" in r.stderr and str(port) in r.stderr, r.stderr
    assert "refused" in r.stderr.lower(), r.stderr
    assert "pw" not in r.stderr.replace("password", ""), "the password leaked into the message"


@pytest.mark.parametrize("argv", [["all", "--help"], ["help", "all"], ["migrate", "--help"],
                                  ["help", "migrate"], ["gateway", "-h"], ["help", "tasks"]])
def test_each_command_has_its_own_help(tmp_path, argv):
    r = cli(argv, tmp_path)
    assert r.returncode == 0, (r.returncode, r.stderr)
    command = argv[1] if argv[0] == "help" else argv[0]
    assert r.stdout.startswith(f"Usage: docket {command}"), r.stdout[:200]
    full = cli(["help"], tmp_path).stdout
    assert len(r.stdout) < len(full), "a command's help is as long as the global one"
    if command == "migrate":
        assert "database.url" in r.stdout and "server.port" not in r.stdout, r.stdout
        assert "gateway.cors_origins" not in r.stdout
    if command == "gateway":
        assert "gateway.auth_url" in r.stdout and "database.url" not in r.stdout, r.stdout


def test_help_for_an_unknown_command_exits_2(tmp_path):
    r = cli(["help", "frobnicate"], tmp_path)
    assert r.returncode == 2 and "frobnicate" in r.stderr, (r.returncode, r.stderr)


def test_a_taken_port_is_an_error_naming_it(docket, tmp_path):
    r = cli(["all", f"--server.port={docket.port}", "--server.host=127.0.0.1",
             f"--storage.data_dir={tmp_path}"], tmp_path)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert f"port {docket.port}" in r.stderr and "already in use" in r.stderr, r.stderr
    assert "--server.port" in r.stderr and "DOCKET_SERVER_PORT" in r.stderr, r.stderr
    assert docket.get("/health").status_code == 200  # the first one still serves alone


def test_reuse_port_is_opt_in(tmp_path, docket_factory):
    first = docket_factory("sqlite", extra_args=["--server.reuse_port=true"])
    env = helpers.base_env(jwt_secret=helpers.random_secret())
    second = subprocess.Popen(
        [helpers.DOCKET_BIN, "all", f"--server.port={first.port}", "--server.host=127.0.0.1",
         f"--storage.data_dir={tmp_path}", "--server.reuse_port=true"],
        env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        line = second.stdout.readline()
        while line and "listening" not in line:
            line = second.stdout.readline()
        assert "listening" in line, second.stderr.read()
        assert first.get("/health").status_code == 200
    finally:
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err


def test_openapi_is_served_as_yaml_and_json(docket):
    import yaml
    with open(os.path.join(helpers.REPO, "api", "openapi.yaml"), "rb") as f:
        source = f.read()
    y = docket.get("/openapi.yaml")
    assert y.status_code == 200 and y.headers["Content-Type"].startswith("application/yaml")
    assert y.content == source
    j = docket.get("/openapi.json")
    assert j.status_code == 200 and j.headers["Content-Type"] == "application/json"
    assert j.json() == yaml.safe_load(source)


def test_one_access_log_line_per_request(docket_factory):
    d = docket_factory("sqlite")
    d.get("/health", headers={"X-Request-Id": "access-log-check"})
    def log_lines(dk):
        out = []
        for text in dk.log_text().splitlines():
            try:
                out.append(json.loads(text))
            except ValueError:
                pass
        return out

    def logged():
        for line in log_lines(d):
            if line.get("request_id") == "access-log-check" and line.get("route") == "/health":
                return line
        return None
    line = wait_until(logged, timeout=5)
    assert line["level"] == "info" and line["status"] == 200 and line["method"] == "GET"
    assert "duration_ms" in line
    quiet = docket_factory("sqlite", extra_args=["--log.access=false"])
    quiet.get("/health", headers={"X-Request-Id": "access-log-quiet"})
    quiet.get("/nope", headers={"X-Request-Id": "access-log-quiet"})
    time.sleep(0.3)
    assert not [l for l in log_lines(quiet) if l.get("request_id") == "access-log-quiet"]


def logins_evicting_first(d, logins):
    """Logs one account in `logins` times; returns the sessions, first one first."""
    acct = d.new_user()
    return [acct.session] + [d.new_session(acct) for _ in range(logins - 1)]


def alive(d, session):
    resp = d.me(session.access)
    if resp.status_code == 401:
        assert_unauthorized(resp)
        return False
    assert resp.status_code == 200, resp.text
    return True


def test_config_file_takes_effect(docket_factory, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("auth:\n  max_sessions: 2\n")
    d = docket_factory("sqlite", extra_args=["--config", str(cfg)])
    sessions = logins_evicting_first(d, 3)
    assert [alive(d, s) for s in sessions] == [False, True, True]


def test_env_overrides_config_file(docket_factory, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("auth:\n  max_sessions: 2\n")
    d = docket_factory("sqlite", extra_args=["--config", str(cfg)],
                       extra_env={"DOCKET_AUTH_MAX_SESSIONS": "3"})
    sessions = logins_evicting_first(d, 4)
    assert [alive(d, s) for s in sessions] == [False, True, True, True]


def test_flag_overrides_env(docket_factory):
    d = docket_factory("sqlite", extra_args=["--auth.max_sessions=2"],
                       extra_env={"DOCKET_AUTH_MAX_SESSIONS": "4"})
    sessions = logins_evicting_first(d, 3)
    assert [alive(d, s) for s in sessions] == [False, True, True]


def test_embedded_defaults_keep_jwt_secret(docket_factory, tmp_path):
    """`make run`: nothing configured -> SQLite and a generated JWT secret in ./data, and the
    secret survives a restart (tokens issued before still work)."""
    app = tmp_path / "app"
    app.mkdir()
    data = app / "data"
    first = docket_factory("sqlite", jwt_secret=None, data_dir=False, cwd=app)
    assert (data / "docket.db").is_file()
    secret_file = data / "jwt_secret"
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, oct(secret_file.stat().st_mode)
    secret = secret_file.read_bytes()
    assert len(secret.strip()) >= 32, "a generated secret of at least 256 bits"
    acct = first.new_user()
    assert first.stop() == 0

    second = docket_factory("sqlite", jwt_secret=None, data_dir=False, cwd=app)
    assert secret_file.read_bytes() == secret
    resp = second.me(acct.access)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == acct.id
    assert second.refresh(acct.refresh).status_code == 200
    assert second.login(acct.email, acct.password).status_code == 200


def test_other_secret_invalidates_tokens(docket_factory, tmp_path):
    """Tokens are bound to JWT_SECRET: the same database with another secret refuses them."""
    data = tmp_path / "shared-data"
    data.mkdir()
    first = docket_factory("sqlite", data_dir=data)
    acct = first.new_user()
    assert first.stop() == 0
    second = docket_factory("sqlite", data_dir=data)
    assert second.jwt_secret != first.jwt_secret
    assert_unauthorized(second.me(acct.access))
    assert second.login(acct.email, acct.password).status_code == 200


# --------------------------------------------------------------------------- PostgreSQL

def test_migrate_is_idempotent(docket_factory):
    d = docket_factory("postgres")                      # migrated once already
    r = helpers.run_cli(["migrate"], env=d.env, cwd=d.cwd, timeout=60)
    assert r.returncode == 0, f"second migrate: {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert d.new_user().id


def test_postgres_outage_fails_fast_and_recovers(docket_factory, own_pg):
    d = docket_factory("postgres", pg=own_pg)
    acct = d.new_user()
    assert d.get("/ready").status_code == 200

    own_pg.stop("fast")
    t0 = time.monotonic()
    def ready_503():
        r = d.get("/ready", timeout=3)
        return (r,) if r.status_code == 503 else None
    [resp] = wait_until(ready_503, 3, what="/ready to report 503")
    elapsed = time.monotonic() - t0
    assert elapsed <= 3.0, f"/ready took {elapsed:.2f}s to notice the database was gone"
    body = assert_problem(resp, 503)
    assert "database" in json.dumps(body), body

    t0 = time.monotonic()
    me = d.me(acct.access, timeout=5)
    elapsed = time.monotonic() - t0
    assert_problem(me, 503)
    assert elapsed < 3.0, f"/users/me took {elapsed:.2f}s with the database down"
    assert d.get("/health").status_code == 200

    own_pg.start()

    def recovered():
        return d.get("/ready", timeout=3).status_code == 200 and \
            d.me(acct.access, timeout=3).status_code == 200
    wait_until(recovered, 10, interval=0.2, what="recovery after PostgreSQL came back")
    assert d.get("/ready").json()["checks"] == {"database": "ok", "cache": "ok"}
    assert d.new_user().id                              # writes work again
