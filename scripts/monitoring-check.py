#!/usr/bin/python3
"""make monitoring-check: the monitoring stack proven against a real Prometheus.

Starts the five split processes (gateway, auth, users, tasks, notifications) on PostgreSQL and
Redis (from scripts/with-test-servers.sh), then Debian's Prometheus with the project's own
deploy/monitoring/prometheus.yml rewritten only where it must be outside Kubernetes: each
kubernetes_sd_configs becomes a static_configs carrying the same __meta_kubernetes_* labels
Kubernetes discovery would give the pods, so the file's own relabelling derives namespace, pod
and app; rule_files points at deploy/monitoring/rules; the prometheus job at this Prometheus.
Traffic runs meanwhile (including 503s from the gateway while notifications is not up yet).
Then, through Prometheus's HTTP API:
  - every query of deploy/monitoring/grafana/*.json, with its variables substituted, must be
    valid and return data; a query that also reads kube-state-metrics series (not running
    here) must be valid, and each of its operands that reads Docket's series must return data;
  - every alert expression of deploy/monitoring/rules/*.yml the same way, its thresholds taken
    off (a healthy system fires nothing; the quantities compared must exist);
  - the prometheus-adapter rule behind the HPAs' requests_per_second, expanded as the adapter
    expands it, returns a value for each of the five pods;
  - the alert rules are loaded by Prometheus without error;
  - Prometheus (exemplar storage on) holds exemplars on the latency histogram of every process,
    each naming a trace the processes exported (they export OTLP/JSON to a sink in this
    script, which keeps the trace ids).
Usage: scripts/with-test-servers.sh scripts/monitoring-check.py [DOCKET_BIN]
Exit 0 when everything holds; 1 with the list of problems."""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import http.server
import threading
import time

import requests
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
MON = REPO / "deploy" / "monitoring"
NAMESPACE = "production"
# process -> the app label of its Deployment (deploy/k8s/base)
APPS = {"gateway": "api-gateway", "auth": "auth-service", "users": "user-service",
        "tasks": "task-service", "notifications": "notification-service"}
PASSWORD = "correct horse battery staple"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"monitoring-check: timed out waiting for {what}")


# ---------------------------------------------------------------------------------- PromQL text

def top_level_split(expr):
    """Operands of expr's top-level binary operators (arithmetic, comparison, and/or/unless),
    ignoring what is inside parentheses, braces, brackets and strings; modifiers (on, by,
    bool...) stay with the operator."""
    ops = re.compile(r"(==|!=|>=|<=|>|<|\+|-(?!\d+[smhdwy])|\*|/|%|\^|\band\b|\bor\b|\bunless\b)"
                     r"(\s*bool)?(\s*(on|ignoring)\s*\([^)]*\))?(\s*group_(left|right)\s*(\([^)]*\))?)?")
    depth, i, start, out, quote = 0, 0, 0, [], None
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = ops.match(expr, i)
            # a unary minus or an aggregation's "by" never reaches here as an operator match
            if m and expr[start:i].strip():
                out.append(expr[start:i])
                i = m.end()
                start = i
                continue
        i += 1
    out.append(expr[start:])
    return [o.strip() for o in out if o.strip()]


def strip_parens(e):
    e = e.strip()
    while e.startswith("(") and e.endswith(")"):
        depth = 0
        for i, c in enumerate(e):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(e) - 1:
                return e
        e = e[1:-1].strip()
    return e


def is_number(e):
    return re.fullmatch(r"[0-9.eE+*\s]+", e) is not None


class Prom:
    def __init__(self, url):
        self.url = url

    def query(self, expr):
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            return None, body.get("error", r.text)
        return body["data"]["result"], None


