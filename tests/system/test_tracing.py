"""Traces: OTLP/HTTP export (protobuf by default, JSON when configured) checked by a receiver
built on the official generated protobuf code (tests/system/otlp_receiver.py). Split mode is the case that matters: one request through
the gateway yields one trace across processes, and an event carries it to notifications."""

import json
import secrets

import pytest
import requests

import helpers
from otlp_receiver import OtlpReceiver


@pytest.fixture
def receiver(tmp_path):
    r = OtlpReceiver(tmp_path).start()
    yield r
    r.stop()


def otel_env(endpoint, **extra):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "DOCKET_OTEL_SCHEDULE_DELAY": "100ms",
           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"}
    env.update(extra)
    return env


def new_traceparent():
    trace_id = secrets.token_hex(16)
    return trace_id, secrets.token_hex(8), f"00-{trace_id}-{{}}-01"


def trace_spans(receiver, trace_id, predicate, what):
    found = []

    def ready():
        found[:] = [s for s in receiver.spans() if s["traceId"] == trace_id]
        return predicate(found)
    helpers.wait_until(ready, 20, interval=0.1, what=what)
    return found


def by_id(spans):
    return {s["spanId"]: s for s in spans}


def chain(span, index):
    """The span's ancestors within the trace, nearest first."""
    out = []
    while span["parentSpanId"] in index:
        span = index[span["parentSpanId"]]
        out.append(span)
    return out


def test_split_request_is_one_trace_across_processes(docket_factory, receiver):
    d = docket_factory("split", extra_env=otel_env(receiver.endpoint))
    owner = d.new_user()
    assignee = d.new_user()
    r = d.post("/api/v1/tasks", token=owner.access, json={"title": "Trace me"})
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]

    # one GET through the gateway, under a caller's trace
    trace_id, caller_span, tp = new_traceparent()
    r = d.get(f"/api/v1/tasks/{task_id}", token=owner.access,
              headers={"traceparent": tp.format(caller_span)})
    assert r.status_code == 200, r.text

    def complete(spans):
        names = {(s["service"], s["kind"]) for s in spans}
        return ({("docket-gateway", 2), ("docket-gateway", 3), ("docket-tasks", 2)} <= names
                and any(s["attributes"].get("db.system") == "postgresql" for s in spans))
    spans = trace_spans(receiver, trace_id, complete, "the GET's spans")
    index = by_id(spans)
    gw_server = [s for s in spans if s["service"] == "docket-gateway" and s["kind"] == 2]
    assert len(gw_server) == 1, spans
    gw_server = gw_server[0]
    assert gw_server["parentSpanId"] == caller_span
    assert gw_server["attributes"]["http.request.method"] == "GET"
    assert gw_server["attributes"]["http.response.status_code"] == 200
    assert gw_server["resource"]["deployment.environment"] == "test"
    # the default encoding is OTLP/protobuf, decoded by the official generated code
    assert all(s["headers"]["content-type"] == "application/x-protobuf" for s in spans)
    forward = [s for s in spans if s["service"] == "docket-gateway" and s["kind"] == 3]
    assert len(forward) == 1 and forward[0]["parentSpanId"] == gw_server["spanId"], spans
    svc = [s for s in spans if s["service"] == "docket-tasks" and s["kind"] == 2]
    assert len(svc) == 1, spans
    svc = svc[0]
    assert svc["parentSpanId"] == forward[0]["spanId"]
    assert svc["attributes"]["http.route"] == "/api/v1/tasks/{id}"
    assert svc["name"] == "GET /api/v1/tasks/{id}"
    assert int(gw_server["start"]) <= int(forward[0]["start"]) <= int(svc["start"])
    sql = [s for s in spans if s["attributes"].get("db.system") == "postgresql"]
    assert sql and all(s["service"] == "docket-tasks" and s["parentSpanId"] == svc["spanId"]
                       for s in sql), sql
    assert all(s["name"].startswith(("SELECT", "UPDATE", "INSERT", "DELETE", "WITH"))
               for s in sql), [s["name"] for s in sql]
    # no statement text, no parameter reaches the collector
    assert task_id not in json.dumps(sql)
    # every span of the trace hangs, through its parents, from the caller's span
    for s in spans:
        if s is not gw_server:
            assert gw_server in chain(s, index), (s, spans)

    # the service's log lines inside the request carry the trace and span ids
    lines = [json.loads(x) for x in d.services["tasks"].log_text().splitlines()
             if x.startswith("{") and trace_id in x]
    assert lines and all(x.get("span_id") == svc["spanId"] for x in lines), lines

    # an assignment: the notification's delivery joins the request's trace through the outbox
    # and the Redis stream
    trace_id, caller_span, tp = new_traceparent()
    r = d.patch(f"/api/v1/tasks/{task_id}", token=owner.access,
                json={"assignee_id": assignee.id}, headers={"traceparent": tp.format(caller_span)})
    assert r.status_code == 200, r.text

    def delivered(spans):
        return any(s["name"] == "notifications deliver" for s in spans)
    spans = trace_spans(receiver, trace_id, delivered, "the assignment's delivery span")
    index = by_id(spans)
    deliver = [s for s in spans if s["name"] == "notifications deliver"]
    assert len(deliver) == 1 and deliver[0]["service"] == "docket-notifications", spans
    up = chain(deliver[0], index)
    kinds = [(s["service"], s["kind"], s["name"]) for s in up]
    assert up[0]["kind"] == 5 and up[0]["name"] == "process task.updated", kinds
    assert up[1]["kind"] == 4 and up[1]["service"] == "docket-tasks", kinds
    assert up[2]["kind"] == 2 and up[2]["name"] == "PATCH /api/v1/tasks/{id}", kinds
    assert up[-1]["service"] == "docket-gateway" and up[-1]["parentSpanId"] == caller_span, kinds
    assert any(s["parentSpanId"] == deliver[0]["spanId"] and s["attributes"].get("db.system")
               for s in spans), "the delivery's SQL spans"
    # the event went through Redis: the XADD is a client span of the publish, in tasks
    xadd = [s for s in spans if s["name"] == "redis XADD"]
    assert len(xadd) == 1 and xadd[0]["attributes"]["db.system"] == "redis", kinds
    assert xadd[0]["parentSpanId"] == up[1]["spanId"] and xadd[0]["service"] == "docket-tasks"
    r = d.get("/api/v1/notifications", token=assignee.access)
    assert r.status_code == 200 and r.json()["items"][0]["type"] == "task.assigned", r.text
    assert receiver.rejected() == []


