"""What the single-service benchmarks share: a run's own topics and schema on the dev stack, and one status API
process on a free port."""
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.db import apply_migrations
from common.kafka import ensure_topics
from common.settings import Settings
from demo.processes import ServiceProcess, free_port, isolated_env
from deploy.devstack import StackSettings, stack_endpoints, start_stack, stop_stack


@contextmanager
def bench_run() -> Iterator[tuple[str, dict[str, str], Settings]]:
    """(run id, env, settings): topics and DB schema of the run's own, on the dev stack (started if it was not
    running, and then stopped again: only what this run started)."""
    stack = StackSettings()
    started_stack = start_stack(stack)
    run = uuid.uuid4().hex[:8]
    try:
        env = isolated_env(stack_endpoints(stack), f"bench{run}")
        os.environ.update(env)
        settings = Settings()
        ensure_topics(settings)
        apply_migrations(settings)
        yield run, env, settings
    finally:
        stop_stack(stack, started_stack)


@contextmanager
def status_api_process(env: dict[str, str], name: str) -> Iterator[tuple[ServiceProcess, int]]:
    """One status API process on 127.0.0.1, ready; (the process, its port). Stopped afterwards."""
    port = free_port()
    service = ServiceProcess("status_api", "services.status_api", env | {"OCRSTREAM_HTTP_PORT": str(port)},
                             f"http://127.0.0.1:{port}", Path(tempfile.mkdtemp(prefix=f"ocrstream-bench-{name}-")))
    service.start()
    try:
        service.wait_ready()
        yield service, port
    finally:
        service.stop()
