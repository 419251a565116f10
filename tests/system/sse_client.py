"""A Server-Sent Events client for the notification tests: one GET over http.client, parsed
line by line as the HTML standard describes (fields `event`, `data`, `id`, `retry`; lines
starting with ':' are comments; an empty line dispatches the event).

    s = SseStream(docket.base_url, "/api/v1/notifications/stream", token=acct.access)
    s.status, s.headers                   # the response head
    item = s.next(timeout=5)              # an Event or a Comment, in the order received
    s.close()

Every read has a deadline: nothing arriving in time is an AssertionError, never a hang. After
such a timeout the connection is unusable (Python marks a timed-out socket file broken): open a
new stream. Tests that must show something did *not* arrive read up to the next heartbeat
comment instead of waiting for a timeout.
"""

import dataclasses
import http.client
import socket
import time
import urllib.parse


@dataclasses.dataclass
class Event:
    type: str            # the `event` field ("message" when absent)
    data: str            # `data` lines joined with "\n"
    id: str = None       # the `id` field of this event's block, None when it had none


@dataclasses.dataclass
class Comment:
    text: str            # the comment without the leading ':' and one optional space


class SseStream:
    def __init__(self, base_url, path, token=None, headers=None, timeout=10):
        u = urllib.parse.urlsplit(base_url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        hdrs = {"Accept": "text/event-stream"}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        self.conn.request("GET", path, headers=hdrs)
        # http.client drops conn.sock when the response says Connection: close; the response
        # keeps reading from it, so keep it here for timeouts and for closing
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.retry = None             # the last `retry` value seen (milliseconds)
        self.items = []               # everything received, in order
        self._pending = []            # parsed, not yet returned by next()
        self._buf = b""
        self._block = {"type": "", "data": [], "id": None}
        self._eof = False

    def body(self):
        """The whole body of a response that is not a stream (e.g. a 401 problem)."""
        return self.resp.read()

    def close(self):
        """Drops the connection at once (the server sees the client gone)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for thing in (self.resp, self.conn, self.sock):
            try:
                thing.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading

    def next(self, timeout=10):
        """The next Event or Comment; EOFError when the server ended the stream;
        AssertionError when nothing arrives within timeout seconds."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            if self._eof:
                raise EOFError("the server ended the event stream")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no server-sent event within {timeout}s; "
                                     f"received so far: {self.items!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.resp.read1(65536)
            except (socket.timeout, TimeoutError):
                raise AssertionError(f"no server-sent event within {timeout}s; "
                                     f"received so far: {self.items!r}") from None
            except http.client.IncompleteRead:
                chunk = b""
            if not chunk:
                self._eof = True
                self._feed(b"", final=True)
                continue
            self._feed(chunk)
        item = self._pending.pop(0)
        return item

    def next_event(self, timeout=10):
        """The next Event, skipping comments."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.next(max(0.01, deadline - time.monotonic()))
            if isinstance(item, Event):
                return item

    def until_heartbeat(self, timeout=10, text="heartbeat"):
        """Every Event received before the next `: heartbeat` comment (other comments are
        skipped). A heartbeat is written after whatever the server had queued before it, so
        an empty list shows that nothing was pending for this stream."""
        deadline = time.monotonic() + timeout
        events = []
        while True:
            item = self.next(max(0.01, deadline - time.monotonic()))
            if isinstance(item, Comment):
                if item.text == text:
                    return events
                continue
            events.append(item)

    # -- parsing

    def _feed(self, chunk, final=False):
        self._buf += chunk
        while True:
            # a line ends at CRLF, LF or CR; a CR at the very end may be half a CRLF
            cut = None
            for i, b in enumerate(self._buf):
                if b == 0x0A:
                    cut = (i, i + 1)
                    break
                if b == 0x0D:
                    if i + 1 < len(self._buf):
                        cut = (i, i + 2 if self._buf[i + 1] == 0x0A else i + 1)
                        break
                    if final:
                        cut = (i, i + 1)
                    break
            if cut is None:
                return
            line = self._buf[:cut[0]].decode("utf-8", "replace")
            self._buf = self._buf[cut[1]:]
            self._line(line)

    def _line(self, line):
        if line == "":
            blk = self._block
            if blk["data"]:
                ev = Event(type=blk["type"] or "message", data="\n".join(blk["data"]),
                           id=blk["id"])
                self._pending.append(ev)
                self.items.append(ev)
            self._block = {"type": "", "data": [], "id": None}
            return
        if line.startswith(":"):
            c = Comment(text=line[2:] if line.startswith(": ") else line[1:])
            self._pending.append(c)
            self.items.append(c)
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._block["type"] = value
        elif name == "data":
            self._block["data"].append(value)
        elif name == "id":
            if "\0" not in value:
                self._block["id"] = value
        elif name == "retry":
            if value.isdigit():
                self.retry = int(value)
                self.items.append(("retry", int(value)))
