"""Split mode only: the gateway in front of separately running services (issue: split mode).

Each test starts the split deployment through docket_factory("split", ...) and then reaches
behind it: kills a service process, points the gateway at a server that never answers, or
starts a second gateway on the same Redis."""

import hashlib
import http.server
import signal
import socket
import socketserver
import threading
import time

import pytest
import requests

import helpers
from helpers import Docket, assert_problem, forge_jwt, wait_until
from stream_upstream import StreamUpstream
from stream_upstream import body_bytes as stream_upstream_body


def second_gateway(d, tmp_path, extra_env=None, name="gateway-2"):
    """Another `docket gateway` process with the same upstreams, secret and Redis as d."""
    port = helpers.free_port()
    env = dict(d.env)
    env.update(extra_env or {})
    g = Docket(mode=d.mode, args=["gateway", f"--server.port={port}", "--server.host=127.0.0.1"],
               env=env, cwd=d.cwd, port=port, log_path=str(tmp_path / f"{name}.log"),
               jwt_secret=d.jwt_secret, name=name)
    return g.start()


@pytest.fixture
def extra_gateways():
    started = []
    yield started
    for g in started:
        rc = g.stop()
        assert rc == 0, f"{g.name} exited with {rc}"
        assert not helpers.sanitizer_reports(g.log_text()), g.log_tail()


def test_gateway_forwards_and_services_answer_alone(docket_factory):
    d = docket_factory("split")
    acct = d.new_user()
    r = d.me(acct.access)
    assert r.status_code == 200 and r.json()["id"] == acct.id
    # the users service itself answers the same request (it verifies the token itself)
    users = d.services["users"]
    direct = requests.get(users.url("/api/v1/users/me"),
                          headers=helpers.auth_headers(acct.access), timeout=5)
    assert direct.status_code == 200 and direct.json()["id"] == acct.id
    # every process has its own operations endpoints
    for proc in [d] + list(d.services.values()):
        assert requests.get(proc.url("/health"), timeout=5).status_code == 200
        assert requests.get(proc.url("/ready"), timeout=5).status_code == 200
        m = requests.get(proc.url("/metrics"), timeout=5)
        assert m.status_code == 200 and "process_resident_memory_bytes" in m.text


def test_request_id_and_trace_reach_the_upstream(docket_factory):
    d = docket_factory("split", extra_env={"DOCKET_LOG_LEVEL": "debug"})
    acct = d.new_user()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = d.me(acct.access, headers={"X-Request-Id": "split-req-1",
                                   "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "split-req-1"
    users_log = d.services["users"].log_text()
    wait_until(lambda: "split-req-1" in d.services["users"].log_text(), 5,
               what="the request id in the users service's log")
    line = [l for l in d.services["users"].log_text().splitlines() if "split-req-1" in l][0]
    assert trace in line, users_log


def test_killed_service_fails_fast_then_recovers(docket_factory):
    d = docket_factory("split")
    acct = d.new_user()
    users = d.services["users"]
    users.proc.kill()
    users.proc.wait()
    t0 = time.monotonic()
    r = d.me(acct.access)
    assert time.monotonic() - t0 < 1.0
    assert r.status_code in (502, 503), r.text
    assert_problem(r, r.status_code)
    # after the health probe noticed, the answer is 503 with Retry-After
    wait_until(lambda: d.me(acct.access).status_code == 503, 5, what="503 once unhealthy")
    r = d.me(acct.access)
    assert int(r.headers["Retry-After"]) >= 1
    users.start()
    wait_until(lambda: d.me(acct.access).status_code == 200, 10, what="served again")


class Slow(http.server.BaseHTTPRequestHandler):
    """An upstream that is ready but takes 3 s for anything else."""
    def do_GET(self):
        if self.path == "/ready":
            body = b'{"status":"ok"}'
        else:
            time.sleep(3)
            body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def slow_upstream():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Slow)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_upstream_timeout_is_504(docket_factory, tmp_path, extra_gateways):
    d = docket_factory("split")
    acct = d.new_user()
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Slow)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        g = second_gateway(d, tmp_path, {
            "DOCKET_GATEWAY_USERS_URL": f"http://127.0.0.1:{srv.server_address[1]}",
            "DOCKET_GATEWAY_TIMEOUT": "500ms"})
        extra_gateways.append(g)
        t0 = time.monotonic()
        r = g.me(acct.access)
        took = time.monotonic() - t0
        assert r.status_code == 504, r.text
        assert_problem(r, 504)
        assert took < 2.0
    finally:
        srv.shutdown()
        srv.server_close()


