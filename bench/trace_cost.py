#!/usr/bin/python3
"""What trace export costs per request, in instructions (callgrind), which do not depend on
what else the machine is doing: docket all (SQLite) under valgrind --tool=callgrind, one
keep-alive client doing register, login, one task, then N reads of GET /api/v1/tasks/{id}; the
cost per request is the difference between an N-read run and a 200-read run over N - 200.

Modes: off (no endpoint), dead (a closed port), live (a local sink answering 200, OTLP/protobuf),
livejson (the same, OTLP/JSON), unsampled (live sink, traceidratio 0).
Prints, per mode: the whole process; the request path (the process minus the periodic
background workers, whose cost follows wall-clock time, not requests); the exporter thread; and
the tracing functions' own inclusive cost (the direct measure: the totals are noisy).
Usage: bench/trace_cost.py [--reads N] [--modes off,dead,live] [BINARY]   (slow: ~2 min a run)
Figures: docs/design/measurements.md."""

import argparse
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

BACKGROUND = ("dk_outbox_loop", "delivery_worker", "hub_main", "notifications_scheduler_main",
              "housekeeper_main", "auth_reaper_main", "auth_dummy_main")
REQUEST_TRACING = ("dk_span_sql", "dk_span_start", "dk_span_end", "dk_trace_server_span",
                   "dk_trace_sample", "dk_span_http", "dk_span_consume")


class Sink(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass
        super().__init__(("127.0.0.1", 0), H)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, mode, reads, sink_port, workdir):
    d = os.path.join(workdir, f"{mode}-{reads}")
    os.makedirs(d)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKET_", "OTEL_"))}
    env.update(JWT_SECRET="x" * 48, DOCKET_AUTH_ARGON2_MEMORY_KIB="1024",
               DOCKET_AUTH_ARGON2_ITERATIONS="1", DOCKET_LOG_ACCESS="false",
               DOCKET_GATEWAY_RATE_LIMIT_RPS="0", DOCKET_SERVER_THREADS="2")
    if mode == "dead":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    elif mode != "off":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
    if mode == "livejson":
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
    if mode == "unsampled":
        env.update(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    out = os.path.join(d, "cg.out")
    with open(os.path.join(d, "log"), "w") as log:
        p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                              binary, "all", f"--server.port={port}", "--server.host=127.0.0.1",
                              f"--storage.data_dir={d}/data"],
                             env=env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(base + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"trace_cost: docket did not start (see {d}/log)")
            time.sleep(0.2)
        s = requests.Session()
        acct = {"email": "a@example.com", "password": "pw pw pw pw"}
        s.post(base + "/api/v1/auth/register", json=dict(acct, name="A"))
        tok = s.post(base + "/api/v1/auth/login", json=acct).json()["access_token"]
        h = {"Authorization": "Bearer " + tok}
        tid = s.post(base + "/api/v1/tasks", json={"title": "bench task"}, headers=h).json()["id"]
        for _ in range(reads):
            r = s.get(f"{base}/api/v1/tasks/{tid}", headers=h)
            assert r.status_code == 200, r.text
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(600)
    return costs(out)


def costs(path):
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                          capture_output=True, text=True, check=True).stdout
    fn, total = {}, 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)", line)
        if not m or m.group(2).startswith("=>"):
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = n
            continue
        name = m.group(2).split(" [")[0].split(":")[-1]
        fn[name] = fn.get(name, 0) + n
    # the exporter encodes on its own thread (dk_tr_loop) and posts through the http_client
    # port, whose libcurl client does the HTTP work on its thread (dk_curl_loop; in `docket all`
    # the webhook client's idle loop shares the name, a few wake-ups a second)
    exporter = fn.get("dk_tr_loop", 0) + fn.get("dk_curl_loop", 0)
    return {"total": total,
            "request": total - sum(fn.get(f, 0) for f in BACKGROUND),
            "exporter": exporter,
            "tracing": sum(fn.get(f, 0) for f in REQUEST_TRACING) + exporter}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="build/docket")
    ap.add_argument("--reads", type=int, default=1200)
    ap.add_argument("--modes", default="off,dead,live,livejson")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind outputs")
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("trace_cost: valgrind is not installed")
    binary = os.path.abspath(a.binary)
    workdir = tempfile.mkdtemp(prefix="docket-trace-cost.")
    sink = Sink()
    print(f"{'mode':10s} {'whole':>8s} {'request':>8s} {'exporter':>9s} {'tracing':>8s}"
          "  (instructions per request, thousands)")
    try:
        for mode in a.modes.split(","):
            lo = run(binary, mode, 200, sink.server_address[1], workdir)
            hi = run(binary, mode, a.reads, sink.server_address[1], workdir)
            k = (a.reads - 200) * 1000
            print(f"{mode:10s} " + " ".join(f"{(hi[c] - lo[c]) / k:8.1f}" for c in
                                            ("total", "request", "exporter", "tracing")),
                  flush=True)
    finally:
        sink.shutdown()
        if a.keep:
            print(f"trace_cost: outputs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