def metric(d, name, labels=""):
    for line in d.get("/metrics").text.splitlines():
        if line.startswith(name + (("{" + labels + "}") if labels else " ")):
            return float(line.split()[-1])
    return None


def test_dead_collector_drops_and_counts(docket_factory):
    # nothing listens there: the first probe fails, so spans are dropped where they would
    # start (counted as collector_down), requests do not notice
    port = helpers.free_port()
    d = docket_factory("sqlite", extra_env=otel_env(f"http://127.0.0.1:{port}"))
    acct = d.new_user()
    helpers.wait_until(lambda: metric(d, "docket_otel_collector_up") == 0, 10, interval=0.1,
                       what="the collector to be seen down")
    before = metric(d, "docket_otel_spans_dropped_total", 'reason="collector_down"')
    for _ in range(40):
        assert d.get("/api/v1/users/me", token=acct.access).status_code == 200
    after = metric(d, "docket_otel_spans_dropped_total", 'reason="collector_down"')
    # each request's server span and its SQL spans, and the /metrics reads' server spans
    assert after - before >= 40 * 2, (before, after)
    assert metric(d, "docket_otel_spans_exported_total") == 0
    assert metric(d, "docket_otel_queue_spans") == 0  # nothing recorded, nothing queued
    # the log says so once, not per span or per probe
    assert d.log_text().count("trace export to") == 1


