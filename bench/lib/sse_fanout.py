#!/usr/bin/python3
"""sse_fanout: many open notification streams on one client thread, then notifications at a
steady rate; measures what holding the streams costs the server and how long a notification
takes from the request that causes it to its frame on every stream of the recipient.

The client is this one Python thread on `selectors` (epoll): non-blocking sockets for every
stream (HTTP/1.1, chunked bodies decoded here) and a few keep-alive connections for the
POSTs that cause the notifications. Nothing else runs in the process while it measures.

    sse_fanout.py --base http://127.0.0.1:PORT --users 2000 --streams 10000 \
        --idle 30 --rate 200 --load 30 --pids "PID..." --hold-pids "PID..." \
        [--pg-port P --pg-db docket] [--redis-port P] [--db-pids "PID..."] --out result.json

Phases: seed users (register + login, fast hashes expected), open the streams, idle (no
request at all: server CPU, DB transactions and statements, Redis commands), load (POST
/api/v1/tasks by user i+1 assigning user i at --rate per second, the title carrying a marker),
drain (wait up to 10 s for the last frames). Latency = frame arrival - POST send, per stream.
"""

import argparse
import concurrent.futures
import errno
import http.client
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import time
import urllib.parse

PASSWORD = "bench-password-0123"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[sse_fanout {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ seeding (threads, blocking)

def call(host, port, method, path, body=None, token=None):
    c = http.client.HTTPConnection(host, port, timeout=30)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


def seed(host, port, n, run_id):
    def one(i):
        email = f"fan-{run_id}-{i:05d}@example.com"
        u = call(host, port, "POST", "/api/v1/auth/register",
                 {"email": email, "password": PASSWORD, "name": f"Fan {i}"})
        lg = call(host, port, "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
        return u["id"], lg["access_token"]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, range(n)))


# ------------------------------------------------------------------ the event loop

class Stream:
    __slots__ = ("sock", "user", "buf", "head_done", "status", "chunked", "chunk_left",
                 "body", "frames", "beats", "closed", "connected", "req")

    def __init__(self, sock, user, req):
        self.sock, self.user, self.req = sock, user, req
        self.buf = b""
        self.head_done = False
        self.status = 0
        self.chunked = False
        self.chunk_left = 0         # bytes left in the current chunk; -1: reading a size line
        self.body = b""             # decoded body not yet split into events
        self.frames = 0
        self.beats = 0
        self.closed = False
        self.connected = False


class Poster:
    __slots__ = ("sock", "buf", "busy", "sent_at", "out")

    def __init__(self, sock):
        self.sock, self.buf, self.busy, self.sent_at, self.out = sock, b"", False, 0.0, b""


MARK = re.compile(rb"fanout-(\d+)-x")


class Client:
    def __init__(self, host, port, stream_ports=None):
        self.host, self.port = host, port
        self.stream_ports = stream_ports or [port]
        self.sel = selectors.DefaultSelector()
        self.streams = []
        self.sent = {}              # marker -> (send time, recipient index)
        self.arrivals = []          # latency seconds per frame
        self.late_marks = 0
        self.errors = []
        self.status_counts = {}
        self.post_lat = []          # POST round trips, seconds

    # -- streams
    def open_stream(self, user, token):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((self.host, self.stream_ports[len(self.streams) % len(self.stream_ports)]))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        req = (f"GET /api/v1/notifications/stream HTTP/1.1\r\nHost: {self.host}\r\n"
               f"Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
        st = Stream(s, user, req)
        self.streams.append(st)
        self.sel.register(s, selectors.EVENT_WRITE, st)
        return st

    def on_stream(self, st, mask, now):
        if mask & selectors.EVENT_WRITE and not st.connected:
            st.connected = True
            try:
                st.sock.send(st.req)
            except OSError as e:
                self.stream_closed(st, f"send: {e}")
                return
            self.sel.modify(st.sock, selectors.EVENT_READ, st)
            return
        try:
            data = st.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.stream_closed(st, f"recv: {e}")
            return
        if not data:
            self.stream_closed(st, "eof")
            return
        st.buf += data
        if not st.head_done:
            i = st.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = st.buf[:i].decode("latin-1")
            st.buf = st.buf[i + 4:]
            st.head_done = True
            st.status = int(head.split(" ", 2)[1])
            self.status_counts[st.status] = self.status_counts.get(st.status, 0) + 1
            st.chunked = "transfer-encoding: chunked" in head.lower()
            st.chunk_left = -1
            if st.status != 200:
                self.stream_closed(st, f"status {st.status}")
                return
        self.decode(st)
        self.events(st, now)

    def decode(self, st):
        if not st.chunked:
            st.body += st.buf
            st.buf = b""
            return
        while st.buf:
            if st.chunk_left == -2:             # the CRLF after a chunk
                if len(st.buf) < 2:
                    return
                st.buf = st.buf[2:]
                st.chunk_left = -1
                continue
            if st.chunk_left == -1:
                i = st.buf.find(b"\r\n")
                if i < 0:
                    return
                st.chunk_left = int(st.buf[:i].split(b";")[0], 16)
                st.buf = st.buf[i + 2:]
                if st.chunk_left == 0:          # the last chunk: the stream ends
                    st.buf = b""
                    return
            take = min(st.chunk_left, len(st.buf))
            st.body += st.buf[:take]
            st.buf = st.buf[take:]
            st.chunk_left -= take
            if st.chunk_left == 0:
                st.chunk_left = -2

    def events(self, st, now):
        while True:
            i = st.body.find(b"\n\n")
            if i < 0:
                return
            ev = st.body[:i]
            st.body = st.body[i + 2:]
            if ev.startswith(b": heartbeat"):
                st.beats += 1
                continue
            if b"event: notification" not in ev:
                continue
            st.frames += 1
            m = MARK.search(ev)
            if not m:
                continue
            sent = self.sent.get(int(m.group(1)))
            if sent is None:
                self.late_marks += 1
                continue
            self.arrivals.append(now - sent[0])

    def stream_closed(self, st, why):
        if st.closed:
            return
        st.closed = True
        try:
            self.sel.unregister(st.sock)
        except (KeyError, ValueError):
            pass
        st.sock.close()
        if len(self.errors) < 20:
            self.errors.append(why)

    # -- posters
    def open_poster(self):
        s = socket.create_connection((self.host, self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        p = Poster(s)
        self.sel.register(s, selectors.EVENT_READ, p)
        return p

    def post(self, p, token, assignee, mark, now):
        body = json.dumps({"title": f"fanout-{mark}-x", "assignee_id": assignee}).encode()
        req = (f"POST /api/v1/tasks HTTP/1.1\r\nHost: {self.host}\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        p.busy = True
        p.sent_at = now
        p.sock.send(req)    # small: fits the socket buffer

    def on_poster(self, p):
        try:
            data = p.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            if p.busy:
                raise RuntimeError("a POST connection was closed by the server")
            # an idle spare: the server closes a connection that sends no request head
            # within server.header_timeout (10 s); connect it again
            self.sel.unregister(p.sock)
            p.sock.close()
            s = socket.create_connection((self.host, self.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            p.sock, p.buf = s, b""
            self.sel.register(s, selectors.EVENT_READ, p)
            return
        p.buf += data
        while True:
            i = p.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = p.buf[:i].decode("latin-1")
            m = re.search(r"(?i)content-length:\s*(\d+)", head)
            n = int(m.group(1)) if m else 0
            if len(p.buf) < i + 4 + n:
                return
            status = int(head.split(" ", 2)[1])
            self.status_counts[f"post {status}"] = self.status_counts.get(f"post {status}", 0) + 1
            p.buf = p.buf[i + 4 + n:]
            p.busy = False
            self.post_lat.append(time.monotonic() - p.sent_at)

    def poll(self, timeout):
        now = time.monotonic()
        for key, mask in self.sel.select(timeout):
            obj = key.data
            if isinstance(obj, Stream):
                self.on_stream(obj, mask, time.monotonic())
            else:
                self.on_poster(obj)
        return now


# ------------------------------------------------------------------ process figures

def with_children(pids):
    out = list(pids)
    for pid in pids:
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
        except OSError:
            pass
    return out


def cpu_ticks(pids):
    total = 0
    for pid in with_children(pids):
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except OSError:
            pass
    return total / TICK


def rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def psql(a, sql):
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(a.pg_port), "-U", "postgres", "-d",
                        a.pg_db, "-qAtX", "-F", "\t", "-c", sql], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout


def db_snapshot(a):
    if not a.pg_port:
        return None
    xact = int(psql(a, "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                       f"WHERE datname = '{a.pg_db}'").strip())
    return {"xact": xact, "t": time.monotonic()}


def statements(a):
    if not a.pg_port:
        return []
    out = psql(a, "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM "
                  "pg_stat_statements WHERE query NOT ILIKE '%pg_stat%' ORDER BY calls DESC")
    return [line.split("\t", 1) for line in out.splitlines() if line]


def redis_commands(a):
    if not a.redis_port:
        return None
    r = subprocess.run(["redis-cli", "-p", str(a.redis_port), "info", "stats"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return None


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True,
                    help="base URL; several, comma-separated: streams alternate between them")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--settle", type=float, default=3,
                    help="seconds between the last stream opened and the idle window")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--load", type=float, default=30)
    ap.add_argument("--posters", type=int, default=16)
    ap.add_argument("--pids", default="", help="every docket process")
    ap.add_argument("--hold-pids", default="", help="the processes that hold the streams")
    ap.add_argument("--gw-pids", default="", help="split mode: the gateways (they proxy the streams)")
    ap.add_argument("--db-pids", default="")
    ap.add_argument("--pg-port", type=int, default=0)
    ap.add_argument("--pg-db", default="docket")
    ap.add_argument("--redis-port", type=int, default=0)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    bases = [urllib.parse.urlsplit(b) for b in a.base.split(",")]
    host, port = bases[0].hostname, bases[0].port
    pids = [int(p) for p in a.pids.split()]
    hold = [int(p) for p in a.hold_pids.split()] or pids
    dbp = [int(p) for p in a.db_pids.split()]
    need = a.streams + a.posters + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))

    result = {"label": a.label, "users": a.users, "streams": a.streams, "idle_s": a.idle,
              "rate": a.rate, "load_s": a.load, "client": "python3 selectors (epoll), 1 thread",
              "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    t0 = time.monotonic()
    rss_before = rss_mib(hold)
    users = seed(host, port, a.users, str(int(time.time())))
    log(f"{a.users} users registered and logged in in {time.monotonic() - t0:.1f} s")
    rss_seeded = rss_mib(hold)
    gws = [int(p) for p in a.gw_pids.split()]
    rss_gw_seeded = rss_mib(gws)

    c = Client(host, port, [b.port for b in bases])
    per = a.streams // a.users
    t1 = time.monotonic()
    opened = 0
    order = [(i % a.users) for i in range(a.streams)]
    inflight_cap = 500
    while opened < a.streams or any(not s.head_done and not s.closed for s in c.streams[-inflight_cap:]):
        pending = sum(1 for s in c.streams[-inflight_cap:] if not s.head_done and not s.closed)
        while opened < a.streams and pending < inflight_cap:
            uid = order[opened]
            c.open_stream(uid, users[uid][1])
            opened += 1
            pending += 1
        c.poll(0.05)
        if time.monotonic() - t1 > 300:
            raise RuntimeError("streams did not open within 300 s")
    # the loop above watched the last streams opened; an earlier one may still wait for its head
    while any(not s.head_done and not s.closed for s in c.streams):
        c.poll(0.05)
        if time.monotonic() - t1 > 300:
            raise RuntimeError("streams did not open within 300 s")
    ok = sum(1 for s in c.streams if s.status == 200 and not s.closed)
    log(f"{ok}/{a.streams} streams open ({per} per user) in {time.monotonic() - t1:.1f} s; "
        f"statuses {c.status_counts}")
    result["streams_open"] = ok
    result["open_seconds"] = round(time.monotonic() - t1, 1)

    # settle: the replays of the opening are done; then the idle window
    settle_end = time.monotonic() + a.settle
    while time.monotonic() < settle_end:
        c.poll(0.1)
    if a.pg_port:
        try:
            psql(a, "SELECT pg_stat_statements_reset()")
        except RuntimeError:
            pass
    cpu0, dcpu0, db0, rc0 = cpu_ticks(pids), cpu_ticks(dbp), db_snapshot(a), redis_commands(a)
    hcpu0 = cpu_ticks(hold)
    beats0 = sum(s.beats for s in c.streams)
    ti = time.monotonic()
    series, last_t, last_c = [], ti, hcpu0   # the holding process's CPU, 10 s at a time
    while time.monotonic() - ti < a.idle:
        c.poll(0.2)
        if time.monotonic() - last_t >= 10:
            now_t, now_c = time.monotonic(), cpu_ticks(hold)
            series.append(round(100 * (now_c - last_c) / (now_t - last_t), 2))
            last_t, last_c = now_t, now_c
    el = time.monotonic() - ti
    result["idle_cpu_pct_holding_per_10s"] = series
    cpu1, dcpu1, db1, rc1 = cpu_ticks(pids), cpu_ticks(dbp), db_snapshot(a), redis_commands(a)
    hcpu1 = cpu_ticks(hold)
    result["rss_mib_holding_streams"] = round(rss_mib(hold), 1)
    result["rss_mib_before_seed"] = round(rss_before, 1)
    result["rss_mib_after_seed"] = round(rss_seeded, 1)
    # what the streams cost: the growth from the seeded process (users logged in, no stream)
    result["rss_kib_per_stream"] = round((rss_mib(hold) - rss_seeded) * 1024 / max(ok, 1), 1)
    if gws:  # each stream passes one gateway: their growth from seeded over all the streams
        result["rss_mib_gateways_after_seed"] = round(rss_gw_seeded, 1)
        result["rss_kib_per_stream_gateways"] = round((rss_mib(gws) - rss_gw_seeded) * 1024 / max(ok, 1), 1)
    result["rss_mib_all_docket"] = round(rss_mib(pids), 1)
    result["idle_cpu_pct_all_docket"] = round(100 * (cpu1 - cpu0) / el, 2)
    result["idle_cpu_pct_holding"] = round(100 * (hcpu1 - hcpu0) / el, 2)
    result["idle_cpu_pct_db_redis"] = round(100 * (dcpu1 - dcpu0) / el, 2) if dbp else None
    if db0:
        result["idle_db_xact_per_s"] = round((db1["xact"] - db0["xact"]) / el, 2)
        st = statements(a)
        result["idle_statements"] = st
        result["idle_db_statements_per_s"] = round(sum(int(c) for c, _ in st) / el, 2)
    if rc0 is not None:
        result["idle_redis_cmds_per_s"] = round((rc1 - rc0) / el, 2)
    result["idle_heartbeats_per_s"] = round((sum(s.beats for s in c.streams) - beats0) / el, 1)
    result["streams_closed_during_idle"] = sum(1 for s in c.streams if s.closed) - (a.streams - ok)
    log(f"idle {el:.0f} s: {json.dumps({k: v for k, v in result.items() if k.startswith(('idle', 'rss'))})}")

    posters = [c.open_poster() for _ in range(a.posters)]
    mark = 0
    interval = 1.0 / a.rate
    tl = time.monotonic()
    next_at = tl
    cpu0 = cpu_ticks(pids)
    backlog = 0
    while time.monotonic() - tl < a.load:
        now = time.monotonic()
        while next_at <= now and time.monotonic() - tl < a.load:
            free = next((p for p in posters if not p.busy), None)
            if free is None:
                backlog += 1
                break
            rec = mark % a.users
            author = (rec + 1) % a.users
            c.sent[mark] = (time.monotonic(), rec)
            c.post(free, users[author][1], users[rec][0], mark, time.monotonic())
            mark += 1
            next_at += interval
        c.poll(max(0.0, min(0.005, next_at - time.monotonic())))
    load_el = time.monotonic() - tl
    cpu1 = cpu_ticks(pids)
    drain = time.monotonic()
    open_per_user = [0] * a.users
    for s in c.streams:
        if s.status == 200 and not s.closed:
            open_per_user[s.user] += 1
    expected = sum(open_per_user[i % a.users] for i in range(mark))
    while len(c.arrivals) < expected and time.monotonic() - drain < 10:
        c.poll(0.1)
    lat = [x * 1000 for x in c.arrivals]
    result.update({
        "notifications_sent": mark,
        "send_rate": round(mark / load_el, 1),
        "sender_fell_behind": backlog,
        "frames_expected": expected,
        "frames_received": len(lat),
        "latency_ms_p50": round(pct(lat, 50), 2) if lat else None,
        "latency_ms_p90": round(pct(lat, 90), 2) if lat else None,
        "latency_ms_p99": round(pct(lat, 99), 2) if lat else None,
        "latency_ms_max": round(max(lat), 2) if lat else None,
        "post_ms_p50": round(pct(c.post_lat, 50) * 1000, 2) if c.post_lat else None,
        "post_ms_p99": round(pct(c.post_lat, 99) * 1000, 2) if c.post_lat else None,
        "load_cpu_pct_all_docket": round(100 * (cpu1 - cpu0) / load_el, 1),
        "rss_mib_holding_streams_after_load": round(rss_mib(hold), 1),
        "statuses": {str(k): v for k, v in c.status_counts.items()},
        "stream_errors_sample": c.errors,
        "streams_closed_total": sum(1 for s in c.streams if s.closed),
        "loadavg_end": open("/proc/loadavg").read().split()[:3],
    })
    # how writes reached waiting streams (the process holding them: `all` only; in split mode
    # the first base is a gateway)
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        wake = {m.group(1): int(float(m.group(2))) for m in re.finditer(
            r'^docket_http_stream_wakeups_total\{path="(\w+)"\} (\S+)$', text, re.M)}
        if wake:
            result["stream_wakeups"] = wake
    except OSError:
        pass
    log(f"load: {json.dumps({k: result[k] for k in ('notifications_sent', 'send_rate', 'frames_expected', 'frames_received', 'latency_ms_p50', 'latency_ms_p99', 'latency_ms_max', 'post_ms_p50', 'post_ms_p99', 'load_cpu_pct_all_docket')})}")
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    for s in c.streams:
        if not s.closed:
            s.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