def test_two_gateways_share_one_rate_limit(docket_factory, tmp_path, extra_gateways,
                                           request):
    redis = request.getfixturevalue("own_redis")
    d = docket_factory("split", redis=redis, extra_env={"DOCKET_GATEWAY_RATE_LIMIT_RPS": "6"})
    g = second_gateway(d, tmp_path)
    extra_gateways.append(g)
    # 12 requests within one second, alternating gateways: 6 admitted in all
    codes = []
    for _ in range(3):
        deadline = time.time()
        if deadline % 1 > 0.5:          # start at the beginning of a second
            time.sleep(1 - deadline % 1 + 0.01)
        codes = []
        t0 = time.time()
        for i in range(12):
            codes.append((d if i % 2 == 0 else g).get("/api/v1/users/me").status_code)
        if int(time.time()) == int(t0):
            break
    limited = [c for c in codes if c == 429]
    assert len(limited) == 6, codes
    assert set(codes) == {401, 429}, codes   # admitted ones fail auth: no token sent


def test_forged_identity_headers_are_ignored(docket_factory):
    d = docket_factory("split")
    a = d.new_user()
    b = d.new_user()
    r = d.get("/api/v1/users/me", headers={"X-User-Id": b.id, "X-User-Role": "admin"})
    assert r.status_code == 401
    r = d.get("/api/v1/users/me", token=a.access, headers={"X-User-Id": b.id})
    assert r.status_code == 200 and r.json()["id"] == a.id
    # straight at the service, too
    users = d.services["users"]
    r = requests.get(users.url("/api/v1/users/me"), headers={"X-User-Id": b.id}, timeout=5)
    assert r.status_code == 401


def test_internal_api_needs_a_service_token(docket_factory):
    d = docket_factory("split")
    a = d.new_user()
    users = d.services["users"]
    # not routed by the gateway at all
    assert d.get(f"/internal/v1/users/{a.id}", token=a.access).status_code == 404
    # a user's token at the service: 404 (no existence leak)
    r = requests.get(users.url(f"/internal/v1/users/{a.id}"),
                     headers=helpers.auth_headers(a.access), timeout=5)
    assert r.status_code == 404
    now = int(time.time())
    svc = forge_jwt({"iss": "docket", "sub": "service:test", "sid": "service",
                     "role": "service", "iat": now, "exp": now + 60}, d.jwt_secret)
    r = requests.get(users.url(f"/internal/v1/users/{a.id}"),
                     headers=helpers.auth_headers(svc), timeout=5)
    assert r.status_code == 200 and r.json()["email"] == a.email
    # a service token is not a user's token
    assert d.me(svc).status_code == 401


def test_logout_at_one_gateway_kills_the_token_at_the_other(docket_factory, tmp_path,
                                                            extra_gateways):
    d = docket_factory("split")
    g = second_gateway(d, tmp_path)
    extra_gateways.append(g)
    a = d.new_user()
    assert g.me(a.access).status_code == 200
    assert d.post("/api/v1/auth/logout", token=a.access).status_code == 204
    t0 = time.monotonic()
    wait_until(lambda: g.me(a.access).status_code == 401, 1.0, what="401 at the other gateway")
    assert time.monotonic() - t0 <= 1.0


def test_sigterm_drains_the_gateway(docket_factory):
    d = docket_factory("split")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


