"""Every metric the Grafana dashboard and the alert rules name is exported by the running services."""
import json
import re
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from demo.processes import client_for, running_services
from demo.sample_batch import render_sample_batch

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(ocrstream_[a-z0-9_]+)")
# Exported by every process (common.observability declares it); its series appear once the OCR worker and the
# persister call record_consumer_lag on their loops.
EXPECTED_FROM_WIRING = {"ocrstream_consumer_lag"}


def referenced_metrics() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/ocrstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {name for expr in exprs for name in METRIC.findall(expr)}


def exported_metrics(metrics_text: str) -> tuple[set[str], set[str]]:
    """(names a query can use, names with at least one series) of one /metrics page."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
    names, with_series = set(), set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        with_series |= {sample.name for sample in family.samples}
    return names, with_series


def test_dashboard_and_alerts_name_only_exported_metrics(isolated_env, settings, tmp_path):
    wanted = referenced_metrics()
    assert {"ocrstream_worker_files_total", "ocrstream_http_requests_total", "ocrstream_consumer_lag"} <= wanted
    samples = render_sample_batch(tmp_path / "batch", images=3, pdf_pages=0, seed=5)
    with running_services(isolated_env | {"OCRSTREAM_ENGINE": "fast"}, tmp_path / "logs", workers=1) as services, \
            client_for(services) as client:
        accepted = client.submit([s.path for s in samples], name="metrics")
        assert client.wait(accepted["batch_id"], timeout=120)["status"] == "completed"
        names, with_series = set(), set()
        for service in services.values():
            n, s = exported_metrics(httpx.get(f"{service.probe_url}/metrics", timeout=10).text)
            names |= n
            with_series |= s
    missing = wanted - names
    assert not missing, f"named by the dashboard or the alerts, exported by no service: {sorted(missing)}"
    # After a batch, the pipeline's own counters have series, and the HTTP middleware counted the requests.
    assert {"ocrstream_worker_files_total", "ocrstream_ingest_files_accepted_total",
            "ocrstream_http_requests_total", "ocrstream_http_request_seconds_bucket"} <= with_series
    print("declared, series expected once wired:", sorted((wanted - with_series) & EXPECTED_FROM_WIRING))
