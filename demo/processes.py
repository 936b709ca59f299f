"""The services as local processes: start, wait until /readyz answers, stop by PID (or SIGKILL them)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient
from ocrstream import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    """One service: `python -m services.<module>` with its env; logs to log_dir/<name>.log (JSON lines)."""

    name: str
    module: str
    env: dict[str, str]
    probe_url: str
    log_dir: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> "ServiceProcess":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{self.name}.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=os.environ | self.env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_tail()}")
            try:
                if httpx.get(f"{self.probe_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # poll interval of the deadline loop
        raise TimeoutError(f"{self.name} not ready in {timeout:.0f} s; see {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine dies."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after timeout."""
        if not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def stacks(self, timeout: float = 5.0) -> str:
        """Every thread's stack (SIGUSR1: the Kafka services dump them to their log), or why there are none."""
        if not self.alive():
            return f"({self.name} is not running)"
        path = self.log_dir / f"{self.name}.log"
        start = path.stat().st_size
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(path, "rb") as log:
                log.seek(start)
                dump = log.read().decode(errors="replace")
            if "Current thread" in dump:  # faulthandler marks the thread that took the signal, in one write-out
                return dump
            time.sleep(0.1)  # poll interval of the deadline loop
        return f"(no stack dump from {self.name} within {timeout:.0f} s)"

    def log_tail(self, lines: int = 60) -> str:
        path = self.log_dir / f"{self.name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def build_services(env: dict[str, str], log_dir: Path, *, workers: int = 2, ingest_port: int = 8000,
                   status_port: int = 8001, probe_ports: list[int] | None = None) -> dict[str, ServiceProcess]:
    """The whole pipeline: ingest, N OCR workers, the persister and the status API (not yet started)."""
    # The settings' defaults (persister 9102, worker 9101), further workers from 9103.
    probe_ports = probe_ports or [9102, 9101, *range(9103, 9103 + workers - 1)]
    ingest_url, status_url = f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{status_port}"
    services = {
        # The console (served by the status API) uploads to ingest from the status API's origin.
        "ingest": ServiceProcess("ingest", "services.ingest", env | {
            "OCRSTREAM_HTTP_PORT": str(ingest_port), "OCRSTREAM_STATUS_API_URL": status_url,
            "OCRSTREAM_CORS_ORIGINS": json.dumps([status_url, status_url.replace("127.0.0.1", "localhost")])},
            ingest_url, log_dir),
        "status_api": ServiceProcess("status_api", "services.status_api", env | {
            "OCRSTREAM_HTTP_PORT": str(status_port), "OCRSTREAM_CONSOLE_INGEST_URL": ingest_url},
            status_url, log_dir),
        "persister": ServiceProcess("persister", "services.persister", env | {"OCRSTREAM_PROBE_PORT": str(probe_ports[0])},
                                    f"http://127.0.0.1:{probe_ports[0]}", log_dir),
    }
    for i in range(workers):
        port = probe_ports[i + 1]
        services[f"ocr_worker-{i + 1}"] = ServiceProcess(
            f"ocr_worker-{i + 1}", "services.ocr_worker",
            env | {"OCRSTREAM_PROBE_PORT": str(port), "OCRSTREAM_WORKER_ID": f"worker-{i + 1}"},
            f"http://127.0.0.1:{port}", log_dir)
    return services


def notifier_service(env: dict[str, str], log_dir: Path, *, probe_port: int = 9110) -> ServiceProcess:
    """The webhook notifier (the settings' default probe port 9110); not part of build_services: it only
    matters to batches that name a webhook_url, and tenants need signing secrets in its env."""
    return ServiceProcess("notifier", "services.notifier", env | {"OCRSTREAM_PROBE_PORT": str(probe_port)},
                          f"http://127.0.0.1:{probe_port}", log_dir)


def scrape_histogram(probe_urls: list[str], name: str, **labels: str) -> tuple[float, int]:
    """(sum, count) of a Prometheus histogram over several processes' /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    total, count = 0.0, 0
    for url in probe_urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
            for sample in family.samples:
                if not all(sample.labels.get(k) == v for k, v in labels.items()):
                    continue
                if sample.name == f"{name}_sum":
                    total += sample.value
                elif sample.name == f"{name}_count":
                    count += int(sample.value)
    return total, count


def isolated_env(endpoints: dict[str, str], suffix: str, *, partitions: int = 3) -> dict[str, str]:
    """OCRSTREAM_* variables for a run of its own: the endpoints plus unique topics, bucket and DB schema."""
    return endpoints | {
        "OCRSTREAM_TOPIC_BATCH_EVENTS": f"t{suffix}.batch.events",
        "OCRSTREAM_TOPIC_OCR_CHUNKS": f"t{suffix}.ocr.chunks",
        "OCRSTREAM_TOPIC_OCR_RESULTS": f"t{suffix}.ocr.results",
        "OCRSTREAM_TOPIC_OCR_DLQ": f"t{suffix}.ocr.dlq",
        "OCRSTREAM_TOPIC_BATCH_PROGRESS": f"t{suffix}.batch.progress",
        "OCRSTREAM_TOPIC_PARTITIONS": str(partitions),
        "OCRSTREAM_S3_BUCKET": f"t{suffix}",
        "OCRSTREAM_DATABASE_SCHEMA": f"t{suffix}",
    }


@contextmanager
def running_services(env: dict[str, str], log_dir: Path, *, workers: int = 2) -> Iterator[dict[str, ServiceProcess]]:
    """Every service started on free ports and ready; stopped (SIGTERM) afterwards, log tails printed on failure."""
    ports = [free_port() for _ in range(workers + 3)]
    services = build_services(env, log_dir, workers=workers, ingest_port=ports[0], status_port=ports[1],
                              probe_ports=ports[2:])
    try:
        for service in services.values():
            service.start()
        for service in services.values():
            service.wait_ready()
        yield services
    except BaseException:
        for service in services.values():
            print(f"--- {service.name} ---\n{service.log_tail(30)}")
        raise
    finally:
        for service in services.values():
            service.stop()


def wait_for_settled_group(bootstrap_servers: str, group: str, members: int, timeout: float = 60.0) -> None:
    """Until the group is stable with `members` members, each holding partitions. A worker is ready once it has
    joined, but a cooperative rebalance hands it partitions a round later: a batch sent before that waits for it."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    deadline = time.monotonic() + timeout
    while True:
        described = admin.describe_consumer_groups([group])[group].result(10)
        if (described.state == ConsumerGroupState.STABLE and len(described.members) == members
                and all(m.assignment.topic_partitions for m in described.members)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumer group {group} not settled with {members} members in {timeout:g} s")
        time.sleep(0.1)  # poll interval of the deadline loop


def client_for(services: dict[str, ServiceProcess], api_key: str = "dev-key") -> Client:
    """An ocrstream client of these running services (ingest and status API on their own ports)."""
    return Client(ingest_url=services["ingest"].probe_url, status_url=services["status_api"].probe_url, api_key=api_key)
