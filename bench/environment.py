"""What the benchmarks share: a run's own topics, bucket and DB schema on the dev stack (removed afterwards), and
one status API process on a free port."""
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from minio.deleteobjects import DeleteObject
from psycopg import sql

from common.db import apply_migrations
from common.kafka import TOPIC_CONFIGS, build_admin, ensure_topics
from common.settings import Settings
from common.storage import build_s3_client, ensure_bucket
from demo.processes import ServiceProcess, free_port, isolated_env
from deploy.devstack import StackSettings, stack_endpoints, start_stack, stop_stack


@contextmanager
def own_env(endpoints: dict[str, str], *, partitions: int = 3, **extra: str) -> Iterator[dict[str, str]]:
    """OCRSTREAM_* variables of a run of its own, plus `extra` (also put into os.environ, for Settings()): its
    topics, bucket and DB schema are created, and removed afterwards. A long-lived dev stack kept every run's
    otherwise: after many `make bench` runs its broker held 1,950 topics (8,400 partitions), and the broker's
    scheduler and metadata requests walk them all."""
    env = isolated_env(endpoints, f"bench{uuid.uuid4().hex[:8]}", partitions=partitions) | extra
    os.environ.update(env)
    settings = Settings()
    ensure_topics(settings)
    ensure_bucket(build_s3_client(settings), settings.s3_bucket)
    apply_migrations(settings)
    try:
        yield env
    finally:
        _remove_run_data(settings)


def _remove_run_data(settings: Settings) -> None:
    admin = build_admin(settings)  # held: a client collected while its futures wait destroys them
    for future in admin.delete_topics([settings.topic(t) for t in TOPIC_CONFIGS], operation_timeout=30).values():
        future.result(30)
    s3, bucket = build_s3_client(settings), settings.s3_bucket
    # Round after round: the JuiceFS gateway lists a directory emptied by the last round as an object of its own,
    # which only a single DELETE removes (a multi-object delete answers no error and leaves it).
    while names := [o.object_name for o in s3.list_objects(bucket, recursive=True)]:
        files = [name for name in names if not name.endswith("/")]
        if not files:  # only directories left
            for directory in names:
                s3.remove_object(bucket, directory)
        elif errors := list(s3.remove_objects(bucket, map(DeleteObject, files))):  # lazy: deletes when iterated
            raise RuntimeError(f"bench bucket {bucket} not emptied: {errors[:3]}")
    s3.remove_bucket(bucket)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.database_schema)))


@contextmanager
def bench_run() -> Iterator[tuple[str, dict[str, str], Settings]]:
    """(run id, env, settings): topics, bucket and DB schema of the run's own, on the dev stack (started if it was
    not running, and then stopped again: only what this run started)."""
    stack = StackSettings()
    started_stack = start_stack(stack)
    try:
        with own_env(stack_endpoints(stack)) as env:
            yield uuid.uuid4().hex[:8], env, Settings()
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
