"""Fixtures for Docket's system tests.

Session: one throwaway PostgreSQL 15 (`pg_server`) and one Redis (`redis_server`), started on
first use and stopped at the end. Per test: a fresh `docket` process (`docket`, parametrised
over helpers.MODES), or any number of them through `start_docket(...)` / `docket_factory(...)`;
each is stopped with SIGTERM at teardown, where a non-zero exit status or a sanitizer report
fails the test. The log of every docket a failed test started is attached to its report.
"""

import functools
import os
import pathlib
import shutil
import tempfile

import pytest

import helpers
from helpers import MODE_BY_NAME, MODES, Docket, PostgresServer, RedisServer

DOCKETS = pytest.StashKey()


def pytest_report_header(config):
    return f"docket binary: {helpers.DOCKET_BIN}"


def pytest_sessionstart(session):
    if not os.access(helpers.DOCKET_BIN, os.X_OK):
        raise pytest.UsageError(f"docket binary not found at {helpers.DOCKET_BIN} "
                                "(build it, or set DOCKET_BIN)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for d in item.stash.get(DOCKETS, []):
            report.sections.append((f"{d.name} log ({d.log_path})", d.log_tail()))


# --------------------------------------------------------------------------- servers

@pytest.fixture(scope="session")
def server_log_dir():
    d = tempfile.mkdtemp(prefix="docket-systest-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    pg = PostgresServer()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="session")
def redis_server(server_log_dir):
    r = RedisServer(server_log_dir)
    yield r
    r.stop()


@pytest.fixture
def own_pg():
    """A PostgreSQL instance of the test's own, for tests that stop and restart it."""
    pg = PostgresServer()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of the test's own (e.g. for rate-limit counters nobody else touches)."""
    r = RedisServer(str(tmp_path))
    yield r
    r.stop()


# --------------------------------------------------------------------------- docket

@pytest.fixture
def docket_factory(request, tmp_path):
    """start(mode, extra_env=None, extra_args=None, fast_hash=True, jwt_secret=<random>,
    pg=None, redis=None, data_dir=None, migrate=True) -> running Docket.

    mode: a helpers.Mode or its name. jwt_secret=None leaves JWT_SECRET unset. For postgres,
    pg/redis default to the session servers; a fresh database is created and `docket migrate`
    run against it first (exit 0 asserted). For sqlite, data_dir defaults to a fresh directory
    passed as --storage.data_dir; data_dir=False passes none (the default, <cwd>/data).
    cwd: the process's working directory (default: a fresh one per docket).
    """
    started = []
    request.node.stash[DOCKETS] = started
    databases = []
    counter = [0]

    def start(mode, extra_env=None, extra_args=None, fast_hash=True, jwt_secret="random",
              pg=None, redis=None, data_dir=None, migrate=True, cwd=None, replicas=None):
        mode = MODE_BY_NAME[mode] if isinstance(mode, str) else mode
        counter[0] += 1
        n = counter[0]
        workdir = tmp_path / f"docket-{n}"
        workdir.mkdir()
        cwd = pathlib.Path(cwd) if cwd else workdir
        if jwt_secret == "random":
            jwt_secret = helpers.random_secret()
        env = helpers.base_env(jwt_secret=jwt_secret, fast_hash=fast_hash, extra=extra_env)
        port = helpers.free_port()
        args = ["all", f"--server.port={port}", "--server.host=127.0.0.1"]
        db_url = None
        if mode.storage == "postgres":
            shared_pg = pg is None
            pg = pg or request.getfixturevalue("pg_server")
            shared_redis = redis is None
            redis = redis or request.getfixturevalue("redis_server")
            db = pg.create_database()
            if shared_pg:
                databases.append((pg, db))
            db_url = pg.url(db)
            env["DATABASE_URL"] = db_url
            env["REDIS_URL"] = redis.fresh_url() if shared_redis else redis.url()
        else:
            if redis is not None:
                env["REDIS_URL"] = redis.url()
            if data_dir is False:           # no flag: the built-in default, ./data
                data_dir = cwd / "data"
            else:
                if data_dir is None:
                    data_dir = workdir / "data"
                    data_dir.mkdir()
                args.append(f"--storage.data_dir={data_dir}")
        args += list(extra_args or [])
        if mode.split:
            d = _split_docket(mode, args, env, cwd, workdir, port, db_url, jwt_secret, n,
                              replicas or {})
        else:
            d = Docket(mode=mode, args=args, env=env, cwd=str(cwd), port=port,
                       log_path=str(workdir / "docket.log"),
                       data_dir=str(data_dir) if data_dir else None, db_url=db_url,
                       jwt_secret=jwt_secret, name=f"docket-{n}")
        started.append(d)
        if mode.storage == "postgres" and migrate:
            r = helpers.run_cli(["migrate"], env=env, cwd=str(cwd), timeout=60)
            with open(d.log_path, "a") as log:
                log.write(f"--- docket migrate (exit {r.returncode})\n{r.stdout}{r.stderr}"
                          "--- end of migrate\n")
            assert r.returncode == 0, \
                f"docket migrate exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return d.start()

    yield start

    problems = []
    for d in started:
        if d.proc is None:
            continue
        try:
            rc = d.stop()
            if rc != 0:
                problems.append(f"{d.name} exited with status {rc} after SIGTERM")
        except AssertionError as exc:
            problems.append(str(exc))
        found = helpers.sanitizer_reports(d.log_text())
        if found:
            problems.append(f"{d.name} log has sanitizer reports: {found}")
    for pg, db in databases:
        try:
            pg.drop_database(db)
        except Exception:
            pass  # the server may be gone at session end; the cluster is thrown away anyway
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def _split_docket(mode, args, env, cwd, workdir, port, db_url, jwt_secret, n, replicas):
    """The processes of split mode: each service on its own port (replicas[name] processes of
    it, default 1: services "name", "name#2", ...), the gateway on `port` with the same public
    flags as `docket all` would get, and every replica's URL."""
    extra = [a for a in args[1:] if not a.startswith(("--server.port=", "--server.host="))]
    services = {}
    urls = {}
    for name in helpers.SPLIT_SERVICES:
        for r in range(1, replicas.get(name, 1) + 1):
            key = name if r == 1 else f"{name}#{r}"
            sport = helpers.free_port()
            urls.setdefault(name, []).append(f"http://127.0.0.1:{sport}")
            senv = dict(env)
            senv["DOCKET_SERVER_TRUST_FORWARDED_FOR"] = "true"
            senv["DOCKET_GATEWAY_USERS_URL"] = "http://127.0.0.1:0"  # replaced below
            services[key] = Docket(mode=mode, args=[name, f"--server.port={sport}",
                                                    "--server.host=127.0.0.1"] + extra,
                                   env=senv, cwd=str(cwd), port=sport,
                                   log_path=str(workdir / f"{key.replace('#', '-')}.log"),
                                   db_url=db_url, jwt_secret=jwt_secret,
                                   name=f"docket-{n}-{key.replace('#', '-')}")
    urls = {name: ",".join(u) for name, u in urls.items()}
    for svc in services.values():
        svc.env["DOCKET_GATEWAY_USERS_URL"] = urls["users"]
        svc.env["DOCKET_GATEWAY_TASKS_URL"] = urls["tasks"]  # users asks it before a deletion
    genv = dict(env)
    for name, url in urls.items():
        genv[f"DOCKET_GATEWAY_{name.upper()}_URL"] = url
    gargs = ["gateway"] + args[1:]
    return helpers.SplitDocket(services=services, mode=mode, args=gargs, env=genv, cwd=str(cwd),
                               port=port, log_path=str(workdir / "gateway.log"), db_url=db_url,
                               jwt_secret=jwt_secret, name=f"docket-{n}")


@pytest.fixture(params=MODES, ids=[m.id for m in MODES])
def mode(request):
    return request.param


@pytest.fixture
def start_docket(mode, docket_factory):
    """start_docket(extra_env=..., extra_args=..., ...) in this test's mode."""
    return functools.partial(docket_factory, mode)


@pytest.fixture
def docket(start_docket):
    return start_docket()