def test_sigterm_with_a_forwarded_call_still_running(docket_factory, tmp_path, extra_gateways):
    """Past the drain timeout the gateway fails the call still in flight and exits 0."""
    d = docket_factory("split")
    acct = d.new_user()
    srv = slow_upstream()
    try:
        g = second_gateway(d, tmp_path, {
            "DOCKET_GATEWAY_USERS_URL": f"http://127.0.0.1:{srv.server_address[1]}",
            "DOCKET_SERVER_DRAIN_TIMEOUT": "300ms"})
        got = {}

        def call():
            try:
                got["status"] = g.me(acct.access, timeout=10).status_code
            except requests.RequestException as exc:
                got["error"] = exc

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)                       # the call is waiting on the slow upstream
        g.signal(signal.SIGTERM)
        assert g.wait(10) == 0
        t.join(10)
        assert got.get("status") in (502, 503, 504) or "error" in got, got
        assert not helpers.sanitizer_reports(g.log_text()), g.log_tail()
    finally:
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------- streamed responses
# The gateway streams response bodies: a scripted upstream (stream_upstream.py) stands in for
# the notifications service behind a second gateway.

@pytest.fixture
def stream_upstream():
    up = StreamUpstream().start()
    yield up
    up.stop()


def notifications_gateway(d, tmp_path, extra_gateways, upstream, **env):
    """A second gateway whose notifications upstream is the scripted one."""
    extra = {"DOCKET_GATEWAY_NOTIFICATIONS_URL": upstream.url}
    extra.update(env)
    g = second_gateway(d, tmp_path, extra, name="gateway-stream")
    extra_gateways.append(g)
    return g


def open_stream(g, path, token, timeout=10):
    return requests.get(g.url(path), headers=helpers.auth_headers(token), stream=True,
                        timeout=timeout)


