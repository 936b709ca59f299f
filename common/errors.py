"""One root for our errors; Kafka errors are sorted here, once, into retriable / abort / fatal."""
from enum import Enum

from confluent_kafka import KafkaError, KafkaException


class OcrstreamError(Exception):
    """Root of ocrstream's own errors."""


class FatalError(OcrstreamError):
    """The process cannot go on (fenced producer, fatal client error); exit and let the supervisor restart it."""


class DeliveryFailed(OcrstreamError):
    """Records were not acknowledged by the broker in time; nothing may be reported as accepted."""


class KafkaErrorKind(Enum):
    RETRIABLE = "retriable"  # try the same operation again
    ABORT = "abort"  # abort the transaction, rewind the consumer, begin again
    FATAL = "fatal"  # the client is unusable (e.g. fenced by a newer instance)


def classify_kafka_error(exc: KafkaException) -> KafkaErrorKind:
    error: KafkaError = exc.args[0]
    if error.fatal():
        return KafkaErrorKind.FATAL
    if error.txn_requires_abort():
        return KafkaErrorKind.ABORT
    if error.retriable():
        return KafkaErrorKind.RETRIABLE
    # Non-retriable, non-fatal errors inside a transaction leave it in doubt: aborting is always safe.
    return KafkaErrorKind.ABORT
