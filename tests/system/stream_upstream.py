"""A scripted upstream for the gateway's streaming tests (test_split.py): a small HTTP/1.1
server on a free 127.0.0.1 port that stands in for a service behind `docket gateway`.

It answers /ready with 200 (the gateway's health probe) and every other path by the `mode`
query parameter:

  sse        text/event-stream, chunked: event 1, a pause of `gap` seconds, event 2, end
  ping       text/event-stream, chunked: a comment every 0.1 s until the connection breaks
  big        `size` bytes (deterministic, see body_bytes) with a Content-Length
  die        a Content-Length of `size`, `after` bytes, a 0.5 s pause, then the socket closes
  slowhead   the headers only after `gap` seconds (then a small JSON body)

and uploads (POST, PUT) by the same parameter:

  sink       reads the body (Content-Length or chunked) in 64 KiB pieces, sleeping `delay`
             seconds after each, and answers 200 with its length and SHA-256 (JSON)
  reject     answers 401 at once, without reading the body, and closes the connection the way
             an HTTP server should (RFC 9112 9.6): its side first, then discarding what still
             arrives for up to 2 s. Closed over unread bytes at once, the socket would be reset,
             and a reset that reaches the gateway before it has read the 401 takes the 401 with
             it (a TCP race no client can win: the test would be flaky, not stricter)
  stall      reads 64 KiB of the body, then nothing for `gap` seconds, then the rest (as sink)

What happened is recorded in `events` (name -> time.monotonic()) for the test to compare."""

import hashlib
import json
import socket
import socketserver
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler


def body_bytes(size):
    """`size` bytes that are not all alike (a SHA-256 chain), the same on every call."""
    out = bytearray()
    block = b"docket-stream-test"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _linger(self):
        """The lingering close of an answer given before the request's body was read."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 2
            self.connection.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    if not self.connection.recv(65536):
                        break
                except socket.timeout:
                    continue
        except OSError:
            pass

    def _record(self, name):
        self.server.owner.record(name)

    def _head(self, status, headers):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/ready":
            body = b'{"status":"ok"}'
            self._head(200, [("Content-Type", "application/json"),
                             ("Content-Length", str(len(body)))])
            self.wfile.write(body)
            return
        self.server.owner.requests.append((url.path, q, dict(self.headers)))
        self._record("got_request")
        mode = q.get("mode", "sse")
        gap = float(q.get("gap", "2.5"))
        size = int(q.get("size", str(4 << 20)))
        try:
            if mode == "sse":
                self._head(200, [("Content-Type", "text/event-stream"),
                                 ("Cache-Control", "no-store"),
                                 ("X-Upstream", "stream-test"),
                                 ("Transfer-Encoding", "chunked")])
                self._chunk(b"id: 1\nevent: first\ndata: {\"n\":1}\n\n")
                self._record("sent_first")
                time.sleep(gap)
                self._record("sending_second")
                self._chunk(b"id: 2\nevent: second\ndata: {\"n\":2}\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                self._record("ended")
            elif mode == "ping":
                self._head(200, [("Content-Type", "text/event-stream"),
                                 ("Transfer-Encoding", "chunked")])
                self._chunk(b"id: 1\nevent: first\ndata: {}\n\n")
                while True:
                    time.sleep(0.1)
                    self._chunk(b": ping\n\n")
            elif mode == "big":
                data = body_bytes(size)
                self._head(200, [("Content-Type", "application/octet-stream"),
                                 ("Content-Length", str(size))])
                for i in range(0, size, 65536):
                    self.wfile.write(data[i:i + 65536])
                self.wfile.flush()
                self._record("big_sent")
            elif mode == "die":
                after = int(q.get("after", "100000"))
                self._head(200, [("Content-Type", "application/octet-stream"),
                                 ("Content-Length", str(size))])
                self.wfile.write(body_bytes(after))
                self.wfile.flush()
                time.sleep(0.5)
                self._record("died")
                self.close_connection = True
                self.connection.shutdown(2)
            elif mode == "slowhead":
                time.sleep(gap)
                body = b"{}"
                self._head(200, [("Content-Type", "application/json"),
                                 ("Content-Length", str(len(body)))])
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._record("client_gone")
            self.close_connection = True


    def _read_body(self, piece):
        """Yields the request body in pieces of at most `piece` bytes."""
        length = self.headers.get("Content-Length")
        if length is not None:
            left = int(length)
            while left > 0:
                data = self.rfile.read(min(piece, left))
                if not data:
                    raise ConnectionResetError("body cut short")
                left -= len(data)
                yield data
            return
        while True:                                   # chunked
            line = self.rfile.readline()
            if not line:
                raise ConnectionResetError("body cut short")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass                              # trailers
                return
            left = size
            while left > 0:
                data = self.rfile.read(min(piece, left))
                if not data:
                    raise ConnectionResetError("body cut short")
                left -= len(data)
                yield data
            self.rfile.readline()

    def _upload(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        self.server.owner.requests.append((url.path, q, dict(self.headers)))
        self._record("got_upload")
        mode = q.get("mode", "sink")
        if mode == "reject":
            body = b'{"title":"no"}'
            self._head(401, [("Content-Type", "application/problem+json"),
                             ("Content-Length", str(len(body))), ("Connection", "close")])
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            self._record("rejected")
            self._linger()
            return
        delay = float(q.get("delay", "0"))
        h = hashlib.sha256()
        n = 0
        try:
            for data in self._read_body(65536):
                if n == 0:
                    self._record("first_body_bytes")
                    if mode == "stall":
                        self._record("stalling")
                        time.sleep(float(q.get("gap", "5")))
                h.update(data)
                n += len(data)
                if delay:
                    time.sleep(delay)
        except (ConnectionResetError, OSError, ValueError):
            self._record("upload_cut")
            self.close_connection = True
            return
        self._record("upload_done")
        body = json.dumps({"bytes": n, "sha256": h.hexdigest()}).encode()
        self._head(200, [("Content-Type", "application/json"),
                         ("Content-Length", str(len(body)))])
        self.wfile.write(body)

    do_PUT = _upload
    do_POST = _upload


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class StreamUpstream:
    """start() -> self; url; events; wait_for(name); stop()."""

    def __init__(self):
        self.events = {}
        self.requests = []
        self._cond = threading.Condition()
        self._srv = _Server(("127.0.0.1", 0), _Handler)
        self._srv.owner = self

    @property
    def url(self):
        return f"http://127.0.0.1:{self._srv.server_address[1]}"

    def record(self, name):
        with self._cond:
            self.events.setdefault(name, time.monotonic())
            self._cond.notify_all()

    def wait_for(self, name, timeout):
        """The time `name` happened; AssertionError when it did not within timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: name in self.events, timeout)
        assert ok, f"the upstream never recorded {name!r} (got {sorted(self.events)})"
        return self.events[name]

    def start(self):
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._srv.shutdown()
        self._srv.server_close()
