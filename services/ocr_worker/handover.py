"""Handing the rest of a chunk over to a worker that has run out of work.

A chunk's partition decides its worker, so at a batch's end one worker can sit idle while another still works
through its last chunk (two workers of a 240-file Tesseract batch ended 0.2-1.8 s apart, in runs of 22 s). So:
- A worker with nothing in hand or held, its partitions read to their ends, says so in the group's offsets: it
  commits its positions with the metadata "idle:" and its partitions (its next chunk's transaction overwrites
  that on the chunk's partition, and with it the claim for all of them).
- A worker about to start a file of a chunk that has two or more still to start looks for a worker whose
  partitions all still carry its claim and hold nothing past it: a view refreshed from a thread while it is
  wanted, by a consumer of the group's that never joins it (committed offsets and their metadata, then the
  claimed partitions' ends). If it finds one, it ends the chunk there: one transaction holds its results so far,
  the files not started as two chunk records (half to its own partition, half to the idle worker's) and the
  consumed offset. Exactly once, like any chunk.
The view needs no admin client: coordinator requests of librdkafka's admin API abort the process when a
connection drops under them (librdkafka issue 4605), and a worker rides out broker outages.
"""
import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger(__name__)

IDLE = "idle:"  # offset commit metadata: "idle:" and the partitions of a worker that has nothing to do
PARTITIONS_FOR_S = 5.0


def idle_claim(partitions: Iterable[int]) -> str:
    return IDLE + ",".join(str(p) for p in sorted(partitions))


def _claimed(metadata: str) -> frozenset[int]:
    try:
        return frozenset(int(p) for p in metadata.removeprefix(IDLE).split(","))
    except ValueError:
        return frozenset()


class IdleWorkers:
    """The partitions of each idle worker, as a view of the group's offsets last saw them."""

    def __init__(self, consumer: Consumer, topic: str, every_s: float, *, timeout_s: float = 2.0) -> None:
        self._consumer, self._topic = consumer, topic  # in the workers' group, never joining it; read_uncommitted
        self._every_s, self._timeout_s = every_s, timeout_s
        self._lock = threading.Lock()
        self._idle: list[frozenset[int]] = []
        self._committed: dict[int, int] = {}
        self._taken: dict[int, int] = {}  # partition handed to → its committed offset then
        self._wanted_until = 0.0
        self._refreshed_at = float("-inf")
        self._partitions: list[int] = []
        self._partitions_at = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-workers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout_s * 3)
        self._consumer.close()

    def partition_for_the_rest(self, mine: set[int]) -> int | None:
        """A partition of another worker that is idle, or None. Each call keeps the view fresh a while longer."""
        self._wanted_until = time.monotonic() + 2 * self._every_s
        with self._lock:
            if time.monotonic() - self._refreshed_at > 2 * self._every_s:
                return None  # not looked at lately: the workers it saw idle may have had work since
            for partitions in self._idle:
                # Handed work already, and not back to idle since: not idle.
                handed = partitions & self._taken.keys()
                if partitions & mine or any(self._committed[p] <= self._taken[p] for p in handed):
                    continue
                return min(partitions)
        return None

    def handed_over(self, partition: int) -> None:
        with self._lock:
            self._taken[partition] = self._committed.get(partition, -1)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            if time.monotonic() < self._wanted_until:
                try:
                    self._refresh()
                except Exception as exc:  # any: no view only means no handover, the chunks run where they are
                    log.debug("group view not refreshed", extra={"error": str(exc)})

    def _refresh(self) -> None:
        t = self._timeout_s
        committed = {tp.partition: tp for tp in self._consumer.committed(
            [TopicPartition(self._topic, p) for p in self._all_partitions()], timeout=t)}
        claims = {tp.metadata for tp in committed.values() if tp.metadata and tp.metadata.startswith(IDLE)}
        idle = []
        for claim in claims:
            partitions = _claimed(claim)
            if partitions and all(p in committed and committed[p].metadata == claim and
                                  committed[p].offset >= self._end(p) for p in partitions):
                idle.append(partitions)
        with self._lock:
            self._idle, self._refreshed_at = idle, time.monotonic()
            self._committed = {p: tp.offset for p, tp in committed.items()}

    def _end(self, partition: int) -> int:
        return self._consumer.get_watermark_offsets(TopicPartition(self._topic, partition), timeout=self._timeout_s)[1]

    def _all_partitions(self) -> list[int]:
        """The topic's partitions, looked up again every few seconds (partitions can be added)."""
        if time.monotonic() - self._partitions_at > PARTITIONS_FOR_S:
            topic = self._consumer.list_topics(self._topic, timeout=self._timeout_s).topics[self._topic]
            self._partitions, self._partitions_at = sorted(topic.partitions), time.monotonic()
        return self._partitions