def test_sse_arrives_incrementally_and_outlives_the_gateway_timeout(
        docket_factory, tmp_path, extra_gateways, stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = notifications_gateway(d, tmp_path, extra_gateways, stream_upstream,
                              DOCKET_GATEWAY_TIMEOUT="1s")
    t0 = time.monotonic()
    got_first = None
    body = b""
    with open_stream(g, "/api/v1/notifications/stream?mode=sse&gap=2.5", acct.access) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Upstream"] == "stream-test"     # upstream headers pass through
        assert r.headers["X-Request-Id"]
        for piece in r.iter_content(chunk_size=None):
            body += piece
            if got_first is None and b"event: first" in body:
                got_first = time.monotonic()
    took = time.monotonic() - t0
    # the first event reached the client before the upstream even sent the second
    assert got_first is not None, body
    assert got_first < stream_upstream.wait_for("sending_second", 1), \
        "the first event was held back until the second"
    # the whole stream, cleanly ended, though it lasted longer than gateway.timeout (1 s)
    assert body == (b'id: 1\nevent: first\ndata: {"n":1}\n\n'
                    b'id: 2\nevent: second\ndata: {"n":2}\n\n')
    assert took >= 2.4


def test_ordinary_route_keeps_its_total_timeout(docket_factory, tmp_path, extra_gateways,
                                                stream_upstream):
    """The same slow body on a route without DK_ROUTE_STREAM is cut at gateway.timeout."""
    d = docket_factory("split")
    acct = d.new_user()
    g = notifications_gateway(d, tmp_path, extra_gateways, stream_upstream,
                              DOCKET_GATEWAY_TIMEOUT="1s")
    t0 = time.monotonic()
    body = b""
    with open_stream(g, "/api/v1/notifications?mode=sse&gap=2.5", acct.access) as r:
        assert r.status_code == 200        # the headers had arrived: the body is cut
        with pytest.raises(requests.exceptions.RequestException):
            for piece in r.iter_content(chunk_size=None):
                body += piece
    took = time.monotonic() - t0
    assert b"event: first" in body and b"event: second" not in body, body
    assert 0.8 <= took < 2.4, took
    assert g.get("/health").status_code == 200


def test_stream_route_still_waits_only_so_long_for_headers(docket_factory, tmp_path,
                                                           extra_gateways, stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = notifications_gateway(d, tmp_path, extra_gateways, stream_upstream,
                              DOCKET_GATEWAY_TIMEOUT="1s")
    t0 = time.monotonic()
    r = g.get("/api/v1/notifications/stream?mode=slowhead&gap=3", token=acct.access)
    took = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert_problem(r, 504)
    assert 0.9 <= took < 2.0, took


def test_large_body_reaches_a_slow_reader_intact(docket_factory, tmp_path, extra_gateways,
                                                 stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = notifications_gateway(d, tmp_path, extra_gateways, stream_upstream)
    size = 6 << 20
    h = hashlib.sha256()
    n = 0
    with open_stream(g, f"/api/v1/notifications?mode=big&size={size}", acct.access,
                     timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        for piece in r.iter_content(chunk_size=16384):
            h.update(piece)
            n += len(piece)
            time.sleep(0.001)            # a slow reader: the gateway holds the upstream back
    assert n == size
    assert h.hexdigest() == hashlib.sha256(stream_upstream_body(size)).hexdigest()
    # small answers still come whole, in one piece with their length (not streamed)
    r = g.get("/api/v1/notifications?mode=big&size=1000", token=acct.access)
    assert r.status_code == 200 and r.content == stream_upstream_body(1000)
    assert r.headers["Content-Length"] == "1000" and "Transfer-Encoding" not in r.headers
    r = d.me(acct.access)
    assert r.status_code == 200 and "Transfer-Encoding" not in r.headers


def test_upstream_dying_mid_body_cuts_the_response(docket_factory, tmp_path, extra_gateways,
                                                   stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = notifications_gateway(d, tmp_path, extra_gateways, stream_upstream)
    t0 = time.monotonic()
    got = 0
    with open_stream(g, "/api/v1/notifications?mode=die&size=1000000&after=100000",
                     acct.access) as r:
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.RequestException):
            for piece in r.iter_content(chunk_size=None):
                got += len(piece)
    assert got == 100000, got              # what was sent, and not a byte presented as more
    assert time.monotonic() - t0 < 5
    # the gateway is fine
    assert g.get("/health").status_code == 200
    r = g.get("/api/v1/notifications?mode=big&size=5000", token=acct.access)
    assert r.status_code == 200 and r.content == stream_upstream_body(5000)


def test_client_leaving_a_stream_aborts_the_upstream(docket_factory, tmp_path, extra_gateways,
                                                    stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = notifications_gateway(d, tmp_path, extra_gateways, stream_upstream)
    with open_stream(g, "/api/v1/notifications/stream?mode=ping", acct.access) as r:
        assert r.status_code == 200
        for piece in r.iter_content(chunk_size=None):
            if b"event: first" in piece:
                break
    left = time.monotonic()
    gone = stream_upstream.wait_for("client_gone", 5)
    assert gone - left < 5
    assert g.get("/health").status_code == 200


def test_slow_client_holds_the_upstream_back(docket_factory, tmp_path, extra_gateways,
                                             stream_upstream):
    """Flow control: while the client reads nothing, the gateway stops reading the upstream
    (it buffers at most GW_STREAM_BOUND, the kernel's socket buffers hold the rest), so a
    64 MiB body cannot all have left the upstream; once the client reads, all of it arrives."""
    d = docket_factory("split")
    acct = d.new_user()
    g = notifications_gateway(d, tmp_path, extra_gateways, stream_upstream)
    size = 64 << 20
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", g.port))
    sock.sendall((f"GET /api/v1/notifications?mode=big&size={size} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nAuthorization: Bearer {acct.access}\r\n"
                  "Connection: close\r\n\r\n").encode())
    stream_upstream.wait_for("got_request", 5)
    time.sleep(2)
    assert "big_sent" not in stream_upstream.events, \
        "the upstream sent the whole body to a client that read nothing"
    data = bytearray()
    while True:
        piece = sock.recv(1 << 20)
        if not piece:
            break
        data += piece
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    # undo the chunked framing
    out = bytearray()
    pos = 0
    while True:
        eol = body.index(b"\r\n", pos)
        n = int(body[pos:eol], 16)
        if n == 0:
            break
        out += body[eol + 2:eol + 2 + n]
        pos = eol + 2 + n + 2
    assert len(out) == size
    assert hashlib.sha256(out).digest() == hashlib.sha256(stream_upstream_body(size)).digest()


# --------------------------------------------------------------------------- streamed uploads
# Request bodies larger than 64 KiB, or chunked, go up to the upstream as they arrive: the
# scripted upstream stands in for the notifications service (PUT /preferences, POST /{id}/read).

UPLOAD_PATH = "/api/v1/notifications/preferences"


def upload_gateway(d, tmp_path, extra_gateways, upstream, limit="64MiB", **env):
    return notifications_gateway(d, tmp_path, extra_gateways, upstream,
                                 DOCKET_SERVER_BODY_LIMIT=limit, **env)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_large_upload_streams_intact_in_bounded_memory(docket_factory, tmp_path,
                                                       extra_gateways, stream_upstream):
    """48 MiB (limit 64 MiB) to an upstream that reads slowly: it arrives whole and in order,
    with its Content-Length, while the gateway's memory grows by far less than the body."""
    d = docket_factory("split")
    acct = d.new_user()
    g = upload_gateway(d, tmp_path, extra_gateways, stream_upstream)
    size = 48 << 20
    data = stream_upstream_body(size)
    # warm up (connections, allocator) before the baseline
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink"), data=data[:1 << 20],
                     headers=helpers.auth_headers(acct.access), timeout=30)
    assert r.status_code == 200 and r.json()["bytes"] == 1 << 20, r.text
    base = rss_kib(g.proc.pid)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(g.proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = requests.put(g.url(UPLOAD_PATH + "?mode=sink&delay=0.002"), data=data,
                         headers=helpers.auth_headers(acct.access), timeout=120)
    finally:
        done.set()
        sampler.join()
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": size, "sha256": hashlib.sha256(data).hexdigest()}
    _, _, headers = stream_upstream.requests[-1]
    assert headers.get("Content-Length") == str(size)
    grew_mib = (peak[0] - base) / 1024
    assert grew_mib < 12, f"the gateway grew by {grew_mib:.1f} MiB for a 48 MiB upload"


def test_chunked_upload_reaches_the_upstream_incrementally(docket_factory, tmp_path,
                                                           extra_gateways, stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = upload_gateway(d, tmp_path, extra_gateways, stream_upstream, limit="8MiB")
    pieces = [stream_upstream_body(3 << 20)[i:i + (256 << 10)] for i in range(0, 3 << 20,
                                                                               256 << 10)]
    sent = {}

    def body():
        for i, p in enumerate(pieces):
            yield p
            if i < len(pieces) - 1:
                time.sleep(0.25)
        sent["end"] = time.monotonic()

    r = requests.post(g.url("/api/v1/notifications/n1/read?mode=sink"), data=body(),
                      headers=helpers.auth_headers(acct.access), timeout=30)
    assert r.status_code == 200, r.text
    whole = b"".join(pieces)
    assert r.json() == {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    # the upstream had the first bytes long before the client had sent the last
    first = stream_upstream.wait_for("first_body_bytes", 1)
    assert first < sent["end"] - 2.0, (first, sent["end"])
    # sent on chunked, as it came: no Content-Length was known
    _, _, headers = stream_upstream.requests[-1]
    assert "Content-Length" not in headers
    assert headers.get("Transfer-Encoding") == "chunked"


def test_upload_over_the_limit_is_413(docket_factory, tmp_path, extra_gateways,
                                      stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = upload_gateway(d, tmp_path, extra_gateways, stream_upstream, limit="1MiB")
    # chunked: found out on the way, after the upstream call began; it is abandoned
    data = stream_upstream_body(3 << 20)
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink"),
                     data=(data[i:i + 65536] for i in range(0, len(data), 65536)),
                     headers=helpers.auth_headers(acct.access), timeout=30)
    assert_problem(r, 413)
    stream_upstream.wait_for("upload_cut", 5)
    assert "upload_done" not in stream_upstream.events
    # a declared length over the limit: 413 before anything goes up
    calls = len(stream_upstream.requests)
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink"), data=data,
                     headers={**helpers.auth_headers(acct.access),
                              "Expect": "100-continue"}, timeout=30)
    assert_problem(r, 413)
    assert len(stream_upstream.requests) == calls
    # and the gateway goes on
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink"), data=data[:500000],
                     headers=helpers.auth_headers(acct.access), timeout=30)
    assert r.status_code == 200 and r.json()["bytes"] == 500000


def test_upstream_answering_before_the_body_ends(docket_factory, tmp_path, extra_gateways,
                                                 stream_upstream):
    """An upstream that refuses at once (401 without reading): the client gets that answer."""
    d = docket_factory("split")
    acct = d.new_user()
    g = upload_gateway(d, tmp_path, extra_gateways, stream_upstream)
    data = stream_upstream_body(4 << 20)
    r = requests.put(g.url(UPLOAD_PATH + "?mode=reject"), data=data,
                     headers=helpers.auth_headers(acct.access), timeout=30)
    assert r.status_code == 401, r.text
    assert r.json() == {"title": "no"}
    # unauthenticated uploads never reach the upstream
    calls = len(stream_upstream.requests)
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink"), data=data[:200000], timeout=30)
    assert r.status_code == 401
    assert len(stream_upstream.requests) == calls
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink"), data=data[:200000],
                     headers=helpers.auth_headers(acct.access), timeout=30)
    assert r.status_code == 200 and r.json()["bytes"] == 200000


def test_client_leaving_mid_upload_cancels_the_upstream_call(docket_factory, tmp_path,
                                                             extra_gateways, stream_upstream):
    d = docket_factory("split")
    acct = d.new_user()
    g = upload_gateway(d, tmp_path, extra_gateways, stream_upstream)
    sock = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    sock.sendall((f"PUT {UPLOAD_PATH}?mode=sink HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: Bearer {acct.access}\r\n"
                  f"Content-Length: {8 << 20}\r\n\r\n").encode())
    # less than the gateway buffers (256 KiB), so the client is not being held back when it
    # leaves: libmicrohttpd 0.9.75 may miss the end of a connection held back meanwhile until
    # its connection timeout (docs/design/http-core.md)
    sock.sendall(stream_upstream_body(200000))
    stream_upstream.wait_for("first_body_bytes", 5)
    sock.close()
    # the upstream sees its request cut (never a clean end), and the gateway goes on
    stream_upstream.wait_for("upload_cut", 5)
    assert "upload_done" not in stream_upstream.events
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink"), data=stream_upstream_body(300000),
                     headers=helpers.auth_headers(acct.access), timeout=30)
    assert r.status_code == 200 and r.json()["bytes"] == 300000


def test_upstream_stalling_during_an_upload_is_504(docket_factory, tmp_path, extra_gateways,
                                                   stream_upstream):
    """gateway.timeout bounds the upstream's inactivity during an upload (not its length)."""
    d = docket_factory("split")
    acct = d.new_user()
    g = upload_gateway(d, tmp_path, extra_gateways, stream_upstream, DOCKET_GATEWAY_TIMEOUT="1s")
    t0 = time.monotonic()
    r = requests.put(g.url(UPLOAD_PATH + "?mode=stall&gap=8"),
                     data=stream_upstream_body(40 << 20),
                     headers=helpers.auth_headers(acct.access), timeout=30)
    took = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert_problem(r, 504)
    assert took < 6, took
    # an upload that takes longer than gateway.timeout but never stalls is fine
    r = requests.put(g.url(UPLOAD_PATH + "?mode=sink&delay=0.01"),
                     data=stream_upstream_body(12 << 20),
                     headers=helpers.auth_headers(acct.access), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == 12 << 20


@pytest.mark.parametrize("process", ["gateway", "auth", "users", "tasks", "notifications"])
def test_split_process_refuses_to_start_without_redis(tmp_path, process):
    """Split processes share revocations, rate limits and events only through Redis: without
    REDIS_URL each one stops at once with exit code 2 (a configuration error), naming it."""
    env = helpers.base_env(jwt_secret=helpers.random_secret())
    env["DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/none"
    r = helpers.run_cli([process, f"--server.port={helpers.free_port()}"], env=env,
                        cwd=str(tmp_path), timeout=20)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "REDIS_URL" in r.stderr and "redis.url" in r.stderr, r.stderr
