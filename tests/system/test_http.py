"""HTTP conventions every route shares: problem+json errors, 404/405, request bodies
(415/400/422/413), X-Request-Id and traceparent."""

import json
import os
import re
import socket
import uuid

import requests

from helpers import PASSWORD, assert_problem, check_each, unique_email, wait_until

REGISTER = "/api/v1/auth/register"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def register_body(**over):
    body = {"email": unique_email(), "password": PASSWORD, "name": "Body Test"}
    body.update(over)
    return body


# --------------------------------------------------------------------------- routing

def test_unknown_path_is_404_problem(docket):
    check_each([("GET", "/api/v1/nope"), ("GET", "/nope"), ("GET", "/api/v1/users/me/extra/x"),
                ("GET", "/api/v2/users/me"), ("POST", "/api/v1/does-not-exist"),
                ("DELETE", "/api/v1/auth")],
               lambda case: assert_problem(docket.request(case[0], case[1], json={}), 404))


def test_wrong_method_is_405_with_allow(docket):
    def check(case):
        method, path, allowed = case
        resp = docket.request(method, path, json={})
        assert_problem(resp, 405)
        allow = {m.strip().upper() for m in resp.headers.get("Allow", "").split(",")
                 if m.strip()}
        assert allowed <= allow, f"Allow: {resp.headers.get('Allow')!r}, expected {allowed}"
        assert method not in allow, allow
    check_each([("GET", "/api/v1/auth/login", {"POST"}),
                ("DELETE", "/api/v1/auth/register", {"POST"}),
                ("PUT", "/api/v1/users/me", {"GET", "PATCH", "DELETE"}),
                ("POST", "/api/v1/auth/sessions", {"GET"}),
                ("POST", "/health", {"GET"})], check)


# --------------------------------------------------------------------------- bodies

def test_json_body_requires_json_content_type(docket):
    body = json.dumps(register_body())
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        resp = docket.post(REGISTER, data=body, headers={"Content-Type": ctype})
        assert_problem(resp, 415)
    # no Content-Type at all
    resp = docket.post(REGISTER, data=body.encode())
    assert "Content-Type" not in resp.request.headers
    assert_problem(resp, 415)


def test_json_content_type_parameters_accepted(docket):
    def check(ctype):
        resp = docket.post(REGISTER, data=json.dumps(register_body()).encode(),
                           headers={"Content-Type": ctype})
        assert resp.status_code == 201, resp.text
    check_each(["application/json; charset=utf-8", "application/json;charset=UTF-8",
                "Application/JSON"], check)


def test_malformed_json_is_400(docket):
    check_each([b"{", b"{\"email\": }", b"not json", b"{\"a\":1} trailing", b"",
                b"\xff\xfe{}", b"{\"email\": \"\xc3\x28@x.io\"}", b"{\"a\": 01}",
                b"{\"a\": \"unterminated}", b"[" * 10000],
               lambda raw: assert_problem(
                   docket.post(REGISTER, data=raw, headers={"Content-Type": "application/json"}),
                   400))


def test_top_level_not_object_is_422_body(docket):
    check_each([b"[]", b"\"text\"", b"1", b"null", b"true", b"[{\"email\":\"a@b.io\"}]"],
               lambda raw: assert_problem(
                   docket.post(REGISTER, data=raw, headers={"Content-Type": "application/json"}),
                   422, fields={"body"}))


def test_wrong_field_type_is_422_naming_field(docket):
    check_each([("email", 5), ("password", ["x" * 10]), ("name", {"first": "a"}),
                ("name", None), ("email", True), ("password", 12345678)],
               lambda case: assert_problem(
                   docket.post(REGISTER, json=register_body(**{case[0]: case[1]})),
                   422, fields={case[0]}))


def test_unknown_fields_are_ignored(docket):
    body = register_body(role="admin", extra={"nested": [1, 2, 3]}, id="forced-id")
    resp = docket.post(REGISTER, json=body)
    assert resp.status_code == 201, resp.text
    user = resp.json()
    assert user["role"] == "user"
    assert user["id"] != "forced-id"


def test_body_over_limit_is_413(start_docket):
    d = start_docket(extra_env={"DOCKET_SERVER_BODY_LIMIT": "4KiB"})
    # Under the limit (unknown padding field is ignored): accepted.
    small = json.dumps(register_body(padding="p" * 3500))
    assert len(small) < 4096
    assert d.post(REGISTER, data=small, headers={"Content-Type": "application/json"}
                  ).status_code == 201
    # Over it, with Content-Length.
    big = json.dumps(register_body(padding="p" * 5000))
    assert len(big) > 4096
    assert_problem(d.post(REGISTER, data=big, headers={"Content-Type": "application/json"}),
                   413)

    # Over it, chunked (no Content-Length): the cap still holds.
    def chunks():
        yield b"{\"padding\":\""
        for _ in range(8):
            yield b"q" * 1024
        yield b"\"}"
    resp = d.post(REGISTER, data=chunks(), headers={"Content-Type": "application/json"})
    assert "Content-Length" not in resp.request.headers
    assert_problem(resp, 413)
    # The server is still fine afterwards.
    assert d.get("/health").status_code == 200


