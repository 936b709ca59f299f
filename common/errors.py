"""Every error of ours, sorted once: retriable (may pass: try again), final for one file, or fatal.

Pure: no client library is imported here. The Kafka client's errors are sorted beside the Kafka code
(common/kafka.py `classify_kafka_error`), Postgres's beside the persister's SQL.
"""
from schemas.results import FailureReason


class OcrstreamError(Exception):
    """Root of ocrstream's own errors."""


class RetriableError(OcrstreamError):
    """A dependency is away or slow (broker, object store, database): wait, then try the same work again."""


class DeliveryFailed(RetriableError):
    """Records were not acknowledged by the broker in time; nothing may be reported as accepted."""


class FileFailed(OcrstreamError):
    """Final for this one file: it ends `failed` with this reason, and the other files of its chunk go on."""

    code: FailureReason = FailureReason.UNDECODABLE

    def __init__(self, reason: str, code: FailureReason | None = None) -> None:
        super().__init__(reason)
        if code is not None:
            self.code = code


class FatalError(OcrstreamError):
    """The process cannot go on (a setting is wrong, a client is unusable); exit and let the supervisor restart it."""
