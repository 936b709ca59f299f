"""HTTP request metrics and access log (on a tiny app), and the consumer-lag arithmetic."""
import json
import logging

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from common.observability import JsonFormatter, RequestMetrics, partition_lag

pytestmark = pytest.mark.unit


def _count(route: str, status: str) -> float:
    return REGISTRY.get_sample_value("ocrstream_http_requests_total",
                                     {"method": "GET", "route": route, "status": status}) or 0.0


def test_each_request_is_counted_by_route_template_and_logged_once(caplog):
    app = FastAPI()

    @app.get("/v1/things/{thing_id}")
    def thing(thing_id: str) -> dict:
        if thing_id == "boom":
            raise RuntimeError("boom")
        if thing_id == "gone":
            raise HTTPException(404, "no such thing")
        return {"id": thing_id}

    app.add_middleware(RequestMetrics)
    before = {s: _count("/v1/things/{thing_id}", s) for s in ("200", "404", "500")}
    unmatched = _count("unmatched", "404")
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.INFO, "ocrstream.access"):
        assert client.get("/v1/things/a").status_code == 200
        assert client.get("/v1/things/b").status_code == 200
        assert client.get("/v1/things/gone").status_code == 404
        assert client.get("/v1/things/boom").status_code == 500
        assert client.get("/nowhere").status_code == 404
    assert _count("/v1/things/{thing_id}", "200") - before["200"] == 2
    assert _count("/v1/things/{thing_id}", "404") - before["404"] == 1
    assert _count("/v1/things/{thing_id}", "500") - before["500"] == 1, "an unhandled error counts as a 5xx"
    assert _count("unmatched", "404") - unmatched == 1

    lines = [json.loads(JsonFormatter("test").format(r)) for r in caplog.records if r.name == "ocrstream.access"]
    assert len(lines) == 5, "one access-log line per request"
    assert {k: lines[0][k] for k in ("method", "path", "route", "status")} == \
        {"method": "GET", "path": "/v1/things/a", "route": "/v1/things/{thing_id}", "status": 200}
    assert lines[0]["duration_ms"] >= 0


@pytest.mark.parametrize(("position", "low", "high", "lag"), [
    (5, 0, 12, 7),      # read up to 4, 12 written
    (12, 0, 12, 0),     # caught up
    (-1001, 0, 12, 12),  # no position yet: everything from the low watermark
    (3, 8, 12, 4),      # position below the retained log: only what is left counts
    (20, 0, 12, 0),     # never negative
])
def test_partition_lag(position, low, high, lag):
    assert partition_lag(position, low, high) == lag


def test_librdkafka_lines_repeated_within_the_window_are_dropped_and_counted(monkeypatch):
    from common import kafka

    clock = [100.0]
    monkeypatch.setattr(kafka.time, "monotonic", lambda: clock[0])
    repeats = kafka.RepeatsDropped(window_s=10)

    def line(text: str) -> logging.LogRecord:
        return logging.LogRecord("librdkafka", logging.ERROR, "", 0, text, (), None)

    refused = "FAIL [worker#consumer-2]: Connect to ipv4#127.0.0.1:19092 failed: Connection refused (after {}ms)"
    assert repeats.filter(line(refused.format(0)))
    clock[0] += 0.05
    assert not repeats.filter(line(refused.format(1))), "the same line, its timing aside, within the window"
    assert repeats.filter(line("another message")), "other lines are kept"
    clock[0] += 0.05
    assert not repeats.filter(line(refused.format(0)))
    clock[0] += 10
    kept = line(refused.format(0))
    assert repeats.filter(kept) and kept.repeats_dropped == 2