def test_request_headers_up_to_12_kib_are_read_larger_is_431(docket):
    # A connection's memory (16 KiB) holds the request head: 12 KiB of headers (nginx allows
    # 8 KiB per line by default) are served; a head that cannot fit is refused with 431 by
    # libmicrohttpd, whose body is not problem+json, and the connection is closed.
    big = {"X-Padding-%d" % i: "v" * 1000 for i in range(12)}
    resp = docket.get("/health", headers=big)
    assert resp.status_code == 200
    resp = requests.get(docket.url("/health"), headers={"X-Too-Big": "v" * (20 * 1024)},
                        timeout=10)
    assert resp.status_code == 431
    assert docket.get("/health").status_code == 200


# --------------------------------------------------------------------------- request ids

def test_request_id_generated_when_absent(docket):
    ids = set()
    for path in ("/health", "/api/v1/nope", "/api/v1/users/me"):
        resp = docket.get(path)
        rid = resp.headers.get("X-Request-Id")
        assert rid and REQUEST_ID.match(rid), (path, rid)
        ids.add(rid)
    assert len(ids) == 3, "request ids must differ between requests"


def test_valid_request_id_echoed(docket):
    def check(rid):
        resp = docket.get("/health", headers={"X-Request-Id": rid})
        assert resp.headers.get("X-Request-Id") == rid
        # echoed on errors too, and the problem body carries it
        resp = docket.get("/api/v1/users/me", headers={"X-Request-Id": rid})
        assert resp.headers.get("X-Request-Id") == rid
        assert assert_problem(resp, 401)["request_id"] == rid
    check_each(["abc", "A.b_c:d-1", "x" * 128, str(uuid.uuid4()), "7"], check)


def test_invalid_request_id_replaced(docket):
    def check(rid):
        resp = docket.get("/api/v1/nope", headers={"X-Request-Id": rid.encode()})
        got = resp.headers.get("X-Request-Id")
        assert got and got != rid and REQUEST_ID.match(got), got
        assert assert_problem(resp, 404)["request_id"] == got
    check_each(["x" * 129, "bad id!", "a/b", "ü-unicode", "semi;colon"], check)


# --------------------------------------------------------------------------- trace context

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_traceparent_accepted_valid_or_not(docket):
    """A traceparent header, valid or malformed, never breaks a request."""
    acct = docket.new_user()

    def check(value):
        resp = docket.get("/api/v1/users/me", token=acct.access, headers={"traceparent": value})
        assert resp.status_code == 200, resp.text
        resp = docket.post(REGISTER, json=register_body(), headers={"traceparent": value})
        assert resp.status_code == 201, resp.text
    check_each([TRACEPARENT, "garbage", "00-zz-yy-01", "ff-" + TRACEPARENT[3:],
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-" + TRACE_ID + "-0000000000000000-01"], check)


def test_traceparent_trace_id_propagated_to_logs(start_docket):
    """The incoming trace id is continued: the log lines of that request (JSON lines with
    `request_id` and `trace_id`; request lines are logged at debug level) carry it."""
    docket = start_docket(extra_env={"DOCKET_LOG_LEVEL": "debug"})
    rid = "trace-test-" + uuid.uuid4().hex
    acct = docket.new_user()
    resp = docket.get("/api/v1/users/me", token=acct.access,
                      headers={"traceparent": TRACEPARENT, "X-Request-Id": rid})
    assert resp.status_code == 200

    def request_lines():
        out = []
        for line in docket.log_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("request_id") == rid:
                out.append(rec)
        return out

    lines = wait_until(request_lines, 3, what=f"a log line with request_id {rid}")
    assert all(rec.get("trace_id") == TRACE_ID for rec in lines), lines


def _connections_per_worker(pid):
    """How many client sockets each of a process's epoll sets watches (Linux /proc): one set per
    libmicrohttpd worker, plus a few of other parts that watch one or two descriptors."""
    counts = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                counts.append(sum(1 for line in f if line.startswith("tfd:")))
        except OSError:
            continue
    return counts


def test_connections_opened_together_are_spread_over_the_workers(docket_factory):
    # A client that opens its connections together (a proxy's pool, wrk) must not find most of
    # them on one or two worker threads, where each request waits behind its neighbours'
    # database round trips while other workers sleep: the acceptor deals them out.
    d = docket_factory("sqlite", extra_args=["--server.threads=4"])
    socks = []
    try:
        for _ in range(16):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", d.port))
            socks.append(s)
        req = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\n\r\n".encode()
        for s in socks:
            s.setblocking(True)
            s.settimeout(5)
            s.sendall(req)
        for s in socks:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        # a worker's set holds its connections and its wake-up descriptor: 16 over 4 workers is
        # 4 each when dealt out; left to libmicrohttpd, one worker took all 16 of them
        counts = _connections_per_worker(d.proc.pid)
        assert max(counts) - 1 <= 6, counts
    finally:
        for s in socks:
            s.close()
