"""A webhook receiver for the notification tests: a real HTTP server on 127.0.0.1 that records
every request it gets (method, path, headers, raw body, arrival time) and answers each with the
next status of a script, then with a default status.

    with WebhookSink(statuses=[500, 500], default=200) as sink:
        url = sink.url("/hook")           # give it to docket
        hits = sink.wait_for(3, 10)       # the first three requests, or AssertionError

Nothing is mocked: docket's delivery worker talks to it over a socket like to any receiver.
"""

import dataclasses
import http.server
import threading
import time


@dataclasses.dataclass
class Hit:
    """One request the sink received, and the status it answered."""
    method: str
    path: str
    headers: dict      # header name in lower case -> value (the last one when repeated)
    body: bytes
    at: float          # time.monotonic() when the request was complete
    status: int


class WebhookSink:
    def __init__(self, statuses=(), default=200):
        self.script = list(statuses)
        self.default = default
        self.hits = []
        self._cond = threading.Condition()
        self._server = None
        self._thread = None

    # -- lifecycle

    def start(self):
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = sink._next_status()
                hit = Hit(method=self.command, path=self.path,
                          headers={k.lower(): v for k, v in self.headers.items()},
                          body=body, at=time.monotonic(), status=status)
                reply = b'{"ok":true}' if 200 <= status < 300 else b'{"ok":false}'
                if status in (204, 304):
                    reply = b""
                self.send_response(status)
                if reply:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                self.wfile.flush()
                with sink._cond:
                    sink.hits.append(hit)
                    sink._cond.notify_all()

            def _read_chunked(self):
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- use

    @property
    def port(self):
        return self._server.server_address[1]

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def set_script(self, statuses, default=None):
        with self._cond:
            self.script = list(statuses)
            if default is not None:
                self.default = default

    def _next_status(self):
        with self._cond:
            return self.script.pop(0) if self.script else self.default

    def received(self):
        with self._cond:
            return list(self.hits)

    def wait_for(self, n, timeout):
        """The first n requests once at least n have arrived; AssertionError after timeout
        seconds, naming how many did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.hits) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhook sink: {len(self.hits)} request(s) within "
                                         f"{timeout}s, expected {n}: {self.hits!r}")
                self._cond.wait(left)
            return list(self.hits[:n])
