"""Hostile clients at the HTTP edge: slowloris, connection caps, early 413, NUL bytes and
invalid UTF-8 in the request line. One `docket all` on SQLite (the edge is the same code in
every mode)."""

import socket
import threading
import time

import pytest
import requests

import helpers
from helpers import assert_problem, wait_until


def raw(port, data, wait=5.0, source="127.0.0.1"):
    """Sends bytes, returns (seconds until the server closed or answered, the reply)."""
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(data)
    s.settimeout(wait)
    t0 = time.monotonic()
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except socket.timeout:
        pass
    finally:
        s.close()
    return time.monotonic() - t0, out


@pytest.fixture
def edge(docket_factory):
    return docket_factory("sqlite", extra_args=["--server.header_timeout=2s",
                                                "--server.max_connections_per_ip=40"])


def test_slowloris_from_one_client_does_not_take_the_server(edge):
    """60 connections from 127.0.0.1 trickle a header byte every 0.5 s: the per-address cap
    refuses those beyond 40, the header deadline closes the rest after 2 s, and a client on
    another address (127.0.0.2) is served throughout."""
    socks, stop = [], threading.Event()
    for _ in range(60):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", edge.port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            s.close()
    closed = []

    def trickle():
        t0 = time.monotonic()
        while not stop.is_set() and socks:
            for s in list(socks):
                try:
                    s.sendall(b"X")
                except OSError:
                    closed.append(time.monotonic() - t0)
                    socks.remove(s)
                    s.close()
            time.sleep(0.5)

    th = threading.Thread(target=trickle, daemon=True)
    th.start()
    try:
        for _ in range(5):
            t, reply = raw(edge.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                           source="127.0.0.2")
            assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
            assert t < 1.0, f"/health took {t:.2f} s for another client"
            time.sleep(0.3)
        wait_until(lambda: not socks, timeout=10, what="the trickling connections to be closed")
    finally:
        stop.set()
        th.join(5)
        for s in socks:
            s.close()
    assert len(closed) >= 40, closed
    assert max(closed) < 6.0, f"a trickling connection lived {max(closed):.1f} s (deadline 2 s)"


def test_garbage_without_a_line_end_is_closed_at_the_header_deadline(edge):
    t, reply = raw(edge.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20, wait=10)
    assert t < 5.0, f"held {t:.1f} s"


def test_an_oversized_declared_body_is_413_at_once(edge):
    t, reply = raw(edge.port, b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{",
                   wait=10)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply
    assert t < 1.0, f"the 413 took {t:.2f} s (the declared body was not awaited)"


def test_too_many_connections_get_503(docket_factory):
    d = docket_factory("sqlite", extra_args=["--server.max_connections=16",
                                             "--server.max_connections_per_ip=0",
                                             "--server.header_timeout=30s"])
    idle = []
    try:
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", d.port))
            idle.append(s)
        time.sleep(0.3)
        t, reply = raw(d.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b"Retry-After: 1" in reply and b"application/problem+json" in reply, reply
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: d.get("/health").status_code == 200, timeout=5, what="room again")


@pytest.mark.parametrize("path,status", [
    ("/api/v1/tasks/%00", 404),
    ("/api/v1/tasks/0190a1b2-0000-7000-8000-000000000000%00junk", 404),
    ("/api/v1/users/%ff%fe", 404),
    ("/api/v1/auth/sessions/%c0%af", 404),
    ("/api/v1/auth/sessions/%80", 404),
    ("/api/v1/auth/sessions/%ed%a0%80", 404),
    ("/api/v1/tasks?sort=created_at%00x", 400),
    ("/api/v1/tasks?status=todo%00x", 400),
    ("/api/v1/tasks?limit=5%00x", 400),
    ("/api/v1/notifications?unread=true%00x", 400),
    ("/api/v1/tasks?q=%ff", 400),
])
def test_nul_and_invalid_utf8_in_the_request_line(edge, path, status):
    acct = edge.new_user()
    method = "DELETE" if "/sessions/" in path else "GET"
    r = requests.request(method, edge.url(path), headers=helpers.auth_headers(acct.session.access),
                         timeout=10)
    assert_problem(r, status)
    if status == 400:
        assert r.json()["errors"][0]["field"] in ("sort", "status", "limit", "unread", "q")


def test_valid_utf8_and_escapes_still_work(edge):
    acct = edge.new_user()
    h = helpers.auth_headers(acct.session.access)
    r = requests.post(edge.url("/api/v1/tasks"), json={"title": "café 100% done"}, headers=h,
                      timeout=10)
    assert r.status_code == 201, r.text
    r = requests.get(edge.url("/api/v1/tasks?q=caf%C3%A9"), headers=h, timeout=10)
    assert r.status_code == 200 and r.json()["items"], r.text