def check_expr(prom, label, expr, problems, notes, strip_thresholds=False):
    """The whole expression must be valid; it (or, when it reads kube-state-metrics or has
    thresholds, each of its operands reading Docket's series) must return data."""
    result, err = prom.query(expr)
    if err:
        problems.append(f"{label}: invalid: {err}")
        return
    if result and not strip_thresholds and "kube_" not in expr:
        return
    operands = [expr] if ("kube_" not in expr and not strip_thresholds) else None
    if operands is None:
        operands = []
        todo = [expr]
        while todo:
            e = strip_parens(todo.pop())
            parts = top_level_split(e)
            if len(parts) > 1:
                todo.extend(parts)
            else:
                operands.append(e)
    checked = 0
    for op in operands:
        if is_number(op) or op.startswith("time()"):
            continue
        if "kube_" in op:
            notes.append(f"{label}: `{op[:70]}…` reads kube-state-metrics (not running here): "
                         "checked valid only")
            continue
        res, err = prom.query(op)
        checked += 1
        if err:
            problems.append(f"{label}: operand `{op}` invalid: {err}")
        elif not res:
            problems.append(f"{label}: `{op}` returned no data")
    if checked == 0 and "kube_" not in expr:
        problems.append(f"{label}: nothing checked in `{expr}`")


# ---------------------------------------------------------------------------------- processes

class Procs:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = {}

    def start(self, name, args, env):
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        log.close()

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def prometheus_config(ports, prom_port, rules_dir):
    cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
    cfg["rule_files"] = [str(rules_dir / "*.yml")]
    for job in cfg["scrape_configs"]:
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{prom_port}"]}]
        if "kubernetes_sd_configs" not in job:
            continue
        roles = {k["role"] for k in job.pop("kubernetes_sd_configs")}
        job.pop("tls_config", None)
        job.pop("authorization", None)
        job["scheme"] = "http"
        if roles == {"pod"}:
            # what Kubernetes discovery would say about each Docket pod (deploy/k8s/base)
            job["static_configs"] = [{
                "targets": [f"127.0.0.1:{port}"],
                "labels": {
                    "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
                    "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
                    "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
                    "__meta_kubernetes_pod_phase": "Running",
                    "__meta_kubernetes_namespace": NAMESPACE,
                    "__meta_kubernetes_pod_name": f"{APPS[name]}-0",
                    "__meta_kubernetes_pod_label_app": APPS[name],
                    "__meta_kubernetes_pod_label_environment": NAMESPACE,
                    "__meta_kubernetes_pod_node_name": "node-0",
                }} for name, port in ports.items()]
        else:
            # the API server and kube-state-metrics do not exist here: no targets
            job["static_configs"] = []
    return cfg


def traffic(gw, stop, counts):
    s = requests.Session()
    url = f"http://127.0.0.1:{gw}"
    while not stop.is_set():
        try:
            users = []
            for _ in range(2):
                email = f"mon-{time.monotonic_ns()}@example.com"
                r = s.post(url + "/api/v1/auth/register",
                           json={"email": email, "password": PASSWORD, "name": "Mon"})
                r = s.post(url + "/api/v1/auth/login", json={"email": email, "password": PASSWORD})
                users.append((r.json().get("access_token"), None))
            (tok, _), (tok2, _) = users
            h = {"Authorization": f"Bearer {tok}"}
            me2 = s.get(url + "/api/v1/users/me", headers={"Authorization": f"Bearer {tok2}"})
            r = s.post(url + "/api/v1/tasks", headers=h, json={"title": "watched"})
            tid = r.json().get("id")
            s.get(url + f"/api/v1/tasks/{tid}", headers=h)
            s.patch(url + f"/api/v1/tasks/{tid}", headers=h,
                    json={"assignee_id": me2.json().get("id")})
            s.get(url + "/api/v1/tasks", headers=h)
            s.get(url + "/api/v1/notifications", headers={"Authorization": f"Bearer {tok2}"})
            counts["rounds"] = counts.get("rounds", 0) + 1
        except (requests.RequestException, ValueError, AttributeError):
            counts["errors"] = counts.get("errors", 0) + 1
            time.sleep(0.1)


