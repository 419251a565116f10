"""TLS to the backing services, with a throwaway CA made here by the openssl command: split mode
against a PostgreSQL that requires `sslmode=verify-full` (the CA given by `sslrootcert` in the
URL) and a Redis that only speaks TLS (`rediss://`, the CA trusted through
`redis.tls_ca_file`, or through `SSL_CERT_FILE`), across every process: sessions and counters
in Redis, events between services over Redis Streams, connections to PostgreSQL encrypted. And
the refusals: a CA that did not sign the server certificate fails `docket migrate` and keeps a
service not ready."""

import os
import shutil
import subprocess
import urllib.parse

import pytest

import helpers
from helpers import PASSWORD, wait_until

pytestmark = pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("redis-server"),
                                reason="needs openssl and redis-server")


def _openssl(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """ca.pem signs server.pem (DNS:localhost); other.pem is a CA nobody should trust."""
    d = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(["req", "-x509"] + key + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                                       "-subj", "/CN=docket-test-ca"], d)
    _openssl(["req", "-x509"] + key + ["-keyout", "other.key", "-out", "other.pem", "-days", "2",
                                       "-subj", "/CN=other-ca"], d)
    _openssl(["req"] + key + ["-keyout", "server.key", "-out", "server.csr",
                              "-subj", "/CN=localhost"], d)
    (d / "ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext"], d)
    os.chmod(d, 0o755)
    for f in d.iterdir():
        os.chmod(f, 0o644)
    return d


class TlsPostgres(helpers.PostgresServer):
    """PostgreSQL with ssl=on; URLs ask for verify-full against `ca`."""

    def __init__(self, certs, ca):
        super().__init__()
        self.ca = ca
        for name in ("server.pem", "server.key"):
            dst = os.path.join(self.data, name)
            shutil.copy(certs / name, dst)
            os.chmod(dst, 0o600)
            if os.geteuid() == 0:
                shutil.chown(dst, "postgres", "postgres")
        self.start("-c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key")

    def url(self, db="postgres"):
        return (f"postgres://postgres@localhost:{self.port}/{db}"
                f"?sslmode=verify-full&sslrootcert={self.ca}")


class TlsRedis:
    """A Redis listening with TLS only."""

    def __init__(self, certs, log_dir):
        self.port = helpers.free_port()
        self.certs = certs
        self.log = os.path.join(log_dir, f"redis-tls-{self.port}.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", "0",
                 "--tls-port", str(self.port), "--tls-cert-file", str(certs / "server.pem"),
                 "--tls-key-file", str(certs / "server.key"),
                 "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no",
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: self.cli("PING").stdout.strip() == "PONG", 10,
                   what=f"TLS redis on port {self.port}")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "--tls", "--cacert", str(self.certs / "ca.pem"),
                               "-h", "localhost", "-p", str(self.port)] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=10)

    def url(self, db=1):
        return f"rediss://localhost:{self.port}/{db}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def tls_servers(certs, tmp_path_factory):
    pg = TlsPostgres(certs, certs / "ca.pem")
    redis = TlsRedis(certs, str(tmp_path_factory.mktemp("redis-tls")))
    try:
        yield pg, redis
    finally:
        redis.stop()
        pg.destroy()


def test_split_mode_over_tls_everywhere(docket_factory, tls_servers, certs):
    pg, redis = tls_servers
    d = docket_factory("split", pg=pg, redis=redis,
                       extra_env={"REDIS_TLS_CA_FILE": certs / "ca.pem"})
    for svc in [d] + list(d.services.values()):
        wait_until(lambda: svc.get("/ready").status_code == 200, 10,
                   what=f"{svc.name} ready over TLS")
    a = d.new_user()
    b = d.new_user()
    task = d.post("/api/v1/tasks", token=b.access,
                  json={"title": "over TLS", "assignee_id": a.id})
    assert task.status_code == 201, task.text
    # logout revokes the session in Redis; the gateway (another process) sees it there
    assert d.post("/api/v1/auth/logout", token=a.access).status_code == 204
    assert d.get("/api/v1/users/me", token=a.access).status_code == 401
    # user.deleted travels over Redis Streams from the users service to the tasks service
    c = d.new_user()
    t2 = d.post("/api/v1/tasks", token=b.access, json={"title": "for c", "assignee_id": c.id})
    assert t2.status_code == 201, t2.text
    assert d.delete("/api/v1/users/me", token=c.access).status_code == 204
    wait_until(lambda: d.get(f"/api/v1/tasks/{t2.json()['id']}", token=b.access)
               .json().get("assignee_id") is None, 10, what="user.deleted over TLS Redis")
    # every database connection of the docket processes is encrypted
    db = urllib.parse.urlsplit(d.db_url).path.lstrip("/")
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) "
                        "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                        "WHERE a.datname = %s", (db,))
            encrypted, plain = cur.fetchone()
    finally:
        conn.close()
    assert encrypted > 0 and plain == 0, (encrypted, plain)


def test_untrusted_certificates_are_refused(docket_factory, tls_servers, certs, tmp_path):
    pg, redis = tls_servers
    db = pg.create_database()
    try:
        env = helpers.base_env(jwt_secret=helpers.random_secret())
        env["DATABASE_URL"] = (f"postgres://postgres@localhost:{pg.port}/{db}"
                               f"?sslmode=verify-full&sslrootcert={certs / 'other.pem'}")
        r = helpers.run_cli(["migrate"], env=env, cwd=str(tmp_path))
        assert r.returncode != 0, r.stdout
        # the name must match too: the certificate says localhost, not 127.0.0.1
        env["DATABASE_URL"] = (f"postgres://postgres@127.0.0.1:{pg.port}/{db}"
                               f"?sslmode=verify-full&sslrootcert={certs / 'ca.pem'}")
        assert helpers.run_cli(["migrate"], env=env, cwd=str(tmp_path)).returncode != 0
    finally:
        pg.drop_database(db)
    # Redis: trusted through SSL_CERT_FILE the service is ready; with another CA it is not
    ok = docket_factory("sqlite", redis=redis, extra_env={"SSL_CERT_FILE": certs / "ca.pem"})
    wait_until(lambda: ok.get("/ready").status_code == 200, 10, what="ready via SSL_CERT_FILE")
    ok.new_user()
    bad = docket_factory("sqlite", redis=redis,
                         extra_env={"REDIS_TLS_CA_FILE": certs / "other.pem"})
    r = bad.get("/ready")
    assert r.status_code == 503, r.text
    assert bad.post("/api/v1/auth/login",
                    json={"email": "x@example.com", "password": PASSWORD}).status_code == 503