def test_json_protocol_and_a_collector_that_comes_back(docket_factory, tmp_path):
    # http/json to a collector that is not there yet: spans are dropped; once it listens, the
    # next probe (1 s, then 2 s, ...) finds it and requests are traced again
    receiver = OtlpReceiver(tmp_path)
    d = docket_factory("sqlite", extra_env=otel_env(
        receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/json"))
    helpers.wait_until(lambda: metric(d, "docket_otel_collector_up") == 0, 10, interval=0.1,
                       what="the collector to be seen down")
    receiver.start()
    try:
        helpers.wait_until(lambda: metric(d, "docket_otel_collector_up") == 1, 20, interval=0.2,
                           what="the collector to be found again")
        trace_id, caller_span, tp = new_traceparent()
        assert d.get("/health", headers={"traceparent": tp.format(caller_span)}).status_code == 200
        spans = trace_spans(receiver, trace_id, lambda s: len(s) >= 1, "the /health span")
        assert spans[0]["name"] == "GET /health" and spans[0]["parentSpanId"] == caller_span
        assert spans[0]["headers"]["content-type"] == "application/json"
        assert receiver.rejected() == []
        # the request's trace id is the exemplar of its latency bucket, in OpenMetrics only
        r = d.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert r.headers["Content-Type"].startswith("application/openmetrics-text"), r.headers
        assert r.text.endswith("# EOF\n")
        ex = [line for line in r.text.splitlines() if f'trace_id="{trace_id}"' in line]
        assert len(ex) == 1 and ex[0].startswith("http_request_duration_seconds_bucket{") \
            and 'route="/health"' in ex[0], ex
        assert trace_id not in d.get("/metrics").text  # the 0.0.4 text format has none
    finally:
        receiver.stop()


def test_sampler_off_and_bad_settings(docket_factory, receiver, tmp_path):
    d = docket_factory("sqlite", extra_env=otel_env(receiver.endpoint,
                                                    OTEL_TRACES_SAMPLER="always_off"))
    trace_id, caller_span, tp = new_traceparent()
    r = d.get("/health", headers={"traceparent": tp.format(caller_span)})
    assert r.status_code == 200
    d.new_user()
    d.stop()  # shutdown flushes: nothing was recorded
    assert receiver.spans() == []
    env = helpers.base_env(jwt_secret=helpers.random_secret(),
                           extra=otel_env(receiver.endpoint, OTEL_TRACES_SAMPLER="sometimes"))
    r = helpers.run_cli(["all", f"--storage.data_dir={tmp_path}"], env=env, cwd=str(tmp_path))
    assert r.returncode == 2 and "otel.traces_sampler" in r.stderr, r.stderr


def test_retried_webhook_delivery_is_in_the_request_trace(docket_factory, receiver):
    # the delivery row keeps the assignment's traceparent: each attempt, retries made later by
    # the delivery worker included, is a span of that request's trace, its POST a child
    from test_notifications import FAST_DELIVERY, put_prefs
    from webhook_sink import WebhookSink
    d = docket_factory("sqlite", extra_env=otel_env(receiver.endpoint, **FAST_DELIVERY))
    owner, assignee = d.new_user(), d.new_user()
    with WebhookSink(statuses=[500], default=200) as sink:
        put_prefs(d, assignee, False, sink.url())
        trace_id, caller_span, tp = new_traceparent()
        r = d.post("/api/v1/tasks", token=owner.access, headers={"traceparent": tp.format(
            caller_span)}, json={"title": "Traced delivery", "assignee_id": assignee.id})
        assert r.status_code == 201, r.text
        assert [h.status for h in sink.wait_for(2, 15)] == [500, 200]

        def two_attempts(spans):
            return len([s for s in spans if s["name"] == "notification delivery"]) == 2
        spans = trace_spans(receiver, trace_id, two_attempts, "both delivery attempts")
    index = by_id(spans)
    attempts = sorted((s for s in spans if s["name"] == "notification delivery"),
                      key=lambda s: s["attributes"]["docket.attempt"])
    assert [s["attributes"]["docket.attempt"] for s in attempts] == [1, 2]
    assert attempts[0]["status"] == 2 and attempts[1]["status"] == 0, attempts
    for a in attempts:
        assert a["attributes"]["docket.channel"] == "webhook"
        # under the notifications deliver span that queued it, up to the caller's request
        up = chain(a, index)
        assert up[0]["name"] == "notifications deliver", [s["name"] for s in up]
        assert up[-1]["parentSpanId"] == caller_span
        post = [s for s in spans if s["name"] == "webhook POST" and s["parentSpanId"] == a["spanId"]]
        assert len(post) == 1, spans
    assert sorted(s["attributes"]["http.response.status_code"] for s in spans
                  if s["name"] == "webhook POST") == [200, 500]
    assert receiver.rejected() == []