class TraceSink(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP JSON sink: answers every export 200 and keeps the trace ids it saw."""
    daemon_threads = True

    def __init__(self):
        self.trace_ids = set()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    doc = json.loads(body or b"{}")
                    for rs in doc.get("resourceSpans", []):
                        for ss in rs.get("scopeSpans", []):
                            sink.trace_ids.update(sp["traceId"] for sp in ss.get("spans", []))
                except (ValueError, KeyError, TypeError):
                    pass
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def main():
    t0 = time.monotonic()
    docket = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else REPO / "build" / "docket")
    pg, redis_url = os.environ.get("DOCKET_TEST_PG_URL"), os.environ.get("DOCKET_TEST_REDIS_URL")
    if not pg or not redis_url:
        raise SystemExit("monitoring-check: run under scripts/with-test-servers.sh")
    if not shutil.which("prometheus"):
        raise SystemExit("monitoring-check: prometheus is not installed (make deps-test)")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="docket-monitoring."))
    procs = Procs(workdir)
    stop = threading.Event()
    problems, notes = [], []
    sink = TraceSink()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKET_")}
        env.update({"DATABASE_URL": pg, "REDIS_URL": redis_url, "JWT_SECRET": "m" * 48,
                    "DOCKET_AUTH_ARGON2_MEMORY_KIB": "1024", "DOCKET_AUTH_ARGON2_ITERATIONS": "1",
                    "DOCKET_RATE_LIMITING_MAX_REQUESTS": "100000",
                    "DOCKET_GATEWAY_RATE_LIMIT_RPS": "0", "DOCKET_SERVER_THREADS": "4",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                    "DOCKET_OTEL_SCHEDULE_DELAY": "200ms"})
        r = subprocess.run([docket, "migrate"], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SystemExit(f"monitoring-check: docket migrate failed:\n{r.stdout}{r.stderr}")
        ports = {name: free_port() for name in APPS}
        for name in APPS:
            if name != "gateway":
                env[f"DOCKET_GATEWAY_{name.upper()}_URL"] = f"http://127.0.0.1:{ports[name]}"

        def start(name):
            senv = dict(env)
            if name != "gateway":
                senv["DOCKET_SERVER_TRUST_FORWARDED_FOR"] = "true"
            procs.start(name, [docket, name, f"--server.port={ports[name]}",
                               "--server.host=127.0.0.1"], senv)

        def healthy(name):
            return requests.get(f"http://127.0.0.1:{ports[name]}/health", timeout=1).ok

        # notifications last: meanwhile the gateway answers its routes 503, which gives the
        # error-rate queries 5xx series to read
        for name in ("users", "auth", "tasks", "gateway"):
            start(name)
        for name in ("users", "auth", "tasks", "gateway"):
            wait_until(lambda: healthy(name), 20, f"docket {name}")
        for _ in range(5):
            r = requests.get(f"http://127.0.0.1:{ports['gateway']}/api/v1/notifications",
                             headers={"Authorization": "Bearer x"}, timeout=5)
        start("notifications")
        wait_until(lambda: healthy("notifications"), 20, "docket notifications")

        prom_port = free_port()
        cfg = prometheus_config(ports, prom_port, MON / "rules")
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        counts = {}
        th = threading.Thread(target=traffic, args=(ports["gateway"], stop, counts), daemon=True)
        th.start()
        procs.start("prometheus", ["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={workdir / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}",
                                   "--enable-feature=exemplar-storage"], dict(os.environ))
        prom = Prom(f"http://127.0.0.1:{prom_port}")
        wait_until(lambda: requests.get(prom.url + "/-/ready", timeout=1).ok, 30, "Prometheus")

        # every Docket target scraped at least twice (rate() needs two samples)
        def scraped_twice():
            res, _ = prom.query('count_over_time(up{namespace="%s"}[5m])' % NAMESPACE)
            got = {x["metric"].get("app"): float(x["value"][1]) for x in res or []}
            return all(got.get(a, 0) >= 2 for a in APPS.values())
        wait_until(scraped_twice, 45, "two scrapes of every Docket process")
        stop.set()
        th.join(10)

        res, _ = prom.query('up{namespace="%s"}' % NAMESPACE)
        up = {x["metric"]["app"]: x["value"][1] for x in res or []}
        for app in APPS.values():
            if up.get(app) != "1":
                problems.append(f"target {app}: up = {up.get(app)}")

        # the rules loaded
        groups = requests.get(prom.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = {r["name"] for g in groups for r in g["rules"]}
        for f in sorted((MON / "rules").glob("*.yml")):
            for g in yaml.safe_load(f.read_text())["groups"]:
                for rule in g["rules"]:
                    name = rule.get("alert") or rule.get("record")
                    if name not in loaded:
                        problems.append(f"rule {name}: not loaded by Prometheus")
                    elif rule.get("alert"):
                        check_expr(prom, f"alert {name}", rule["expr"], problems, notes,
                                   strip_thresholds=True)

        # the dashboards
        nqueries = 0
        for f in sorted((MON / "grafana").glob("*.json")):
            dash = json.loads(f.read_text())
            for panel in dash.get("panels", []):
                for t in panel.get("targets", []):
                    expr = t.get("expr")
                    if not expr:
                        continue
                    nqueries += 1
                    expr = expr.replace("$namespace", NAMESPACE).replace("${namespace}", NAMESPACE)
                    check_expr(prom, f"dashboard {f.name} '{panel.get('title')}'", expr,
                               problems, notes)
            for v in dash.get("templating", {}).get("list", []):
                q = v.get("query")
                q = q.get("query") if isinstance(q, dict) else q
                m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q or "")
                if m:
                    res, err = prom.query(m.group(1))
                    vals = {x["metric"].get(m.group(2)) for x in res or []}
                    if NAMESPACE not in vals:
                        problems.append(f"dashboard variable {v['name']}: {q} lacks {NAMESPACE}")

        # the HPA's custom metric, as prometheus-adapter expands its rule
        adapter = yaml.safe_load((MON / "prometheus-adapter" / "values.yaml").read_text())
        pods = [f"{a}-0" for a in APPS.values()]
        for rule in adapter["rules"]["custom"]:
            if rule["name"]["as"] != "requests_per_second":
                continue
            series = re.match(r"\s*'?(\w+)", rule["seriesQuery"]).group(1)
            q = (rule["metricsQuery"].replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>",
                          f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"')
                 .replace("<<.GroupBy>>", "pod"))
            res, err = prom.query(q)
            per_pod = {x["metric"].get("pod"): float(x["value"][1]) for x in res or []}
            if err or set(per_pod) != set(pods):
                problems.append(f"requests_per_second: {err or per_pod} (wanted one per pod)")
            else:
                notes.append("requests_per_second per pod: " +
                             ", ".join(f"{p} {v:.2f}" for p, v in sorted(per_pod.items())))

        # exemplars: Prometheus scrapes OpenMetrics, so it holds the trace ids of sampled
        # requests on the latency buckets of every process, and each names an exported trace
        ex = requests.get(prom.url + "/api/v1/query_exemplars",
                          params={"query": "http_request_duration_seconds_bucket",
                                  "start": time.time() - 300, "end": time.time()}, timeout=10)
        per_app, unknown, nex = {}, [], 0
        time.sleep(0.5)  # the last exports (schedule delay 200 ms)
        for series in ex.json().get("data", []) or []:
            app = series.get("seriesLabels", {}).get("app")
            for e in series.get("exemplars", []):
                nex += 1
                per_app[app] = per_app.get(app, 0) + 1
                tid = e.get("labels", {}).get("trace_id")
                if tid not in sink.trace_ids:
                    unknown.append(tid)
        for app in APPS.values():
            if not per_app.get(app):
                problems.append(f"exemplars: none on {app}'s http_request_duration_seconds")
        if unknown:
            problems.append(f"exemplars: {len(unknown)} name traces never exported, e.g. "
                            f"{unknown[:3]}")
        notes.append(f"exemplars on http_request_duration_seconds_bucket: {nex} "
                     f"({', '.join(f'{a} {n}' for a, n in sorted(per_app.items()))}), "
                     f"{len(sink.trace_ids)} traces exported")
        notes.append(f"traffic: {counts.get('rounds', 0)} rounds, {counts.get('errors', 0)} "
                     f"failed; {nqueries} dashboard queries; {time.monotonic() - t0:.1f} s")
    finally:
        stop.set()
        procs.stop_all()
        sink.shutdown()
        if problems:
            print(f"monitoring-check: logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for n in notes:
        print(f"monitoring-check: note: {n}")
    for p in problems:
        print(f"monitoring-check: FAIL: {p}")
    if problems:
        return 1
    print("monitoring-check: ok (every dashboard query and alert expression returned data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
